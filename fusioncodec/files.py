"""Files on disk: the one atomic writer, which files are images, and where the shared data is.

Every command that writes a result goes through :func:`write_atomic` (or
:func:`atomic_file` for a library that writes to a path itself), so an interrupted run
never leaves a half-written file and new files get the usual permissions (0666 less the
umask). Image folders are listed with :data:`IMAGE_SUFFIXES` (what Pillow reads here, by
name) and the test and training data are found with :func:`shared_dir`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path

__all__ = [
    "IMAGE_SUFFIXES",
    "TEST_SETS",
    "atomic_file",
    "image_files",
    "is_image",
    "list_images",
    "shared_dir",
    "write_atomic",
]

IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pnm", ".tif", ".tiff", ".webp", ".avif",
    ".heic", ".heif", ".jxl",
)  # fmt: skip
TEST_SETS = ("kodak", "coco128")  # folders never trained on nor used to select models


@cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block
    ends without an exception, removed when it does not. The file appears whole or not at
    all (also on Ctrl-C or SIGKILL), with the usual permissions (0666 less the umask)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_file`; OSError as
    raised by the system."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def is_image(path: Path) -> bool:
    """Whether ``path`` names an image file by its suffix (hidden files are not images)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (and below it with ``recursive``), sorted by path."""
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in entries if is_image(p) and p.is_file())


def list_images(folder: Path, limit: int = 0) -> list[tuple[str, Path]]:
    """(key, path) of the images directly in ``folder``, sorted by name, the first ``limit``
    if > 0; keys are the stems (the file names when two stems collide)."""
    paths = image_files(folder)
    if limit > 0:
        paths = paths[:limit]
    stems = [p.stem for p in paths]
    unique = len(set(stems)) == len(stems)
    return [(p.stem if unique else p.name, p) for p in paths]


def shared_dir() -> Path:
    """The shared data folder: ``$FUSIONCODEC_SHARED`` if set, else ``../shared`` from the
    working directory if it exists, else ``shared`` beside the repository of this package
    (which may not exist: callers check what they need in it)."""
    env = os.environ.get("FUSIONCODEC_SHARED")
    if env:
        return Path(env)
    here = Path("../shared")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "shared"
