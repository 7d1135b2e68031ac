"""The public door for inputs: pictures and ``.fcb`` files, as the API, the command line
and the Pillow plugin accept them, checked before any coding work.

A picture is a PIL image, a uint8 array, a path, encoded image bytes or a binary file; an
``.fcb`` file is bytes, a path, a binary file or a parsed :class:`Container`. Anything else
is an :class:`ArgumentError`, a picture Pillow cannot read an :class:`ImageError`.

A path must name a regular file: a FIFO would block until a writer comes (forever, when
none does) and a device such as ``/dev/zero`` never ends; pipes are read through a stream
(``-`` on the command line). An ``.fcb`` stream is read no further than its header declares
(plus one byte, so that trailing data is still refused): a few hundred bytes tell whether
the rest is worth reading.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeAlias

from PIL import Image

from fusioncodec.container import MAX_HEADER_SIZE, Container, peek_header, size_problem
from fusioncodec.errors import ArgumentError, ImageError
from fusioncodec.messages import error_reason

__all__ = [
    "MAX_CODEC_PIXELS",
    "FcbSource",
    "ImageSource",
    "NotRegularFile",
    "check_size",
    "default_layer",
    "image_size",
    "read_container",
    "read_container_file",
    "read_fcb",
    "read_image",
    "regular_file",
]

MAX_CODEC_PIXELS = 100_000_000  # tiled: under 3 GB at the peak (results/large-picture)


class NotRegularFile(OSError):
    """A path that names a FIFO, a device, a socket or a directory where a file is needed."""


def default_layer(kinds: tuple[str, ...]) -> str:
    """The layer decoded when none is asked for: the best picture the file holds, the human
    layer when present, else the machine layer (layers are stored in that order)."""
    return kinds[-1]


def regular_file(path: str | os.PathLike) -> Path:
    """``path`` if it names a regular file (links followed); :class:`NotRegularFile` if it
    names something else, FileNotFoundError (an OSError) if nothing. Nothing is opened."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise NotRegularFile(f"{os.fspath(path)}: {what}")
    return Path(path)


def read_container(stream: BinaryIO, start: bytes = b"") -> Container:
    """One ``.fcb`` file from a binary stream, parsed and verified
    (:meth:`Container.from_bytes`), reading the header first and then only the payload
    bytes it declares; ``start``: bytes already read from the stream. :class:`ArgumentError`
    for a stream that does not give bytes."""
    head = stream.read(MAX_HEADER_SIZE - len(start))
    if not isinstance(head, bytes | bytearray):
        raise ArgumentError(f"not a binary stream: it gives {type(head).__name__}, not bytes")
    head = start + head
    rest = b""
    if len(head) == MAX_HEADER_SIZE:
        more = peek_header(head).total_size + 1 - len(head)
        rest = stream.read(more) if more > 0 else b""
    return Container.from_bytes(bytes(head) + rest)


def read_container_file(path: str | os.PathLike) -> Container:
    """:func:`read_container` of the regular file at ``path``."""
    with regular_file(path).open("rb") as f:
        return read_container(f)


def check_size(width: int, height: int) -> None:
    """Refuse pictures a ``.fcb`` file cannot hold or whose transforms would not fit in
    memory, before any network runs."""
    if problem := size_problem(width, height):
        raise ArgumentError(f"image of {width}x{height} cannot go into a .fcb file: {problem}")
    if width * height > MAX_CODEC_PIXELS:
        raise ArgumentError(
            f"image of {width}x{height} is too large to code "
            f"(at most {MAX_CODEC_PIXELS // 1_000_000} megapixels)"
        )


if TYPE_CHECKING:
    import numpy as np

# numpy loads only where an array is used: the command line's start-up does without it
ImageSource: TypeAlias = "Image.Image | np.ndarray | str | os.PathLike | bytes | BinaryIO"
"""A picture: a PIL image, a uint8 array (HxW grey, HxWx3 RGB or HxWx4 RGBA), a path,
encoded image bytes (PNG, JPEG, ...) or a binary file."""
FcbSource = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO | Container
"""An ``.fcb`` file: its bytes, a path, a binary file object or a parsed :class:`Container`."""


def _encoded(source: ImageSource) -> bool:
    """Whether ``source`` is an encoded picture (path, bytes or file), not a PIL image."""
    return isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)) or hasattr(
        source, "read"
    )


def image_size(source: ImageSource) -> tuple[int, int]:
    """Width and height of a picture, from its header (or a PIL image's ``size``); raises
    as :func:`read_image` does for an unreadable or too large picture."""
    if not _encoded(source):
        return _picture(source).size
    from fusioncodec.image import open_picture  # torch: not at start-up of the command line

    with open_picture(source, MAX_CODEC_PIXELS) as image:
        return image.size


def read_image(source: ImageSource) -> Image.Image:
    """The picture ``source`` stands for, fully read.

    :class:`ImageError` if Pillow cannot read it, :class:`ArgumentError` if it is over
    :data:`MAX_CODEC_PIXELS`; a PIL image is returned as it is.
    """
    if not _encoded(source):
        image = _picture(source)
        try:
            image.load()  # a lazily opened file: its damage shows here
        except OSError as exc:
            raise ImageError(f"cannot read image ({error_reason(exc)})") from None
        return image
    from fusioncodec.image import open_picture

    with open_picture(source, MAX_CODEC_PIXELS) as image:
        image.load()
        return image


def _picture(source: object) -> Image.Image:
    """A PIL image, or a uint8 array as one; ArgumentError for anything else."""
    if isinstance(source, Image.Image):
        return source
    np = sys.modules.get("numpy")  # not loaded: source cannot be an array
    if np is not None and isinstance(source, np.ndarray):
        shapes = source.ndim == 2 or (source.ndim == 3 and source.shape[2] in (3, 4))
        if source.dtype != np.uint8 or not shapes:
            raise ArgumentError(
                f"an array picture is uint8 HxW, HxWx3 or HxWx4, got {source.dtype} "
                f"{'x'.join(map(str, source.shape))}"
            )
        return Image.fromarray(np.ascontiguousarray(source))
    raise ArgumentError(
        "image must be a PIL image, a uint8 array, a path, image bytes or a binary file, "
        f"got {type(source).__name__}"
    )


def read_fcb(source: FcbSource) -> bytes | Container:
    """The bytes (or container) of an ``.fcb`` file given as bytes, path or binary file
    object; a file is read no further than its header declares. ArgumentError for anything
    else (text, a text-mode file); the OSError of ``open`` for a path it cannot open."""
    if isinstance(source, (Container, bytes)):
        return source
    if isinstance(source, (bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        if "\0" in os.fspath(source):
            raise ArgumentError("not a path (it holds a NUL byte): give .fcb data as bytes")
        return read_container_file(source)
    if hasattr(source, "read"):
        try:
            return read_container(source)
        except UnicodeDecodeError:
            raise ArgumentError("not a binary stream: open .fcb files with 'rb'") from None
    raise ArgumentError(f"not an .fcb source: {type(source).__name__} (bytes, path or file)")
