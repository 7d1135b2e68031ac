"""A loaded model on a device: image <-> layer payloads <-> ``.fcb`` bytes.

Each layer's payload is one constriction range-coder stream (little-endian 32-bit words):
the hyper-latent z, channel by channel, then y slice by slice with symbols grouped by
scale table.  The decoder derives every shape from the image size in the container.

Portability: everything that decides what the range decoder reads is computed in integer
arithmetic (:mod:`fusioncodec.nets.exact`), so a file decodes to the same latent on every
device, thread count and kernel library.  Only the synthesis transform is floating point:
pixels may differ by a grey level between devices; see docs/FORMAT.md.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from fusioncodec.container import LAYER_KINDS, Container, Layer
from fusioncodec.errors import ArgumentError, FormatError
from fusioncodec.image import (
    padded,
    pixel_reader,
    pixel_writer,
    to_rgb_array,
    upright_srgb,
)
from fusioncodec.nets import STRIDE, ScalableCodec
from fusioncodec.nets.tiling import for_tiles, run_tiled
from fusioncodec.payload import decode_payload, encode_payload, layer_binding
from fusioncodec.sources import (
    FcbSource,
    ImageSource,
    check_size,
    default_layer,
    read_fcb,
    read_image,
)
from fusioncodec.weights import LoadedModel, WeightsError, load

DEFAULT_QUALITY = 4.0
Y_STRIDE = STRIDE // 4  # pixels per latent (y) position
# The float transforms run in tiles of 64 x 64 latent positions (1024 px) grown by 4 on each
# side (their receptive field is under 2): a picture up to 1024 px is one call, as before.
TRANSFORM_TILE, TRANSFORM_HALO = 64, 4


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


def checked_quality(quality: float, levels: int, what: str = "quality") -> float:
    """``quality`` checked against ``1..levels`` and rounded to float32 (what a file stores)."""
    try:
        value = float(np.float32(quality))
        ok = 1 <= value <= levels
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ArgumentError(f"{what} must be between 1 and {levels}, got {quality!r}")
    return value


def level_position(quality: float, device: torch.device) -> torch.Tensor:
    """The gain units' level position of a checked float32 ``quality`` (1 -> 0)."""
    return torch.tensor([quality - 1.0], dtype=torch.float32, device=device)


def _as_layout(x: torch.Tensor) -> torch.Tensor:
    """Image-sized tensors in channels_last: the float transforms run ~1.5x faster so."""
    return x.contiguous(memory_format=torch.channels_last)


def latent_grid(width: int, height: int) -> tuple[int, int]:
    """Rows and columns of latent (y) positions of a picture of this size."""
    return padded(height) // Y_STRIDE, padded(width) // Y_STRIDE


def analyze(
    network: torch.nn.Module,
    pixels: np.ndarray,
    device: torch.device,
    y_machine: torch.Tensor | None = None,
) -> torch.Tensor:
    """An analysis transform over a picture (HxWx3 uint8), tile by tile; with ``y_machine``
    the network takes (pixels, machine latent) as the additional layer's analysis does."""
    read = pixel_reader(pixels, device, Y_STRIDE)
    grid = latent_grid(pixels.shape[1], pixels.shape[0])
    if y_machine is None:
        return run_tiled(network, read, grid, TRANSFORM_TILE, TRANSFORM_HALO)
    return run_tiled(
        lambda t: network(*t),
        lambda r0, r1, c0, c1: (read(r0, r1, c0, c1), y_machine[..., r0:r1, c0:c1]),
        grid,
        TRANSFORM_TILE,
        TRANSFORM_HALO,
    )


def synthesize(network: torch.nn.Module, y: torch.Tensor, width: int, height: int) -> Image.Image:
    """A synthesis transform over a latent, tile by tile, into an 8-bit RGB picture."""
    out = Image.new("RGB", (width, height))
    for_tiles(
        network,
        lambda r0, r1, c0, c1: _as_layout(y[..., r0:r1, c0:c1]),
        tuple(y.shape[-2:]),
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


class Codec(ModelOnDevice):
    """The scalable two-layer codec: ``encode`` an image, ``decode`` either layer."""

    KIND, WHAT = "scalable", "a scalable codec"
    model: ScalableCodec

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def identity(self) -> bytes:
        return self.loaded.identity

    def _quality(self, quality: float, what: str = "quality") -> float:
        return checked_quality(quality, self.levels, what)

    def _q(self, quality: float) -> torch.Tensor:
        return level_position(quality, self.device)

    @torch.no_grad()
    def encode(
        self,
        image: ImageSource,
        layers: Sequence[str] = LAYER_KINDS,
        quality: float = DEFAULT_QUALITY,
        human_quality: float | None = None,
    ) -> bytes:
        """Code ``image`` into ``.fcb`` bytes.

        ``image``: a PIL image, a path, encoded image bytes or a binary file (any mode and
        size up to 100 MP; EXIF orientation and ICC colours applied).  ``layers``:
        ``("machine",)`` or ``("machine", "human")``.  ``quality`` (machine layer) and
        ``human_quality`` (default: ``quality``) are continuous in ``1..8``; higher is
        better and larger.  Raises :class:`ArgumentError` for an argument out of range
        (before any work) and :class:`ImageError` for a picture Pillow cannot read.  Given
        a path, bytes or a file rather than a PIL image, the codec frees the decoded picture
        as soon as it has its pixels (100 MP: 0.4 GB less at the peak).
        """
        if isinstance(layers, str | list):  # anything else but a tuple is refused below
            layers = (layers,) if isinstance(layers, str) else tuple(layers)
        if layers not in (("machine",), ("machine", "human")):
            raise ArgumentError(
                f"layers must be ('machine',) or ('machine', 'human'), got {layers!r}"
            )
        human_quality = quality if human_quality is None else human_quality
        # The file stores qualities as float32: use exactly those values on both sides.
        quality = self._quality(quality)
        human_quality = self._quality(human_quality, "human_quality")
        q_machine, q_human = self._q(quality), self._q(human_quality)
        image = read_image(image)
        check_size(*image.size)
        image = upright_srgb(image)
        width, height = image.size
        m = self.model.config.m
        pixels = to_rgb_array(image)
        del image
        machine, y_machine = encode_payload(
            self.model.machine.latent,
            analyze(self.model.machine.g_a, pixels, self.device),
            q_machine,
            binding=layer_binding("machine", quality, width, height, m),
        )
        coded = [Layer("machine", quality, machine)]
        if "human" in layers:
            additional = self.model.additional
            y_add = analyze(additional.analyze, pixels, self.device, y_machine)
            del pixels  # not needed any more: its memory goes to the human layer's coding
            binding = layer_binding("human", human_quality, width, height, m, machine)
            payload, _ = encode_payload(
                additional.latent, y_add, q_human, additional.context(y_machine), binding
            )
            coded.append(Layer("human", human_quality, payload))
        return Container(
            width, height, self.name, self.identity, self.model.config.m, tuple(coded)
        ).to_bytes()

    def parse(self, data: bytes) -> Container:
        """Parse and verify a file for this model (format, CRCs, model identity)."""
        return self.check(Container.from_bytes(data))

    def check(self, container: Container) -> Container:
        """Refuse a container made with other weights (identity hash or m differ)."""
        container.check_model(self.identity, self.name)
        if container.m != self.model.config.m:
            raise FormatError(f"file has m={container.m}, model has m={self.model.config.m}")
        return container

    @torch.no_grad()
    def decode_latent(self, container: Container, layer: str) -> torch.Tensor:
        """The decoded latent that feeds a synthesis transform (fused for the human layer).

        Everything the file says is checked before any decoding work: size, layers and
        each needed layer's quality.
        """
        if layer not in LAYER_KINDS:
            raise ArgumentError(f"layer must be one of {LAYER_KINDS}, got {layer!r}")
        try:
            check_size(container.width, container.height)
        except ArgumentError as exc:
            raise FormatError(f"cannot decode this file: {exc}") from None
        z_shape = (padded(container.height) // STRIDE, padded(container.width) // STRIDE)
        needed = [container.layer(kind) for kind in LAYER_KINDS[: LAYER_KINDS.index(layer) + 1]]
        for coded in needed:
            if not 1 <= coded.quality <= self.levels:
                raise FormatError(
                    f"the file's {coded.kind} layer has quality {coded.quality:g}, outside "
                    f"this model's 1..{self.levels}"
                )
        machine = needed[0]
        size = (container.width, container.height, container.m)
        y_machine = decode_payload(
            self.model.machine.latent,
            machine.payload,
            z_shape,
            self._q(machine.quality),
            self.device,
            binding=layer_binding("machine", machine.quality, *size),
        )
        if layer == "machine":
            return y_machine
        y_add = decode_payload(
            self.model.additional.latent,
            needed[1].payload,
            z_shape,
            self._q(needed[1].quality),
            self.device,
            self.model.additional.context(y_machine),
            layer_binding("human", needed[1].quality, *size, machine.payload),
        )
        return self.model.human.fusion.fuse_(y_machine, y_add)

    @torch.no_grad()
    def decode(self, data: FcbSource, layer: str | None = None) -> Image.Image:
        """Decode a layer of an ``.fcb`` file (bytes, path, binary file or
        :class:`Container`) into an 8-bit sRGB image of the coded size: ``"machine"``,
        ``"human"``, or None for the best the file holds (human when present).

        Raises :class:`FormatError` for a damaged, unsupported or foreign file (made with
        other weights) or one without the layer asked for, :class:`ArgumentError` for a bad
        ``layer``.
        """
        if layer is not None and layer not in LAYER_KINDS:
            raise ArgumentError(f"layer must be one of {LAYER_KINDS} or None, got {layer!r}")
        data = read_fcb(data)
        container = self.check(data) if isinstance(data, Container) else self.parse(data)
        layer = layer or default_layer(container.kinds)
        y = self.decode_latent(container, layer)
        synthesis = self.model.machine.g_s if layer == "machine" else self.model.human.g_s
        return synthesize(synthesis, y, container.width, container.height)


class SingleLayerRunner(ModelOnDevice):
    """Real coding with a single-layer model (the baseline LIC): image <-> one payload.

    Used to measure the "standard LIC" the two-layer codec is compared with; its payloads
    are not wrapped in ``.fcb`` files.
    """

    KIND, WHAT = "baseline", "a baseline (single-layer)"

    @torch.no_grad()
    def encode(self, image: Image.Image, quality: float) -> bytes:
        q = level_position(checked_quality(quality, self.levels), self.device)
        check_size(*image.size)
        pixels = to_rgb_array(upright_srgb(image))
        payload, _ = encode_payload(
            self.model.latent, analyze(self.model.g_a, pixels, self.device), q
        )
        return payload

    @torch.no_grad()
    def decode(self, payload: bytes, width: int, height: int, quality: float) -> Image.Image:
        q = level_position(checked_quality(quality, self.levels), self.device)
        check_size(width, height)
        z_shape = (padded(height) // STRIDE, padded(width) // STRIDE)
        y = decode_payload(self.model.latent, payload, z_shape, q, self.device)
        return synthesize(self.model.g_s, y, width, height)
