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
    "sweep_temporaries",
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


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or no such call here: assume alive
        return True
    return True


def sweep_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by writers that are no longer running (a
    SIGKILL between writing and publishing); returns what was removed. Temporaries are named
    ``.NAME.PID-RANDOM.tmp``; those of running processes are kept."""
    removed = []
    prefix = _temporary_prefix(path)
    with suppress(OSError):
        for entry in os.scandir(path.parent):
            rest = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
            pid, dash, _ = rest.partition("-")
            if rest.endswith(".tmp") and dash and pid.isdigit() and not _alive(int(pid)):
                with suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _publish_new(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` only if ``path`` does not exist (FileExistsError if it does),
    in one step: a hard link, which fails on an existing name (or, where the file system has
    no hard links, an exclusive create of the name followed by the rename)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FUSE file systems)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


@contextmanager
def atomic_file(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to, published as ``path`` when the block
    ends without an exception, removed when it does not. The file appears whole or not at
    all (also on Ctrl-C or SIGKILL: the next write of the same path removes the temporary
    left behind), with the usual permissions (0666 less the umask).

    ``replace=False``: FileExistsError if ``path`` exists when the file is published, even
    when another process created it meanwhile (nothing is overwritten). A ``path`` that is
    a symbolic link is followed: the file it points to is written, the link stays (as
    ``cp`` does).
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    sweep_temporaries(path)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f"{_temporary_prefix(path)}{os.getpid()}-", suffix=".tmp"
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | Path, data: bytes | str, *, replace: bool = True) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_file`; OSError as
    raised by the system (FileExistsError: ``path`` exists and ``replace`` is False)."""
    with atomic_file(path, replace=replace) as tmp:
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
