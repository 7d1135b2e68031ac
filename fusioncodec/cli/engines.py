"""Where ``fcodec encode/decode`` run their files: in this process (``--engine local``, the
default) or on Ray workers (``--engine ray``, :mod:`fusioncodec.distributed`).

Both engines run the same per-file work (:mod:`fusioncodec.file_jobs`) on the same planned
jobs and report rows through :func:`~fusioncodec.cli.jobs.report_rows`, so outputs, ``--json``
rows, error lines and exit codes are the same file by file. The Ray engine also resumes: an
output that exists is skipped (``--force`` redoes it) where the local engine refuses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fusioncodec.cli.common import CliError, show
from fusioncodec.cli.jobs import plan_outputs, report_rows
from fusioncodec.file_jobs import STDIO

if TYPE_CHECKING:
    from fusioncodec.distributed import Engine, Task
    from fusioncodec.file_jobs import Job

F = TypeVar("F", bound=Callable[..., Any])
KEY = "fcodec.engine"
RAY_ONLY = ("address", "workers", "threads_per_worker", "gpus_per_worker", "retries")


def engine_options(f: F) -> F:
    """``--engine local|ray`` and the Ray engine's ``--address``, ``--workers``,
    ``--threads-per-worker``, ``--gpus-per-worker`` and ``--retries``."""

    def keep(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        given = ctx.get_parameter_source(param.name or "") != click.core.ParameterSource.DEFAULT
        ctx.meta.setdefault(KEY, {})[param.name] = (value, given)

    options: list[tuple[str, dict[str, Any]]] = [
        ("--engine", {"type": click.Choice(["local", "ray"]), "default": "local",
         "help": "Run here, or on Ray workers (pip install 'fusioncodec[ray]'), which skip "
         "outputs that exist (a rerun resumes)."}),
        ("--address", {"metavar": "auto|HOST:PORT",
         "help": "Ray: join this cluster (default: start Ray here)."}),
        ("--workers", {"type": click.IntRange(1, 10_000), "metavar": "N", "default": 2,
         "help": "Ray: workers, each loading the model once."}),
        ("--threads-per-worker", {"type": click.IntRange(1, 1024), "metavar": "T", "default": 1,
         "help": "Ray: CPU threads (and CPUs reserved) per worker."}),
        ("--gpus-per-worker", {"type": click.FloatRange(0, 64), "metavar": "G", "default": 0.0,
         "help": "Ray: GPUs per worker (fractions share one)."}),
        ("--retries", {"type": click.IntRange(0, 100), "metavar": "N", "default": 3,
         "help": "Ray: tries after a worker dies on a file, before it is failed."}),
    ]  # fmt: skip
    for name, kwargs in reversed(options):
        f = click.option(name, expose_value=False, callback=keep, show_default=True, **kwargs)(f)
    return f


def chosen_engine() -> Engine | None:
    """The Ray engine the options ask for, or None for the local engine."""
    chosen = click.get_current_context().meta.get(KEY, {})
    if chosen.get("engine", ("local", False))[0] == "local":
        given = [name for name in RAY_ONLY if chosen.get(name, (None, False))[1]]
        if given:
            option = "--" + given[0].replace("_", "-")
            raise CliError(f"{option} needs --engine ray")
        return None
    from fusioncodec.distributed import Engine

    return Engine(*(chosen[name][0] for name in RAY_ONLY))


def planned_jobs(
    inputs: Sequence[str],
    output: str | None,
    name_for: Callable[[str], str],
    *,
    kind: str,
    layer: str,
    engine: Engine | None,
    as_json: bool,
) -> list[Job]:
    """The jobs of the inputs: files as given, a folder as the pictures (``encode``) or
    ``.fcb`` files (``decode``) in it, written to ``-o DIR`` or beside them; a URI
    (``s3://``...) names a folder for the Ray engine, whose output is a folder or URI."""
    uris = [i for i in [*inputs, output or ""] if "://" in i]
    if engine is not None and (STDIO in inputs or output == STDIO):
        raise CliError("--engine ray codes files: not stdin or stdout (-)")
    if uris and engine is None:
        raise CliError(f"{show(uris[0])}: a URI needs --engine ray")
    if uris and not (len(inputs) == 1 and "://" in inputs[0]):
        raise CliError("a URI works as the one input (a folder), with -o DIR or -o URI")
    if uris:
        if output is None:
            raise CliError("a URI input needs -o DIR or -o URI")
        from fusioncodec.distributed import dataset_jobs
        from fusioncodec.errors import FusionCodecError

        try:
            return dataset_jobs(inputs[0], output, kind, layer)
        except FusionCodecError as exc:
            raise CliError(str(exc)) from None
    if len(inputs) == 1 and os.path.isdir(inputs[0]):
        inputs, output = _folder_inputs(inputs[0], output, kind)
    return plan_outputs(inputs, output, name_for, as_json=as_json)


def _folder_inputs(folder: str, output: str | None, kind: str) -> tuple[list[str], str]:
    """The files a folder input stands for, and ``-o`` as the folder their outputs go to
    (the folder itself without ``-o``)."""
    from pathlib import Path

    from fusioncodec.distributed.folders import Folder
    from fusioncodec.errors import ArgumentError

    try:
        inputs = [str(Path(folder) / name) for name in Folder(folder).inputs(kind, folder)]
    except ArgumentError as exc:
        raise CliError(str(exc)) from None
    if output == STDIO:
        raise CliError("-o - (stdout) takes a single input; use -o DIR for a folder")
    if output is None:
        return inputs, os.path.join(folder, "")
    target = Path(output)
    if not target.is_dir() and (target.exists() or target.suffix) and not output.endswith("/"):
        raise CliError(
            f"{show(output)} names a file, but a folder input needs -o DIR "
            f"(write {show(output)}/ to make a directory of that name)"
        )
    return inputs, os.path.join(output, "")


def run_on_ray(
    jobs: Sequence[Job],
    task: Task,
    engine: Engine,
    *,
    formats: Sequence[str] = (),
    desc: str,
    as_json: bool,
    progress: bool | None,
) -> list[dict[str, Any]]:
    """Run ``jobs`` on Ray workers and report each row as it comes back.

    The Ray driver runs in a child process whose standard streams go to a log file: Ray
    prints worker deaths and retries on the driver's stdout, which here carries ``--json``
    rows and data. The log is kept (and named) only if the driver itself fails.
    """
    import multiprocessing
    import tempfile

    log = tempfile.NamedTemporaryFile(prefix="fcodec-ray-", suffix=".log", delete=False)
    log.close()
    context = multiprocessing.get_context("spawn")
    rows_out, rows_in = context.Pipe(duplex=False)
    driver = context.Process(
        target=drive, args=(rows_in, list(jobs), task, engine, list(formats), log.name)
    )
    received = Received(rows_out, log.name)
    try:
        driver.start()
        rows_in.close()
        return report_rows(received, len(jobs), desc=desc, as_json=as_json, progress=progress)
    finally:
        rows_out.close()
        _stop(driver)
        if not received.lost:
            os.unlink(log.name)


def _stop(driver: Any) -> None:
    """Wait for the driver process to end; one still running (this command stopped early)
    is interrupted, so that it sweeps its temporaries and stops Ray, then killed."""
    import signal

    if driver.pid is None:
        return
    driver.join(timeout=20)
    if driver.is_alive():
        os.kill(driver.pid, signal.SIGINT)
        driver.join(timeout=30)
    if driver.is_alive():
        driver.kill()
        driver.join()


class Received:
    """The rows the driver process sends, as ``(row, seconds)``; ``lost`` once it ended
    without saying it was done (its log is then kept and named)."""

    def __init__(self, rows: Any, log: str) -> None:
        self.rows, self.log, self.lost = rows, log, False

    def __iter__(self) -> Iterator[tuple[dict[str, Any], float]]:
        while True:
            try:
                kind, value = self.rows.recv()
            except EOFError:
                self.lost = True
                raise CliError(
                    f"the Ray driver ended unexpectedly; its log: {show(self.log)}"
                ) from None
            if kind == "done":
                return
            if kind == "error":
                raise CliError(value)
            yield value


def drive(
    rows: Any, jobs: list[Job], task: Task, engine: Engine, formats: list[str], log: str
) -> None:
    """The child process of :func:`run_on_ray`: runs the jobs, sends ``("row", (row,
    seconds))`` for each, then ``("done", None)``, or ``("error", message)``."""
    from fusioncodec.distributed import run_dataset_jobs
    from fusioncodec.errors import FusionCodecError

    with open(log, "ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    try:
        try:
            for item in run_dataset_jobs(jobs, task, engine, formats):
                rows.send(("row", item))
        except FusionCodecError as exc:
            rows.send(("error", str(exc)))
        else:
            rows.send(("done", None))
    except BrokenPipeError:
        pass  # the command stopped reading (its one file failed): nothing left to say
