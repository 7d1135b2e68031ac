"""The torch runtime: a loaded model on a device (CPU or CUDA) runs the float transforms of
the two-layer codec (:class:`fusioncodec.scalable.TwoLayerCodec`) and of the single-layer
baseline; the latents are coded through :mod:`fusioncodec.exact` as in every runtime.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from fusioncodec.errors import ArgumentError
from fusioncodec.exact.latent import HyperAnalysis, LatentModel
from fusioncodec.image import pixel_reader, pixel_writer, to_rgb_array, upright_srgb
from fusioncodec.nets import ScalableCodec
from fusioncodec.nets.config import checked_quality
from fusioncodec.nets.latent_codec import LatentCodec
from fusioncodec.payload import decode_payload, encode_payload
from fusioncodec.scalable import (
    DEFAULT_QUALITY,
    TRANSFORM_HALO,
    TRANSFORM_TILE,
    Y_STRIDE,
    TwoLayerCodec,
    latent_grid,
    z_grid,
)
from fusioncodec.sources import check_size
from fusioncodec.tiling import for_tiles, run_tiled
from fusioncodec.weight_file import reads_of
from fusioncodec.weights import LoadedModel, WeightsError, load

__all__ = ["DEFAULT_QUALITY", "Codec", "SingleLayerRunner", "latent_grid"]

MMAP_THRESHOLD = 4 << 20  # bytes; see return_freed_memory


def return_freed_memory() -> None:
    """Let glibc give blocks of 4 MiB and more back to the system when they are freed.

    Its default threshold grows to 32 MiB as large blocks are freed, after which the
    band-sized temporaries of coding stay in the heap: a 4096 x 4096 encode then peaks at
    1.8 GB instead of 1.3 GB. An explicit ``GLIBC_TUNABLES`` mmap threshold (as ``fcodec
    train`` sets for speed) is left alone; elsewhere than glibc this does nothing.
    """
    if "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ArgumentError(f"device must be 'cpu', 'cuda' or 'auto', got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ArgumentError(f"unknown device {device!r} (use cpu, cuda or auto)")
    if device == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("device 'cuda' asked for, but torch sees no CUDA device")
    return torch.device(device)


def level_position(quality: float, device: torch.device) -> torch.Tensor:
    """The gain units' level position of a checked float32 ``quality`` (1 -> 0)."""
    return torch.tensor([quality - 1.0], dtype=torch.float32, device=device)


def _as_layout(x: torch.Tensor) -> torch.Tensor:
    """Image-sized tensors in channels_last: the float transforms run ~1.5x faster so."""
    return x.contiguous(memory_format=torch.channels_last)


def analyze(
    network: torch.nn.Module,
    pixels: np.ndarray,
    device: torch.device,
    y_machine: np.ndarray | None = None,
) -> np.ndarray:
    """An analysis transform over a picture (HxWx3 uint8), tile by tile; with ``y_machine``
    the network takes (pixels, machine latent) as the additional layer's analysis does."""
    read = pixel_reader(pixels, Y_STRIDE)

    def on_device(r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        return _as_layout(torch.from_numpy(read(r0, r1, c0, c1)).to(device))

    def run(t: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
        return (network(*t) if isinstance(t, tuple) else network(t)).cpu().numpy()

    grid = latent_grid(pixels.shape[1], pixels.shape[0])
    if y_machine is None:
        return run_tiled(run, on_device, grid, TRANSFORM_TILE, TRANSFORM_HALO)
    return run_tiled(
        run,
        lambda r0, r1, c0, c1: (
            on_device(r0, r1, c0, c1),
            torch.from_numpy(y_machine[..., r0:r1, c0:c1]).to(device),
        ),
        grid,
        TRANSFORM_TILE,
        TRANSFORM_HALO,
    )


def synthesize(
    network: Callable[..., torch.Tensor],
    latents: Sequence[np.ndarray],
    width: int,
    height: int,
    device: torch.device,
) -> Image.Image:
    """A synthesis transform over latents of the same grid (its arguments), tile by tile,
    into an 8-bit RGB picture."""

    def read(r0: int, r1: int, c0: int, c1: int) -> list[torch.Tensor]:
        return [_as_layout(torch.from_numpy(y[..., r0:r1, c0:c1]).to(device)) for y in latents]

    out = Image.new("RGB", (width, height))
    for_tiles(
        lambda tiles: network(*tiles).cpu().numpy(),
        read,
        tuple(latents[0].shape[-2:]),
        TRANSFORM_TILE,
        TRANSFORM_HALO,
        pixel_writer(out, Y_STRIDE),
        scale_out=Y_STRIDE,
    )
    return out


R = TypeVar("R", bound="ModelOnDevice")


class ModelOnDevice:
    """Loaded weights of one kind (``KIND``) in evaluation mode on a device: what every
    runner of a model starts from."""

    KIND = ""
    WHAT = ""  # the kind as the error names it

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "auto") -> None:
        if loaded.kind != self.KIND:
            raise WeightsError(f"{loaded.name} is a {loaded.kind} model, not {self.WHAT}")
        self.loaded = loaded
        self.device = resolve_device(device)
        return_freed_memory()
        self.model = loaded.model.to(self.device).eval()
        self.model.to(memory_format=torch.channels_last)
        self.levels = loaded.config.levels

    @classmethod
    def from_file(cls: type[R], path: Path | str | None = None, device: str = "auto") -> R:
        """The weights at ``path`` (default: the shipped ones of this kind) on ``device``."""
        return cls(load(path, cls.KIND), device)


class Codec(ModelOnDevice, TwoLayerCodec):
    """The scalable two-layer codec on torch: ``encode`` an image, ``decode`` either layer
    (:class:`fusioncodec.scalable.TwoLayerCodec`); CPU or CUDA."""

    KIND, WHAT = "scalable", "a scalable codec"
    backend = "torch"
    model: ScalableCodec

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.loaded.name

    @property
    def identity(self) -> bytes:  # type: ignore[override]
        return self.loaded.identity

    @cached_property
    def reads(self) -> frozenset[bytes]:  # type: ignore[override]
        return reads_of(self.loaded.card)

    @cached_property
    def machine_reads(self) -> frozenset[bytes]:  # type: ignore[override]
        return reads_of(self.loaded.card, "machine_reads")

    @property
    def config(self):  # type: ignore[override]  # noqa: ANN201
        return self.model.config

    def _latent(self, layer: str) -> LatentCodec:
        return self.model.machine.latent if layer == "machine" else self.model.additional.latent

    @torch.no_grad()
    def analysis(self, pixels: np.ndarray, y_machine: np.ndarray | None = None) -> np.ndarray:
        if y_machine is None:
            return analyze(self.model.machine.g_a, pixels, self.device)
        return analyze(self.model.additional.analyze, pixels, self.device, y_machine)

    def hyper_analysis(self, layer: str) -> HyperAnalysis:
        return host_hyper_analysis(self._latent(layer), self.device)

    def coder(self, layer: str) -> LatentModel:
        return self._latent(layer).coder()

    def gain(self, layer: str, position: float) -> np.ndarray:
        return host_gain(self._latent(layer), position, self.device)

    @torch.no_grad()
    def synthesis(
        self, y_machine: np.ndarray, y_add: np.ndarray | None, width: int, height: int
    ) -> Image.Image:
        if y_add is None:
            return synthesize(self.model.machine.g_s, [y_machine], width, height, self.device)
        return synthesize(self.model.human, [y_machine, y_add], width, height, self.device)


def host_hyper_analysis(latent: LatentCodec, device: torch.device) -> HyperAnalysis:
    """A latent codec's hyper-analysis on ``device``, numpy in and out."""

    @torch.no_grad()
    def run(scaled: np.ndarray) -> np.ndarray:
        return latent.hyper_analysis(torch.from_numpy(scaled).to(device)).cpu().numpy()

    return run


@torch.no_grad()
def host_gain(latent: LatentCodec, position: float, device: torch.device) -> np.ndarray:
    """A latent codec's encoder gain at a level position (torch's float32 ``exp``, as files
    were always coded), per channel."""
    q = torch.tensor([position], dtype=torch.float32, device=device)
    return latent.encoder_gain(q).cpu().numpy().ravel()


class SingleLayerRunner(ModelOnDevice):
    """Real coding with a single-layer model (the baseline LIC): image <-> one payload.

    Used to measure the "standard LIC" the two-layer codec is compared with; its payloads
    are not wrapped in ``.fcb`` files.
    """

    KIND, WHAT = "baseline", "a baseline (single-layer)"

    @torch.no_grad()
    def encode(self, image: Image.Image, quality: float) -> bytes:
        position = checked_quality(quality, self.levels) - 1.0
        check_size(*image.size)
        pixels = to_rgb_array(upright_srgb(image))
        latent = self.model.latent
        payload, _ = encode_payload(
            latent.coder(),
            analyze(self.model.g_a, pixels, self.device),
            position,
            host_hyper_analysis(latent, self.device),
            gain=host_gain(latent, position, self.device),
        )
        return payload

    @torch.no_grad()
    def decode(self, payload: bytes, width: int, height: int, quality: float) -> Image.Image:
        position = checked_quality(quality, self.levels) - 1.0
        check_size(width, height)
        y = decode_payload(self.model.latent.coder(), payload, z_grid(width, height), position)
        return synthesize(self.model.g_s, [y], width, height, self.device)
