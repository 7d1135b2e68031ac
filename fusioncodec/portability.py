"""Numerical settings a decoder may meet, and a recorder of what the range decoder reads.

Used by the portability tests and ``scripts/reproduce/portability_check.py``: a file must decode to
the same latent, symbol for symbol, whatever kernels, thread count, memory layout or
precision the floating-point layers run with (the entropy parameters are integer-exact).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from fusioncodec.coding import tables

if TYPE_CHECKING:
    from fusioncodec.scalable import TwoLayerCodec as Codec

SETTINGS = ("default", "onednn-off", "threads-1", "threads-2", "memory-format", "float64", "noise")


def _float_layers(model: nn.Module) -> list[nn.Module]:
    """Modules with floating-point parameters of their own (convolutions, GDN, ...)."""
    return [
        m
        for m in model.modules()
        if any(p.is_floating_point() for p in m.parameters(recurse=False))
    ]


def _to_double(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


@contextlib.contextmanager
def numeric_setting(model: nn.Module, name: str, seed: int = 0) -> Iterator[None]:
    """Run ``model``'s floating-point layers under setting ``name`` (see :data:`SETTINGS`).

    ``noise`` multiplies every float layer's output by ``1 + 1e-6 * N(0, 1)`` (seeded);
    ``float64`` runs them in double precision; ``memory-format`` swaps their weights between
    channels_last and contiguous; the others change torch's kernels.
    """
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r} (one of {', '.join(SETTINGS)})")
    with contextlib.ExitStack() as undo:  # each setting registers how it is undone
        if name == "onednn-off":
            undo.enter_context(torch.backends.mkldnn.flags(enabled=False))
        elif name.startswith("threads-"):
            undo.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(int(name.split("-")[1]))
        elif name == "memory-format":
            conv = next(p for p in model.parameters() if p.dim() == 4)
            last = conv.is_contiguous(memory_format=torch.channels_last)
            now, other = torch.channels_last, torch.contiguous_format
            if not last:
                now, other = other, now
            undo.callback(model.to, memory_format=now)
            model.to(memory_format=other)
        elif name == "float64":
            undo.callback(model.float)
            model.double()
            for m in _float_layers(model):
                undo.callback(m.register_forward_pre_hook(_to_double).remove)
        elif name == "noise":
            generator = torch.Generator().manual_seed(seed)

            def jitter(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
                noise = torch.randn(out.shape, generator=generator, dtype=torch.float64)
                return out * (1 + 1e-6 * noise.to(out.device, out.dtype))

            for m in _float_layers(model):
                undo.callback(m.register_forward_hook(jitter).remove)
        yield


class SymbolRecorder:
    """Records every table index and decoded value the range decoder produces."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.count = 0

    @contextlib.contextmanager
    def recording(self) -> Iterator[SymbolRecorder]:
        original: Callable = tables.CategoricalTables.decode

        def decode(table_set, decoder, indexes: np.ndarray) -> np.ndarray:  # noqa: ANN001
            values = original(table_set, decoder, indexes)
            self.digest.update(np.ascontiguousarray(indexes, dtype=np.int64).tobytes())
            self.digest.update(np.ascontiguousarray(values, dtype=np.int64).tobytes())
            self.count += len(values)
            return values

        tables.CategoricalTables.decode = decode
        try:
            yield self
        finally:
            tables.CategoricalTables.decode = original

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def tensor_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's exact bytes (dtype and shape included)."""
    array = np.ascontiguousarray(array)
    head = f"{array.dtype}{array.shape}".encode()
    return hashlib.sha256(head + array.tobytes()).hexdigest()


CORPUS_QUALITIES = (1.0, 2.5, 4.0, 5.5, 8.0)
_CROPS = ((200, 136), (192, 192), (256, 160), (131, 97), (320, 208), (96, 250), (160, 160))


def corpus_plan(
    images: list[tuple[str, Image.Image]], qualities: tuple[float, ...] = CORPUS_QUALITIES
) -> list[tuple[str, Image.Image, float, tuple[str, ...]]]:
    """Files to encode: a crop of each image (sizes vary, most not multiples of 64) at each
    quality; every third file is machine-only, the others carry both layers."""
    plan = []
    for i, (name, image) in enumerate(images):
        width, height = _CROPS[i % len(_CROPS)]
        crop = image.convert("RGB").crop((0, 0, min(width, image.width), min(height, image.height)))
        for j, quality in enumerate(qualities):
            layers = ("machine",) if (i + j) % 3 == 0 else ("machine", "human")
            plan.append((f"{name}-q{quality:g}", crop, quality, layers))
    return plan


def decode_record(codec: Codec, data: bytes) -> dict[str, str]:
    """Per layer in the file: the decoded latent's digest and the digest of every table
    index and symbol read, or the error the decoder raised."""
    container = codec.parse(data)
    record = {}
    for layer in [layer.kind for layer in container.layers]:
        recorder = SymbolRecorder()
        try:
            with recorder.recording():
                latent = codec.decode_latent(container, layer)
            record[layer] = f"{tensor_digest(latent)}:{recorder.hexdigest()}:{recorder.count}"
        except ValueError as exc:
            record[layer] = f"error: {exc}"
    return record
