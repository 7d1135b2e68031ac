"""fusioncodec: a scalable learned image codec for machines and humans.

One ``.fcb`` file holds a machine layer (an SA-ICM codec: edges kept for any recognition
model) and an optional human layer (additional latent slices fused into the machine latent,
decoded into a picture for people)::

    import fusioncodec
    data = fusioncodec.encode("photo.png", quality=4)          # both layers
    seen_by_machines = fusioncodec.decode(data, layer="machine")
    seen_by_people = fusioncodec.decode(data, layer="human")

Heavy modules (torch, the models) load on first use, so importing this package is cheap.
Importing it registers a Pillow plugin (:mod:`fusioncodec.pillow`): ``Image.open("x.fcb")``
decodes, ``image.save("x.fcb", quality=4)`` encodes.

Errors (all ``ValueError`` subclasses of :class:`FusionCodecError`, one-line messages; see
:mod:`fusioncodec.errors`): :class:`FormatError` for a damaged, foreign or unsupported file,
:class:`WeightsError` for missing or invalid weights, :class:`ArgumentError` for an argument
out of range, raised before any coding work, :class:`ImageError` for an input picture Pillow
cannot read.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from os import PathLike
from typing import TYPE_CHECKING

from fusioncodec import pillow as _pillow
from fusioncodec.container import Container
from fusioncodec.errors import (
    ArgumentError,
    FormatError,
    FusionCodecError,
    ImageError,
    WeightsError,
)
from fusioncodec.nets.config import DEFAULT_QUALITY

BACKENDS = ("auto", "onnx", "torch")

_pillow.register()  # Image.open("x.fcb") and image.save("x.fcb") work after import fusioncodec

if TYPE_CHECKING:
    from PIL import Image

    from fusioncodec.scalable import FcbSource, ImageSource
    from fusioncodec.scalable import TwoLayerCodec as Codec

__version__ = "0.8.0"
__all__ = [
    "ArgumentError",
    "Container",
    "FormatError",
    "FusionCodecError",
    "ImageError",
    "WeightsError",
    "__version__",
    "decode",
    "encode",
    "load",
]


def load(
    weights: str | PathLike | None = None, device: str = "auto", backend: str = "auto"
) -> Codec:
    """The scalable codec of a weight file (default: the shipped weights) on ``device``
    (``"cpu"``, ``"cuda"`` or ``"auto"``) and ``backend`` (``"onnx"``: onnxruntime on the
    CPU, no torch; ``"torch"``: CPU or CUDA; ``"auto"``: torch for ``device="cuda"`` or
    weights without ONNX graphs, else onnx); loaded once per (weights, device, backend)
    and cached. Both runtimes write and read the same files.

    Raises :class:`WeightsError` (missing or invalid weights) or :class:`ArgumentError`
    (unknown or unavailable device or backend).

    >>> codec = fusioncodec.load(device="cpu")
    >>> codec.name, codec.levels
    ('fusioncodec-default', 8)
    >>> fusioncodec.load("missing.safetensors")
    Traceback (most recent call last):
    fusioncodec.errors.WeightsError: weights not found: missing.safetensors
    """
    if weights is not None and not isinstance(weights, str | PathLike):
        raise ArgumentError(f"weights must be a path or None, got {type(weights).__name__}")
    if not isinstance(device, str):
        raise ArgumentError(f"device must be 'cpu', 'cuda' or 'auto', got {type(device).__name__}")
    if backend not in BACKENDS:
        raise ArgumentError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return _cached(None if weights is None else str(weights), device, backend)


@lru_cache(maxsize=4)
def _cached(weights: str | None, device: str, backend: str) -> Codec:
    from fusioncodec.scalable import open_codec

    return open_codec(weights, device, backend)


def encode(
    image: ImageSource,
    layers: Sequence[str] = ("machine", "human"),
    quality: float = DEFAULT_QUALITY,
    human_quality: float | None = None,
    weights: str | PathLike | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> bytes:
    """Encode a picture (PIL image, uint8 array, path, image bytes or binary file) into
    ``.fcb`` bytes.

    See :meth:`fusioncodec.scalable.TwoLayerCodec.encode` for the arguments and errors.

    >>> from PIL import Image
    >>> picture = Image.new("RGB", (96, 64), (200, 120, 40))
    >>> data = fusioncodec.encode(picture, quality=4, device="cpu")
    >>> Container.from_bytes(data).kinds
    ('machine', 'human')
    >>> fusioncodec.encode(picture, quality=9)
    Traceback (most recent call last):
    fusioncodec.errors.ArgumentError: quality must be between 1 and 8, got 9
    """
    return load(weights, device, backend).encode(image, layers, quality, human_quality)


def decode(
    data: FcbSource,
    layer: str | None = None,
    weights: str | PathLike | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> Image.Image:
    """Decode a layer of an ``.fcb`` file (bytes, path or binary file) into an 8-bit sRGB
    PIL image: ``"machine"``, ``"human"``, or None (the default) for the best the file
    holds, the human layer when present; asked for a layer it lacks, :class:`FormatError`.

    >>> from PIL import Image
    >>> data = fusioncodec.encode(Image.new("RGB", (96, 64), (200, 120, 40)), device="cpu")
    >>> fusioncodec.decode(data, device="cpu").size  # the human layer: the file has one
    (96, 64)
    >>> machine_only = Container.from_bytes(data).without_human().to_bytes()
    >>> fusioncodec.decode(machine_only, layer="human", device="cpu")
    Traceback (most recent call last):
    fusioncodec.errors.FormatError: this file has no human layer (it was encoded or stripped...

    See :meth:`fusioncodec.scalable.TwoLayerCodec.decode` for the errors.
    """
    return load(weights, device, backend).decode(data, layer)
