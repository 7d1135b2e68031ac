"""Training precision: the image transforms under bf16 autocast, everything else in fp32.

Under ``bf16`` the analysis and synthesis transforms (GDN included) run under
``torch.autocast(dtype=torch.bfloat16)`` on channels-last tensors; the latent codecs (gain
units, hyperprior, the integer entropy networks' float twins, entropy models) run in float32
whatever the autocast (:class:`~fusioncodec.nets.latent_codec.LatentCodec`), and the losses are
formed in float32. bf16 pays only where the CPU computes it natively (avx512_bf16 or AMX):
elsewhere oneDNN emulates it and a step is several times slower, so the default follows the
hardware. On CUDA the default stays fp32 (TF32 convolutions) until bf16 is measured there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fusioncodec.train.recipe import PRECISIONS


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 convolutions natively (CPU: avx512_bf16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def default_precision(device: torch.device) -> str:
    """``bf16`` on a CPU with native bf16, else ``fp32``."""
    return "bf16" if device.type == "cpu" and native_bf16(device) else "fp32"


def resolve_precision(choice: str, device: torch.device) -> str:
    """``auto`` -> :func:`default_precision`; ``fp32``/``bf16`` as given."""
    if choice == "auto":
        return default_precision(device)
    if choice not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {choice!r}")
    return choice


@contextlib.contextmanager
def transforms_precision(device: torch.device, precision: str) -> Iterator[None]:
    """The autocast that the training step's transforms run under (none for ``fp32``)."""
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
