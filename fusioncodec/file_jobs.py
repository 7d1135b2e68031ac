"""One input file coded into one output file: the work that every engine does per file.

The command line's loop (``fcodec encode/decode``) and the Ray workers
(:mod:`fusioncodec.distributed`) run the same functions here, so their outputs, result rows
and error lines are the same file by file. A failure confined to one input is a
:class:`FileFailure` whose one-line message names the file; :func:`run_job` turns it into a
result row with ``ok: false``.

Where the bytes come from and go to is a :class:`Files`: :data:`LOCAL` reads regular files
(or stdin, ``-``) and writes through the one atomic writer (or to stdout); the Ray engine
gives one over pyarrow's file systems for URIs. An output that exists is kept unless
``force``; an input is never overwritten (the caller's plan checks that).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from fusioncodec.container import Container
from fusioncodec.errors import FusionCodecError
from fusioncodec.files import write_atomic
from fusioncodec.messages import error_reason, shown_path
from fusioncodec.metrics import bpp
from fusioncodec.sources import default_layer, read_container, read_container_file, regular_file

if TYPE_CHECKING:
    from fusioncodec.scalable import TwoLayerCodec as Codec

__all__ = [
    "EXPECTED",
    "LOCAL",
    "STDIO",
    "FileFailure",
    "Files",
    "Job",
    "LocalFiles",
    "container_stats",
    "decode_job",
    "encode_job",
    "failures",
    "quality_text",
    "run_job",
    "show",
]

STDIO = "-"


class FileFailure(FusionCodecError):
    """A failure confined to one input: its message names the file; a batch goes on."""


def show(path: str | Path | None) -> str:
    """A path as shown in messages (``None`` is stdout, ``-`` stdin); never spans lines."""
    if path is None:
        return "<stdout>"
    return "<stdin>" if str(path) == STDIO else shown_path(path)


# What work on one file may raise that is about the file: FormatError and WeightsError are
# ValueErrors; RuntimeError and MemoryError come from torch.
EXPECTED = (ValueError, OSError, EOFError, RuntimeError, MemoryError)


@contextmanager
def failures(name: str) -> Iterator[None]:
    """Turn the expected exceptions of work on ``name`` into a :class:`FileFailure`."""
    try:
        yield
    except (FileFailure, BrokenPipeError):
        raise
    except EXPECTED as exc:
        raise FileFailure(f"{name}: {error_reason(exc)}") from None


def quality_text(q: float) -> float:
    """A float32 quality as the short decimal it was written as (4.3, not 4.300000190734863)."""
    return float(f"{q:.7g}")


def container_stats(container: Container) -> dict[str, Any]:
    """Sizes and rates of a parsed file, as reported by ``info`` and ``encode --json``."""
    pixels = container.width * container.height
    total = container.header_size + sum(len(layer.payload) for layer in container.layers)
    return {
        "width": container.width,
        "height": container.height,
        "bytes": total,
        "header_bytes": container.header_size,
        "bpp": bpp(total, pixels),
        "model": container.model_name,
        "model_hash": container.model_hash.hex(),
        "m": container.m,
        "layers": [
            {
                "kind": layer.kind,
                "quality": quality_text(layer.quality),
                "bytes": len(layer.payload),
                "bpp": bpp(len(layer.payload), pixels),
            }
            for layer in container.layers
        ],
    }


@dataclass(frozen=True)
class Job:
    """One input and where its result goes (``output`` None: stdout); ``shown``: the names
    messages and rows give them, when not the paths themselves (a worker elsewhere works on
    absolute paths and reports the names the user gave)."""

    source: str
    output: str | Path | None
    shown: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        return self.shown[0] if self.shown else show(self.source)

    @property
    def out_name(self) -> str:
        return self.shown[1] if self.shown else show(self.output)


# --------------------------------------------------------------------------- where bytes live


class Files(Protocol):
    """Where a job's input is read and its output written (raising OSError as ``open``)."""

    def read_bytes(self, source: str) -> bytes: ...

    def read_container(self, source: str) -> Container: ...

    def exists(self, output: str | Path) -> bool: ...

    def write_new(self, output: str | Path, data: bytes, replace: bool) -> None:
        """Write ``data`` whole or not at all; FileExistsError if ``output`` exists and not
        ``replace``."""


def binary_stream(name: str) -> BinaryIO:
    """The binary layer of ``sys.stdin`` / ``sys.stdout`` (as replaced by click's test runner)."""
    stream = getattr(sys, name)
    return getattr(stream, "buffer", stream)


def _stdin() -> BinaryIO:
    stream = binary_stream("stdin")
    if stream.isatty():
        raise FileFailure("refusing to read binary data from a terminal; pipe a file in")
    return stream


def _empty(source: str) -> FileFailure:
    return FileFailure(f"{show(source)}: empty {'input' if source == STDIO else 'file'}")


class LocalFiles:
    """Regular files on this machine, ``-`` for stdin; outputs through the atomic writer."""

    def read_bytes(self, source: str) -> bytes:
        return _stdin().read() if source == STDIO else regular_file(source).read_bytes()

    def read_container(self, source: str) -> Container:
        if source == STDIO:
            stream = _stdin()
            start = stream.read(1)
            if not start:
                raise _empty(source)
            return read_container(stream, start)
        if regular_file(source).stat().st_size == 0:
            raise _empty(source)
        return read_container_file(source)

    def exists(self, output: str | Path) -> bool:
        return os.path.lexists(output)

    def write_new(self, output: str | Path, data: bytes, replace: bool) -> None:
        write_atomic(output, data, replace=replace)


LOCAL = LocalFiles()


# --------------------------------------------------------------------------- steps of a job


def read_input(job: Job, files: Files = LOCAL) -> bytes:
    """All bytes of the job's input; FileFailure if unreadable or empty."""
    with failures(job.name):
        data = files.read_bytes(job.source)
    if not data:
        raise _empty(job.source)
    return data


def read_coded(job: Job, files: Files = LOCAL) -> Container:
    """The job's ``.fcb`` input, parsed and verified, read no further than its header
    declares; FileFailure if unreadable, empty or not a valid ``.fcb`` file."""
    with failures(job.name):
        return files.read_container(job.source)


def check_writable(job: Job, force: bool, files: Files = LOCAL) -> None:
    """FileFailure if the output exists and ``force`` was not given."""
    if job.output is not None and not force and files.exists(job.output):
        raise FileFailure(f"{job.out_name}: already exists (use --force to overwrite)")


def write_output(job: Job, data: bytes, force: bool, files: Files = LOCAL) -> None:
    """Write ``data`` to stdout or, whole or not at all, to the job's output."""
    if job.output is None:
        stream = binary_stream("stdout")
        stream.write(data)
        stream.flush()
        return
    check_writable(job, force, files)
    with failures(job.out_name):
        try:
            files.write_new(job.output, data, replace=force)
        except FileExistsError:  # created by someone else while this job ran
            raise FileFailure(
                f"{job.out_name}: already exists (use --force to overwrite)"
            ) from None


def check_image(data: bytes, name: str) -> None:
    """FileFailure unless Pillow can open ``data`` (its header) and the picture fits a .fcb
    file; a cheap check before the model loads (damage further in is found while coding)."""
    from fusioncodec.container import size_problem
    from fusioncodec.sources import image_size

    with failures(name):
        width, height = image_size(data)
    if problem := size_problem(width, height):
        raise FileFailure(
            f"{name}: image is {width}x{height}, too large for a .fcb file: {problem}"
        )


# --------------------------------------------------------------------------- the jobs


def encode_job(
    job: Job,
    get_codec: Callable[[], Codec],
    layers: Sequence[str],
    quality: float,
    human_quality: float,
    force: bool,
    files: Files = LOCAL,
) -> dict[str, Any]:
    """Encode the job's picture into its output; the coded file's :func:`container_stats`."""
    check_writable(job, force, files)
    picture = read_input(job, files)
    check_image(picture, job.name)
    codec = get_codec()
    with failures(job.name):  # given the bytes, the codec frees the picture once it has read it
        container = codec.encode_container(picture, layers, quality, human_quality)
    write_output(job, container.to_bytes(), force, files)
    return container_stats(container)


def decode_job(
    job: Job,
    get_codec: Callable[[], Codec],
    layer: str,
    image_format: str,
    force: bool,
    files: Files = LOCAL,
) -> dict[str, Any]:
    """Decode ``layer`` (``auto``: the file's best) of the job's ``.fcb`` file into an image
    of ``image_format`` (a Pillow format name) at its output."""
    check_writable(job, force, files)
    container = read_coded(job, files)
    chosen = default_layer(container.kinds) if layer == "auto" else layer
    if chosen not in container.kinds:
        raise FileFailure(
            f"{job.name}: has no {chosen} layer (machine-only file); use --layer machine"
        )
    codec = get_codec()
    with failures(job.name):
        image = codec.decode(container, chosen)
    buffer = io.BytesIO()
    with failures(job.out_name):
        image.save(buffer, format=image_format)
    write_output(job, buffer.getvalue(), force, files)
    coded = container_stats(container)
    return {
        "layer": chosen,
        "width": image.width,
        "height": image.height,
        "bytes": coded["bytes"],
        "bpp": coded["bpp"],
    }


def run_job(job: Job, work: Callable[[Job], dict[str, Any]]) -> dict[str, Any]:
    """The result row of ``work(job)``: ``input``, ``output``, ``ok`` and what ``work``
    returns, or ``ok: false`` and the ``error`` line of its :class:`FileFailure`."""
    row: dict[str, Any] = {"input": job.name, "output": job.out_name}
    try:
        return {**row, "ok": True, **work(job)}
    except FileFailure as exc:
        return {**row, "ok": False, "error": str(exc)}
