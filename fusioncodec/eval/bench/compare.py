"""What fusioncodec is compared with: the bits its entropy models estimate (rate overhead of
the coded layers) and CompressAI's mbt2018-mean on the same picture and device."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusioncodec.eval.bench.options import (
    COMPRESSAI_M,
    COMPRESSAI_MODEL,
    COMPRESSAI_N,
    COMPRESSAI_NOTE,
    WARM_PHASES,
    BenchError,
)
from fusioncodec.eval.bench.probes import finite, peak_memory, speed, timed
from fusioncodec.messages import error_reason
from fusioncodec.metrics import bpp

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from fusioncodec.codec import Codec


def _bits(likelihoods: dict[str, torch.Tensor]) -> float:
    import torch

    return float(sum(-torch.log2(lik).sum() for lik in likelihoods.values()))


def estimated_bits(codec: Codec, image: Image.Image, quality: float) -> dict[str, float]:
    """Bits the entropy models predict (eval mode: likelihoods of the rounded symbols)."""
    import torch

    from fusioncodec.codec import level_position
    from fusioncodec.image import to_tensor
    from fusioncodec.nets.config import checked_quality

    q = level_position(checked_quality(quality, codec.levels), codec.device)
    with torch.no_grad():  # the two-layer forward pass of training, here in eval mode
        out = codec.model(to_tensor(image, codec.device), q, q)
    return {
        "machine": _bits(out["machine"]["likelihoods"]),
        "human": _bits(out["human_likelihoods"]),
    }


def rate_report(codec: Codec, image: Image.Image, data: bytes, quality: float) -> dict[str, Any]:
    from fusioncodec.container import Container

    container = Container.from_bytes(data)
    pixels = container.width * container.height
    est = estimated_bits(codec, image, quality)
    out: dict[str, Any] = {}
    for kind in ("machine", "human"):
        coded = 8 * len(container.layer(kind).payload)
        out[kind] = {
            "coded_bits": coded,
            "estimated_bits": finite(est[kind], 1),
            "overhead_percent": finite(100 * (coded / est[kind] - 1), 3) if est[kind] else None,
            "bpp": finite(coded / pixels),
        }
    out["header_bytes"] = container.header_size
    out["file_bytes"] = len(data)
    out["bpp"] = finite(bpp(len(data), pixels))
    return out


# --------------------------------------------------------------------------- compressai


def load_compressai_state(path: Path) -> dict[str, Any]:
    """A CompressAI state dict from a ``.pth``/``.pth.tar``/``.safetensors`` file."""
    import torch

    if not path.is_file():
        raise BenchError(f"compressai weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load and safetensors raise many types
        raise BenchError(f"{path}: cannot read compressai weights ({error_reason(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "g_a.0.weight" not in state:
        raise BenchError(f"{path}: not a MeanScaleHyperprior state dict (no g_a.0.weight)")
    return state


def compressai_net(state: dict[str, Any] | None, source: str) -> Any:
    """MeanScaleHyperprior from a state dict, or seeded random init; raises BenchError."""
    import torch

    from fusioncodec._torchvision import ensure_torchvision

    ensure_torchvision()
    from compressai.models import MeanScaleHyperprior

    if state is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return MeanScaleHyperprior(COMPRESSAI_N, COMPRESSAI_M)
    try:
        from compressai.zoo.pretrained import load_pretrained

        return MeanScaleHyperprior.from_state_dict(load_pretrained(dict(state)))
    except Exception as exc:  # noqa: BLE001 - key/shape mismatches
        reason = f"missing key {exc.args[0]}" if isinstance(exc, KeyError) else error_reason(exc)
        raise BenchError(f"{source}: does not fit MeanScaleHyperprior ({reason})") from None


def bench_compressai(
    x: torch.Tensor,
    pixels: int,
    device: torch.device,
    repeat: int,
    state: dict[str, Any] | None,
    source: str | None,
) -> dict[str, Any]:
    """Time ``compress``/``decompress`` of mbt2018-mean on the padded image ``x``.

    Returns ``{"skipped": reason}`` when CompressAI or its C++ rANS coder does not work.
    """
    import torch

    try:
        from fusioncodec._torchvision import ensure_torchvision

        ensure_torchvision()  # compressai imports torchvision, broken on some torch builds
        import compressai

        version = compressai.__version__
        net = compressai_net(state, source or "compressai weights")
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any import problem means "not available"
        return {"skipped": f"compressai is not importable ({error_reason(exc)})"}
    out: dict[str, Any] = {
        "model": COMPRESSAI_MODEL,
        "class": "MeanScaleHyperprior",
        "version": version,
        "N": int(getattr(net, "N", COMPRESSAI_N)),
        "M": int(getattr(net, "M", COMPRESSAI_M)),
        "weights": str(source) if state is not None else "random-init",
    }
    try:
        net = net.to(device).eval()
        net.update(force=True)
        with torch.no_grad():
            coded = net.compress(x)
            shape = coded["shape"]
            strings = coded["strings"]

            def encode() -> None:
                net.compress(x)

            def decode() -> None:
                net.decompress(strings, shape)

            timings = {}
            for name, fn in (("encode", encode), ("decode", decode)):
                mem: dict[str, Any] = {}
                with peak_memory(device, mem):
                    seconds = timed(fn, repeat, device)
                timings[name] = {**speed(seconds, pixels), **mem}
    except Exception as exc:  # noqa: BLE001 - the rANS extension may be missing or fail
        return {**out, "skipped": f"compressai coding failed ({error_reason(exc)})"}
    n_bytes = sum(len(s) for group in strings for s in group)
    out.update(timings)
    out["coded_bytes"] = n_bytes
    out["bpp"] = finite(bpp(n_bytes, pixels))
    if state is None:
        out["note"] = COMPRESSAI_NOTE
    return out


def ratios(warm: dict[str, Any], compressai: dict[str, Any]) -> dict[str, float | None]:
    """fusioncodec seconds / compressai seconds, per warm phase (above 1: fusioncodec slower)."""
    out = {}
    for phase in WARM_PHASES:
        ref = compressai["encode" if phase.startswith("encode") else "decode"]["seconds"]
        ours = warm[phase]["seconds"]
        out[phase] = finite(ours / ref, 4) if ref and ours is not None else None
    return out
