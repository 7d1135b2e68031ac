"""Inputs and outputs of the coding commands: pairing inputs with outputs, reading them,
writing results atomically, and running a batch where one bad input does not stop the rest.

Outputs are written atomically (:func:`fusioncodec.files.write_atomic`), existing files are
kept unless ``--force`` is given, and an input file is never overwritten.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import click

from fusioncodec.cli.common import STDIO, CliError, FileError, errors, show, verbosity
from fusioncodec.container import MAX_PIXELS, MAX_SIDE, Container
from fusioncodec.files import write_atomic
from fusioncodec.messages import error_reason
from fusioncodec.sources import read_container, read_container_file, regular_file


@dataclass(frozen=True)
class Job:
    """One input and where its result goes (``output`` None: stdout)."""

    source: str
    output: Path | None

    @property
    def name(self) -> str:
        return show(self.source)

    @property
    def out_name(self) -> str:
        return show(self.output)


def _same_file(a: Path, b: Path) -> bool:
    with suppress(OSError):
        return os.path.samefile(a, b)
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def plan_outputs(
    inputs: Sequence[str], output: str | None, name_for: Callable[[str], str], *, as_json: bool
) -> list[Job]:
    """Pair inputs with outputs and check every path rule before any work is done.

    ``name_for(source)`` names the output of an input (from its stem), used beside the input
    (no ``-o``) or inside the ``-o`` directory.  Several inputs need a directory.
    """
    batch = len(inputs) > 1
    if STDIO in inputs and batch:
        raise CliError("- (stdin) cannot be combined with other inputs")
    if output == STDIO:
        if batch:
            raise CliError("-o - (stdout) takes a single input; use -o DIR for several")
        if as_json:
            raise CliError("--json cannot be used with -o - (stdout carries the data)")
        if _binary_stream("stdout").isatty():
            raise CliError("refusing to write binary data to a terminal; use -o FILE or redirect")
        return [Job(inputs[0], None)]
    if STDIO in inputs and output is None:
        raise CliError("reading stdin needs -o FILE (or -o - for stdout)")

    directory: Path | None = None
    if output is not None and (batch or output.endswith(("/", os.sep)) or Path(output).is_dir()):
        directory = Path(output)
        if directory.exists() and not directory.is_dir():
            raise CliError(f"{show(output)}: not a directory (several inputs need -o DIR)")
        if not directory.exists() and directory.suffix and not output.endswith(("/", os.sep)):
            raise CliError(
                f"{show(output)} names a file, but several inputs need -o DIR "
                f"(write {show(output)}/ to make a directory of that name)"
            )
        if STDIO in inputs:
            raise CliError("reading stdin needs -o FILE (or -o - for stdout), not a directory")

    jobs = []
    for source in inputs:
        if output is None:
            target = Path(source).parent / name_for(source)
        elif directory is not None:
            target = directory / name_for(source)
        else:
            target = Path(output)
            if target.parent.exists() and not target.parent.is_dir():
                raise CliError(f"{show(target.parent)}: not a directory")
        jobs.append(Job(source, target))

    seen: dict[str, Job] = {}
    for job in jobs:
        assert job.output is not None
        key = os.path.normcase(os.path.abspath(job.output))
        if key in seen:
            raise CliError(
                f"{seen[key].name} and {job.name} would both write {job.out_name}; nothing written"
            )
        seen[key] = job
        for source in inputs:
            if source != STDIO and _same_file(job.output, Path(source)):
                raise CliError(f"{job.out_name}: refusing to overwrite input file {show(source)}")
    folders = {directory} if directory is not None else {job.output.parent for job in jobs}
    for folder in sorted(folders, key=str):
        _writable_folder(folder)
    return jobs


def _writable_folder(folder: Path) -> None:
    """Create ``folder`` if missing (as ``-o DIR/`` always did) and check that files can be
    made in it, before any coding work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{show(folder)}: cannot create directory: {error_reason(exc)}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"{show(folder)}: cannot write there (permission denied)")


def _binary_stream(name: str) -> BinaryIO:
    """The binary layer of ``sys.stdin`` / ``sys.stdout`` (as replaced by click's test runner)."""
    stream = getattr(sys, name)
    return getattr(stream, "buffer", stream)


def _stdin() -> BinaryIO:
    stream = _binary_stream("stdin")
    if stream.isatty():
        raise FileError("refusing to read binary data from a terminal; pipe a file in")
    return stream


def _empty(source: str) -> FileError:
    return FileError(f"{show(source)}: empty {'input' if source == STDIO else 'file'}")


def read_input(source: str) -> bytes:
    """All bytes of a regular file or of stdin (``-``); FileError if unreadable or empty."""
    with errors(show(source)):
        data = _stdin().read() if source == STDIO else regular_file(source).read_bytes()
    if not data:
        raise _empty(source)
    return data


def read_coded(source: str) -> Container:
    """The ``.fcb`` file at ``source`` (or stdin), parsed and verified, read no further than
    its header declares; FileError if unreadable, empty or not a valid ``.fcb`` file."""
    with errors(show(source)):
        if source == STDIO:
            stream = _stdin()
            start = stream.read(1)
            if not start:
                raise _empty(source)
            return read_container(stream, start)
        if regular_file(source).stat().st_size == 0:
            raise _empty(source)
        return read_container_file(source)


def check_writable(job: Job, force: bool) -> None:
    """FileError if the output exists and ``--force`` was not given."""
    if job.output is not None and not force and os.path.lexists(job.output):
        raise FileError(f"{job.out_name}: already exists (use --force to overwrite)")


def write_output(job: Job, data: bytes, force: bool) -> None:
    """Write ``data`` to stdout or, atomically, to the job's output file."""
    if job.output is None:
        stream = _binary_stream("stdout")
        stream.write(data)
        stream.flush()
        return
    check_writable(job, force)
    with errors(job.out_name):
        try:
            write_atomic(job.output, data, replace=force)
        except FileExistsError:  # created by someone else while this job ran
            raise FileError(f"{job.out_name}: already exists (use --force to overwrite)") from None


# --------------------------------------------------------------------------- batch runner


def _echo_err(message: str, bar: Any) -> None:
    if bar is not None and not bar.disable:
        bar.write(message, file=sys.stderr)
    else:
        click.echo(message, err=True)


def _sized(result: dict[str, Any]) -> str:
    """``"N bytes, B bpp, "`` of a coded file's result (empty where it has none)."""
    if "bytes" not in result:
        return ""
    return f"{result['bytes']:,} bytes, {result['bpp']:.3f} bpp, "


def run_jobs(
    jobs: Sequence[Job],
    work: Callable[[Job], dict[str, Any]],
    *,
    desc: str,
    as_json: bool,
    progress: bool | None,
) -> list[dict[str, Any]]:
    """Run ``work`` on every job; one error line per failed job, the rest go on.

    A single job without ``--json`` lets its :class:`FileError` through (one error line).
    Each result (``ok`` true or false) is printed as a JSON line when ``as_json``.
    """
    from tqdm import tqdm

    show_bar = progress if progress is not None else len(jobs) > 1 and sys.stderr.isatty()
    show_bar = show_bar and verbosity() >= 1
    results: list[dict[str, Any]] = []
    with tqdm(
        total=len(jobs), file=sys.stderr, disable=not show_bar, unit="file", desc=desc, leave=False
    ) as bar:
        for job in jobs:
            start = time.perf_counter()
            try:
                result = {"input": job.name, "output": job.out_name, "ok": True, **work(job)}
                if verbosity() >= 2:
                    seconds = time.perf_counter() - start
                    _echo_err(f"{job.name} -> {job.out_name}: {_sized(result)}{seconds:.2f} s", bar)
            except FileError as exc:
                if len(jobs) == 1 and not as_json:
                    raise
                _echo_err(f"fcodec: error: {exc.format_message()}", bar)
                result = {
                    "input": job.name,
                    "output": job.out_name,
                    "ok": False,
                    "error": exc.format_message(),
                }
            results.append(result)
            if as_json:
                click.echo(json.dumps(result))
            bar.update()
    return results


# --------------------------------------------------------------------------- images


def check_image(data: bytes, name: str) -> None:
    """FileError unless Pillow can open ``data`` (its header) and the picture fits a .fcb file;
    a cheap check before the model loads (damage further in is found while coding)."""
    from fusioncodec.sources import image_size

    with errors(name):
        width, height = image_size(data)
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise FileError(
            f"{name}: image is {width}x{height}; .fcb allows 1..{MAX_SIDE} pixels per side "
            f"and at most {MAX_PIXELS} pixels"
        )


def image_format(path: Path | None) -> str:
    """Pillow format for an output path from its extension (PNG for stdout / no extension)."""
    from PIL import Image

    if path is None or not path.suffix:
        return "PNG"
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise CliError(
            f"{show(path)}: cannot write images with extension {ext!r} (use .png, .jpg, .webp…)"
        )
    return fmt
