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

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fusioncodec.coding import RangeDecoder, RangeEncoder
from fusioncodec.container import LAYER_KINDS, Container, FormatError, Layer
from fusioncodec.image import padded, to_image, to_tensor
from fusioncodec.nets import STRIDE, ScalableCodec
from fusioncodec.nets.latent import SliceLatentCodec
from fusioncodec.weights import LoadedModel, load

DEFAULT_QUALITY = 4.0
MAX_CODEC_PIXELS = 40_000_000  # the transforms hold ~300 bytes per pixel at their peak


def check_size(width: int, height: int) -> None:
    """Refuse images whose transforms would not fit in memory (before allocating)."""
    if width * height > MAX_CODEC_PIXELS:
        raise ValueError(
            f"image of {width}x{height} is too large to code in one piece "
            f"(at most {MAX_CODEC_PIXELS // 1_000_000} megapixels)"
        )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r} (use cpu, cuda or auto)")
    return torch.device(device)


def _as_layout(x: torch.Tensor) -> torch.Tensor:
    """Image-sized tensors in channels_last: the float transforms run ~1.5x faster so."""
    return x.contiguous(memory_format=torch.channels_last)


def _encode_latent(
    latent: SliceLatentCodec, y: torch.Tensor, q: torch.Tensor, context: torch.Tensor | None = None
) -> tuple[bytes, torch.Tensor]:
    encoder = RangeEncoder()
    y_hat = latent.compress(y, q, encoder, context)
    return encoder.get_compressed().astype("<u4").tobytes(), y_hat


def _decode_latent(
    latent: SliceLatentCodec,
    payload: bytes,
    z_shape: tuple[int, int],
    q: torch.Tensor,
    device: torch.device,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode one layer's payload, which must be exactly what the encoder wrote.

    The decoded symbols are range-coded again as they come: an empty, zeroed, truncated,
    extended or otherwise altered payload (even one whose CRC was recomputed) fails here
    instead of decoding to a wrong picture.
    """
    if len(payload) % 4:
        raise FormatError("corrupted layer payload (length is not a whole number of words)")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    echo = RangeEncoder()
    try:
        decoder = RangeDecoder(words)
        y = latent.decompress(decoder, z_shape, q, device, context, echo=echo, words=len(words))
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise FormatError(f"corrupted layer payload ({exc})") from None
    if not np.array_equal(echo.get_compressed(), words):
        raise FormatError(
            "corrupted layer payload (its symbols do not re-encode to it: damaged, cut short "
            "or with data appended)"
        )
    return y


class Codec:
    """The scalable two-layer codec: ``encode`` an image, ``decode`` either layer."""

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "auto") -> None:
        if loaded.kind != "scalable":
            raise ValueError(f"{loaded.name} is a {loaded.kind} model, not a scalable codec")
        self.loaded = loaded
        self.device = resolve_device(device)
        self.model: ScalableCodec = loaded.model.to(self.device).eval()
        self.model.to(memory_format=torch.channels_last)
        self.levels = loaded.config.levels

    @classmethod
    def from_file(cls, path: Path | str | None = None, device: str = "auto") -> Codec:
        return cls(load(path), device)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def identity(self) -> bytes:
        return self.loaded.identity

    def _q(self, quality: float) -> torch.Tensor:
        if not 1 <= quality <= self.levels:
            raise ValueError(f"quality must be between 1 and {self.levels}, got {quality}")
        return torch.tensor([quality - 1.0], dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def encode(
        self,
        image: Image.Image,
        layers: Sequence[str] = LAYER_KINDS,
        quality: float = DEFAULT_QUALITY,
        human_quality: float | None = None,
    ) -> bytes:
        """Code ``image`` into ``.fcb`` bytes: the machine layer and, optionally, the human one."""
        layers = tuple(layers)
        if "machine" not in layers or not set(layers) <= set(LAYER_KINDS):
            raise ValueError("layers must be ('machine',) or ('machine', 'human')")
        human_quality = quality if human_quality is None else human_quality
        # The file stores qualities as float32: use exactly those values on both sides.
        quality, human_quality = float(np.float32(quality)), float(np.float32(human_quality))
        width, height = image.size
        check_size(width, height)
        x = _as_layout(to_tensor(image, self.device))
        payload, y_machine = _encode_latent(
            self.model.machine.latent, self.model.machine.g_a(x), self._q(quality)
        )
        coded = [Layer("machine", float(quality), payload)]
        if "human" in layers:
            additional = self.model.additional
            y_add = additional.analyze(x, y_machine)
            payload, _ = _encode_latent(
                additional.latent, y_add, self._q(human_quality), additional.context(y_machine)
            )
            coded.append(Layer("human", float(human_quality), payload))
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
        """The decoded latent that feeds a synthesis transform (fused for the human layer)."""
        check_size(container.width, container.height)
        z_shape = (padded(container.height) // STRIDE, padded(container.width) // STRIDE)
        machine = container.layer("machine")
        if layer == "human":
            human = container.layer("human")  # fail before any decoding work
        y_machine = _decode_latent(
            self.model.machine.latent,
            machine.payload,
            z_shape,
            self._q(machine.quality),
            self.device,
        )
        if layer == "machine":
            return y_machine
        y_add = _decode_latent(
            self.model.additional.latent,
            human.payload,
            z_shape,
            self._q(human.quality),
            self.device,
            self.model.additional.context(y_machine),
        )
        return self.model.human.fusion(y_machine, y_add)

    @torch.no_grad()
    def decode(self, data: bytes | Container, layer: str = "human") -> Image.Image:
        """Decode the machine or human layer of ``.fcb`` bytes into an RGB image."""
        if layer not in LAYER_KINDS:
            raise ValueError(f"layer must be one of {LAYER_KINDS}")
        container = self.check(data) if isinstance(data, Container) else self.parse(data)
        y = self.decode_latent(container, layer)
        synthesis = self.model.machine.g_s if layer == "machine" else self.model.human.g_s
        return to_image(synthesis(_as_layout(y)), container.width, container.height)


class SingleLayerRunner:
    """Real coding with a single-layer model (the baseline LIC): image <-> one payload.

    Used to measure the "standard LIC" the two-layer codec is compared with; its payloads
    are not wrapped in ``.fcb`` files.
    """

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "auto") -> None:
        if loaded.kind != "baseline":
            kind = f"{loaded.name} is a {loaded.kind} model"
            raise ValueError(f"{kind}, not a baseline (single-layer)")
        self.loaded = loaded
        self.device = resolve_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.model.to(memory_format=torch.channels_last)
        self.levels = loaded.config.levels

    @torch.no_grad()
    def encode(self, image: Image.Image, quality: float) -> bytes:
        q = torch.tensor([quality - 1.0], device=self.device)
        x = _as_layout(to_tensor(image, self.device))
        payload, _ = _encode_latent(self.model.latent, self.model.g_a(x), q)
        return payload

    @torch.no_grad()
    def decode(self, payload: bytes, width: int, height: int, quality: float) -> Image.Image:
        q = torch.tensor([quality - 1.0], device=self.device)
        z_shape = (padded(height) // STRIDE, padded(width) // STRIDE)
        y = _decode_latent(self.model.latent, payload, z_shape, q, self.device)
        return to_image(self.model.g_s(_as_layout(y)), width, height)
