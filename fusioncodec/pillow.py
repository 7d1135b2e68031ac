"""Pillow plugin for ``.fcb`` files, registered by ``import fusioncodec``.

    from PIL import Image
    import fusioncodec

    image = Image.open("photo.fcb")          # the human layer when present, else the machine one
    image.select_layer("machine")            # before the pixels are loaded, to choose
    image.info["fcb_layers"]                 # ("machine", "human")
    Image.open("photo.png").save("photo.fcb", quality=4, layers=("machine", "human"))

Round trip in memory (the shipped weights)::

    >>> import io
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (96, 64), (30, 90, 160)).save(buffer, format="FCB", quality=2)
    >>> image = Image.open(buffer)
    >>> image.format, image.size, image.info["fcb_layers"]
    ('FCB', (96, 64), ('machine', 'human'))
    >>> image.select_layer("machine")
    >>> image.convert("RGB").size
    (96, 64)

Saving takes ``quality`` (1..8, not JPEG's 0..100), ``human_quality``, ``layers``,
``weights``, ``device`` and ``backend`` (as :func:`fusioncodec.load`); both directions use
``$FUSIONCODEC_WEIGHTS`` when set, else the shipped weights.  Decoding errors are
:class:`~fusioncodec.errors.FormatError`.
"""

from __future__ import annotations

import os
from typing import IO

from PIL import Image, ImageFile

from fusioncodec.container import LAYER_KINDS, MAGIC, MAX_HEADER_SIZE, peek_header
from fusioncodec.errors import ArgumentError
from fusioncodec.nets.config import DEFAULT_QUALITY, checked_layer
from fusioncodec.sources import default_layer

FORMAT = "FCB"


def _accept(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


def _weights(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get("FUSIONCODEC_WEIGHTS") or None


class FcbImageFile(ImageFile.ImageFile):
    """An ``.fcb`` file opened through Pillow; decoded on ``load()``."""

    format = FORMAT
    format_description = "fusioncodec two-layer learned image"

    def _open(self) -> None:
        header = peek_header(self.fp.read(MAX_HEADER_SIZE))
        self._size = (header.width, header.height)
        self._mode = "RGB"
        self.info["fcb_layers"] = header.kinds
        self.info["fcb_model"] = header.model_name
        self.layer = default_layer(header.kinds)
        self._set_tile()

    def _set_tile(self) -> None:
        self.tile = [ImageFile._Tile("fcb", (0, 0, *self.size), 0, (self.layer,))]

    def select_layer(self, layer: str) -> None:
        """Decode ``layer`` ('machine' or 'human') instead of the default; before loading."""
        if not self.tile:  # Pillow empties the tile list once the pixels are loaded
            raise ArgumentError("select_layer() must come before the pixels are loaded")
        checked_layer(layer)
        if layer not in self.info["fcb_layers"]:
            raise ArgumentError(f"this file has no {layer} layer")
        self.layer = layer
        self._set_tile()


class FcbDecoder(ImageFile.PyDecoder):
    """Reads the whole file and decodes the chosen layer with the shipped (or given) model."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        import fusioncodec

        self.fd.seek(0)
        picture = fusioncodec.decode(self.fd.read(), layer=self.args[0], weights=_weights())
        self.set_as_raw(picture.tobytes())
        return -1, 0


def _save(image: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    import fusioncodec

    options = image.encoderinfo
    data = fusioncodec.encode(
        image,
        layers=tuple(options.get("layers", LAYER_KINDS)),
        quality=options.get("quality", DEFAULT_QUALITY),
        human_quality=options.get("human_quality"),
        weights=_weights(options.get("weights")),
        device=options.get("device", "auto"),
        backend=options.get("backend", "auto"),
    )
    fp.write(data)


def register() -> None:
    """Teach Pillow the ``.fcb`` format (idempotent)."""
    Image.register_open(FORMAT, FcbImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".fcb")
    Image.register_mime(FORMAT, "image/x-fcb")
    Image.register_decoder("fcb", FcbDecoder)
