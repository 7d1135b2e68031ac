"""Inputs and outputs of the coding commands: pairing inputs with outputs, running a batch
where one bad input does not stop the rest, and reporting its result rows.

The work on one file is :mod:`fusioncodec.file_jobs` (shared with the Ray engine): outputs
are written atomically, existing files are kept unless ``--force`` is given, and an input
file is never overwritten (:func:`plan_outputs` checks that before any work).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import click

from fusioncodec.cli.common import CliError, FileError, show, verbosity
from fusioncodec.file_jobs import STDIO, Job, binary_stream, run_job
from fusioncodec.messages import error_reason


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
        if binary_stream("stdout").isatty():
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
    """Run ``work`` on every job in this process and report each result
    (:func:`report_rows`); a failed job does not stop the others."""

    def timed() -> Iterator[tuple[dict[str, Any], float]]:
        for job in jobs:
            start = time.perf_counter()
            row = run_job(job, work)
            yield row, time.perf_counter() - start

    return report_rows(timed(), len(jobs), desc=desc, as_json=as_json, progress=progress)


def report_rows(
    rows: Iterable[tuple[dict[str, Any], float]],
    total: int,
    *,
    desc: str,
    as_json: bool,
    progress: bool | None,
) -> list[dict[str, Any]]:
    """Report result rows (with the seconds each took) as they come: one error line per
    failed job, each row as a JSON line with ``as_json``, a progress bar over ``total``.

    A single job without ``--json`` that failed is raised as its :class:`FileError`.
    """
    from tqdm import tqdm

    show_bar = progress if progress is not None else total > 1 and sys.stderr.isatty()
    show_bar = show_bar and verbosity() >= 1
    results: list[dict[str, Any]] = []
    with tqdm(
        total=total, file=sys.stderr, disable=not show_bar, unit="file", desc=desc, leave=False
    ) as bar:
        for row, seconds in rows:
            if not row["ok"]:
                if total == 1 and not as_json:
                    raise FileError(row["error"])
                _echo_err(f"fcodec: error: {row['error']}", bar)
            elif verbosity() >= 2:
                _echo_err(f"{row['input']} -> {row['output']}: {_sized(row)}{seconds:.2f} s", bar)
            results.append(row)
            if as_json:
                click.echo(json.dumps(row))
            bar.update()
    return results


# --------------------------------------------------------------------------- images


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
