"""The two-layer codec's coding steps, whatever runs its networks: image <-> layer payloads
<-> ``.fcb`` bytes.

Each layer's payload is one constriction range-coder stream (little-endian 32-bit words):
the hyper-latent z, channel by channel, then y slice by slice with symbols grouped by
scale table. The decoder derives every shape from the image size in the container.

A runtime (:mod:`fusioncodec.codec` on torch, :mod:`fusioncodec.runtime` on onnxruntime)
brings the float transforms; the latents travel between them as numpy arrays, and the
integer path is :mod:`fusioncodec.exact` for both. Portability: everything that decides
what the range decoder reads is integer arithmetic, so a file decodes to the same latent in
either runtime, on every device, thread count and kernel library; only the synthesis
transforms are floating point (pixels may differ by a grey level; see docs/FORMAT.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from PIL import Image

from fusioncodec.container import LAYER_KINDS, Container, Layer
from fusioncodec.errors import ArgumentError, FormatError
from fusioncodec.exact.latent import HyperAnalysis, LatentModel
from fusioncodec.image import padded, to_rgb_array, upright_srgb
from fusioncodec.nets.config import (
    DEFAULT_QUALITY,
    STRIDE,
    CodecConfig,
    checked_layer,
    checked_layers,
    checked_quality,
)
from fusioncodec.payload import decode_payload, encode_payload, layer_binding
from fusioncodec.sources import (
    FcbSource,
    ImageSource,
    check_size,
    default_layer,
    read_fcb,
    read_image,
)

Y_STRIDE = STRIDE // 4  # pixels per latent (y) position
# The float transforms run in tiles of 64 x 64 latent positions (1024 px) grown by 4 on each
# side (their receptive field is under 2): a picture up to 1024 px is one call.
TRANSFORM_TILE, TRANSFORM_HALO = 64, 4


def latent_grid(width: int, height: int) -> tuple[int, int]:
    """Rows and columns of latent (y) positions of a picture of this size."""
    return padded(height) // Y_STRIDE, padded(width) // Y_STRIDE


def z_grid(width: int, height: int) -> tuple[int, int]:
    """Rows and columns of hyper-latent (z) positions of a picture of this size."""
    return padded(height) // STRIDE, padded(width) // STRIDE


class TwoLayerCodec(ABC):
    """The scalable two-layer codec: ``encode`` an image, ``decode`` either layer.

    A runtime implements the float steps (``analysis``, ``hyper_analysis``,
    ``synthesis``) and hands over the latent coders of its weights (``coder``); the rest,
    here, is the same for every runtime.
    """

    name: str  # the weights' name, written into every file
    identity: bytes  # the 16-byte identity of the weights, written into every file
    reads: frozenset[bytes] = frozenset()  # earlier weights whose files these decode too
    machine_reads: frozenset[bytes] = frozenset()  # ... and whose machine layer only
    config: CodecConfig
    levels: int  # qualities are 1..levels
    backend: str = ""  # "torch" or "onnx"

    # -- what a runtime brings ----------------------------------------------------------

    @abstractmethod
    def analysis(self, pixels: np.ndarray, y_machine: np.ndarray | None = None) -> np.ndarray:
        """The machine layer's analysis of a picture (HxWx3 uint8), or with ``y_machine``
        the additional layer's: y, 1 x C x H/16 x W/16 float32 (padded picture)."""

    @abstractmethod
    def hyper_analysis(self, layer: str) -> HyperAnalysis:
        """The encoder's hyper-analysis of a layer ("machine" or "additional")."""

    @abstractmethod
    def coder(self, layer: str) -> LatentModel:
        """The latent coder of a layer ("machine" or "additional")."""

    def gain(self, layer: str, position: float) -> np.ndarray | None:
        """The encoder's gain at a level position, or None for the coder's own."""
        return None

    @abstractmethod
    def synthesis(
        self, y_machine: np.ndarray, y_add: np.ndarray | None, width: int, height: int
    ) -> Image.Image:
        """The machine picture of a machine latent, or with ``y_add`` the human picture of
        the fused latents (8-bit RGB of the coded size)."""

    # -- coding -------------------------------------------------------------------------

    def context(self, y_machine: np.ndarray) -> np.ndarray | None:
        """What the additional layer's entropy model is conditioned on (None: nothing)."""
        return y_machine if self.coder("additional").context is not None else None

    def encode(
        self,
        image: ImageSource,
        layers: Sequence[str] = LAYER_KINDS,
        quality: float = DEFAULT_QUALITY,
        human_quality: float | None = None,
    ) -> bytes:
        """Code ``image`` into ``.fcb`` bytes (see :meth:`encode_container`)."""
        return self.encode_container(image, layers, quality, human_quality).to_bytes()

    def encode_container(
        self,
        image: ImageSource,
        layers: Sequence[str] = LAYER_KINDS,
        quality: float = DEFAULT_QUALITY,
        human_quality: float | None = None,
    ) -> Container:
        """Code ``image`` into a :class:`Container` (what :meth:`encode` writes as bytes).

        ``image``: a PIL image, a path, encoded image bytes or a binary file (any mode and
        size up to 100 MP; EXIF orientation and ICC colours applied).  ``layers``:
        ``("machine",)`` or ``("machine", "human")``.  ``quality`` (machine layer) and
        ``human_quality`` (default: ``quality``) are continuous in ``1..8``; higher is
        better and larger.  Raises :class:`ArgumentError` for an argument out of range
        (before any work) and :class:`ImageError` for a picture Pillow cannot read.  Given
        a path, bytes or a file rather than a PIL image, the codec frees the decoded picture
        as soon as it has its pixels (100 MP: 0.4 GB less at the peak).
        """
        layers = checked_layers(layers)
        human_quality = quality if human_quality is None else human_quality
        # The file stores qualities as float32: use exactly those values on both sides.
        quality = checked_quality(quality, self.levels)
        human_quality = checked_quality(human_quality, self.levels, "human_quality")
        image = read_image(image)
        check_size(*image.size)
        image = upright_srgb(image)
        width, height = image.size
        m = self.config.m
        pixels = to_rgb_array(image)
        del image
        machine, y_machine = self.encode_layer(
            "machine",
            self.analysis(pixels),
            quality,
            binding=layer_binding("machine", quality, width, height, m),
        )
        coded = [Layer("machine", quality, machine)]
        if "human" in layers:
            y_add = self.analysis(pixels, y_machine)
            del pixels  # not needed any more: its memory goes to the human layer's coding
            binding = layer_binding("human", human_quality, width, height, m, machine)
            payload, _ = self.encode_layer(
                "additional", y_add, human_quality, self.context(y_machine), binding
            )
            coded.append(Layer("human", human_quality, payload))
        return Container(width, height, self.name, self.identity, m, tuple(coded))

    def encode_layer(
        self,
        layer: str,
        y: np.ndarray,
        quality: float,
        context: np.ndarray | None = None,
        binding: int | None = None,
    ) -> tuple[bytes, np.ndarray]:
        """One layer's payload ("machine" or "additional") of its latent ``y`` at a checked
        ``quality``, and the decoder's exact latent."""
        position = quality - 1.0
        return encode_payload(
            self.coder(layer),
            y,
            position,
            self.hyper_analysis(layer),
            context,
            binding,
            self.gain(layer, position),
        )

    def parse(self, data: bytes) -> Container:
        """Parse and verify a file for this model (format, CRCs, model identity)."""
        return self.check(Container.from_bytes(data))

    def check(self, container: Container, layer: str = "machine") -> Container:
        """Refuse a container unless these weights decode ``layer`` of it (and the layers
        under it): made with other weights whose files, or whose machine layer, they do not
        read (identity hash), or with another m."""
        if layer == "machine":
            reads = self.reads | self.machine_reads
        elif container.model_hash in self.machine_reads:
            raise FormatError(
                f"this file's human layer was encoded with model {container.model_name!r} "
                f"(hash {container.model_hash.hex()}), whose human layer the loaded weights "
                f"{self.name!r} do not decode (only its machine layer: --layer machine); "
                "decode the human layer with the matching model"
            )
        else:
            reads = self.reads
        container.check_model(self.identity, self.name, reads)
        if container.m != self.config.m:
            raise FormatError(f"file has m={container.m}, model has m={self.config.m}")
        return container

    def _decoded_latents(
        self, container: Container, layer: str
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The decoded machine latent and, for the human ``layer`` (its name checked at the
        public door), the additional one. Everything the file says is checked before any
        decoding work: size, layers, that these weights read them, and each one's quality.
        """
        try:
            check_size(container.width, container.height)
        except ArgumentError as exc:
            raise FormatError(f"cannot decode this file: {exc}") from None
        z_shape = z_grid(container.width, container.height)
        needed = [container.layer(kind) for kind in LAYER_KINDS[: LAYER_KINDS.index(layer) + 1]]
        self.check(container, layer)
        for coded in needed:
            if not 1 <= coded.quality <= self.levels:
                raise FormatError(
                    f"the file's {coded.kind} layer has quality {coded.quality:g}, outside "
                    f"this model's 1..{self.levels}"
                )
        machine = needed[0]
        size = (container.width, container.height, container.m)
        y_machine = decode_payload(
            self.coder("machine"),
            machine.payload,
            z_shape,
            machine.quality - 1.0,
            binding=layer_binding("machine", machine.quality, *size),
        )
        if layer == "machine":
            return y_machine, None
        human = needed[1]
        y_add = decode_payload(
            self.coder("additional"),
            human.payload,
            z_shape,
            human.quality - 1.0,
            self.context(y_machine),
            layer_binding("human", human.quality, *size, machine.payload),
        )
        return y_machine, y_add

    def decode_latent(self, container: Container, layer: str) -> np.ndarray:
        """The decoded latent that feeds a layer's synthesis: the machine latent, or for the
        human layer the machine latent with the additional one added into its first m
        slices (what the human decoder's slice fusion computes)."""
        y_machine, y_add = self._decoded_latents(container, checked_layer(layer))
        if y_add is not None:
            y_machine[:, : y_add.shape[1]] += y_add
        return y_machine

    def decode(self, data: FcbSource, layer: str | None = None) -> Image.Image:
        """Decode a layer of an ``.fcb`` file (bytes, path, binary file or
        :class:`Container`) into an 8-bit sRGB image of the coded size: ``"machine"``,
        ``"human"``, or None for the best the file holds (human when present).

        Raises :class:`FormatError` for a damaged, unsupported or foreign file (made with
        other weights) or one without the layer asked for, :class:`ArgumentError` for a bad
        ``layer``.
        """
        checked_layer(layer, also=(None,))
        data = read_fcb(data)
        container = data if isinstance(data, Container) else Container.from_bytes(data)
        layer = layer or default_layer(container.kinds)
        y_machine, y_add = self._decoded_latents(container, layer)
        return self.synthesis(y_machine, y_add, container.width, container.height)


def open_codec(weights: str | None, device: str = "auto", backend: str = "auto") -> TwoLayerCodec:
    """The two-layer codec of a weight file on a runtime (see :func:`fusioncodec.load`)."""
    import importlib.util

    from fusioncodec.runtime.graphs import graphs_folder
    from fusioncodec.weight_file import existing_weights

    if device not in ("auto", "cpu", "cuda"):
        raise ArgumentError(f"unknown device {device!r} (use cpu, cuda or auto)")
    if backend == "auto":
        onnx = importlib.util.find_spec("onnxruntime") is not None
        graphs = graphs_folder(existing_weights(weights)).is_dir()
        backend = "onnx" if device != "cuda" and onnx and graphs else "torch"
    if backend == "onnx":
        from fusioncodec.runtime import OnnxCodec

        return OnnxCodec.from_file(weights, device)
    if importlib.util.find_spec("torch") is None:
        raise ArgumentError(
            "the torch runtime needs torch (pip install 'fusioncodec[torch]'); the onnx "
            "runtime codes on the CPU without it"
        )
    from fusioncodec.codec import Codec

    return Codec.from_file(weights, device)
