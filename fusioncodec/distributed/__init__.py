"""Whole datasets on Ray Data: encode and decode folders of pictures on many workers and
machines, with nothing lost when a worker dies.

Each worker is a long-lived Ray actor (a class given to ``map_batches``) that loads the
model once, from a weights path that every machine can read (the weights do not travel
through the object store), and codes one file per call (``batch_size=1``: a file that kills
its worker takes down only itself). Only paths travel; each worker reads its own input
bytes, so memory stays bounded however large the dataset.

The per-file work is :mod:`fusioncodec.file_jobs`, the command line's own: outputs, result
rows and error lines are those of ``fcodec encode/decode``, file by file, and outputs are
written whole or not at all. A job resumes: an output that exists is skipped (``force``
redoes it), so a rerun codes only what is missing or failed. A worker that dies is restarted
and its file retried ``retries`` times, then reported failed; the job always ends, and the
temporaries of its outputs left by killed workers are swept.

Folders are paths or URIs that pyarrow understands (``file://``, ``s3://``, ``gs://``,
``hdfs://``...). Local folders (and ``file://``) use the atomic writer; object stores write
each object whole on close, through pyarrow's file systems (not tested here). Ray is
imported only when a job runs: ``pip install 'fusioncodec[ray]'``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusioncodec.distributed.folders import RAY_NEEDS, Folder, FolderFiles, dataset_jobs
from fusioncodec.distributed.workers import Task, Worker
from fusioncodec.errors import ArgumentError
from fusioncodec.file_jobs import Files, Job, show
from fusioncodec.files import sweep_temporaries
from fusioncodec.messages import error_reason
from fusioncodec.nets.config import DEFAULT_QUALITY, checked_layer, checked_layers

if TYPE_CHECKING:
    import ray.data

__all__ = [
    "RAY_MISSING",
    "Engine",
    "Summary",
    "dataset_jobs",
    "decode_dataset",
    "encode_dataset",
    "machine_layers",
    "run_dataset_jobs",
    "task_for",
]

RAY_MISSING = f"the Ray engine needs Ray Data: {RAY_NEEDS}"
KILL_HOOK = "FUSIONCODEC_TEST_KILL_WORKER"  # tests: {"input": NAME, "marker": PATH, "every": bool}


@dataclass(frozen=True)
class Engine:
    """Where and how wide a job runs: ``address`` None starts a local Ray instance (or uses
    the one this process started), ``"auto"`` or ``"HOST:PORT"`` joins a cluster."""

    address: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    gpus_per_worker: float = 0.0
    retries: int = 3

    def __post_init__(self) -> None:
        if not (isinstance(self.workers, int) and self.workers >= 1):
            raise ArgumentError(f"workers must be a whole number of at least 1: {self.workers}")
        if not (isinstance(self.threads_per_worker, int) and self.threads_per_worker >= 1):
            raise ArgumentError(f"threads per worker must be at least 1: {self.threads_per_worker}")
        if not 0 <= self.gpus_per_worker <= 64:
            raise ArgumentError(f"GPUs per worker must be in [0, 64]: {self.gpus_per_worker}")
        if not (isinstance(self.retries, int) and 0 <= self.retries <= 100):
            raise ArgumentError(f"retries must be a whole number in [0, 100]: {self.retries}")


@dataclass(frozen=True)
class Summary:
    """What a job did: one result row per input (as ``fcodec --json`` prints them; skipped
    inputs have ``skipped: true``) and its wall-clock seconds."""

    rows: tuple[dict[str, Any], ...]
    seconds: float

    @property
    def done(self) -> int:
        return sum(r["ok"] and not r.get("skipped", False) for r in self.rows)

    @property
    def skipped(self) -> int:
        return sum(bool(r.get("skipped", False)) for r in self.rows)

    @property
    def failed(self) -> int:
        return sum(not r["ok"] for r in self.rows)


# --------------------------------------------------------------------------- the driver


def _ray(engine: Engine) -> Any:
    """Ray, connected: to ``engine.address``, or a local instance started here. Ray's own
    log lines stay off this process's stderr, which carries the jobs' error lines."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ArgumentError(RAY_MISSING) from None
    if ray.is_initialized():
        return ray
    local = engine.address is None
    quiet = "RAY_BACKEND_LOG_LEVEL" not in os.environ
    if quiet:  # the C++ core's errors about actor restarts are rows here; read at start
        os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    try:
        with _stderr_silenced():  # the C++ core prints a line when it starts
            ray.init(
                address=engine.address,
                num_cpus=max(os.cpu_count() or 1, engine.workers * engine.threads_per_worker)
                if local
                else None,
                include_dashboard=False if local else None,
                log_to_driver=False,
                logging_level="ERROR",
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "start Ray here" if local else f"join the Ray cluster at {engine.address}"
        raise ArgumentError(f"cannot {where}: {error_reason(exc)}") from None
    finally:
        if quiet:
            del os.environ["RAY_BACKEND_LOG_LEVEL"]
    return ray


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _workers(ray: Any, items: ray.data.Dataset, task: Task, engine: Engine) -> ray.data.Dataset:
    """``items`` mapped by a pool of ``engine.workers`` :class:`Worker` actors, one file per
    call and one call in flight per actor (a worker that dies takes only its own file), each
    dead actor restarted and its file retried ``engine.retries`` times."""
    size = min(engine.workers, items.count())
    pool = ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1)
    # the task travels in the class (pickled by value), not as constructor arguments in the
    # object store, which Ray warns may be lost for restarts
    worker = type("Worker", (Worker,), {"task": task})
    with warnings.catch_warnings():  # the retry settings have no named parameter in Ray 2.60
        warnings.simplefilter("ignore", DeprecationWarning)
        return items.map_batches(
            worker,
            batch_size=1,
            compute=pool,
            num_cpus=engine.threads_per_worker,
            num_gpus=engine.gpus_per_worker or None,
            max_restarts=-1,
            max_task_retries=engine.retries,
        )


def _kill_hook() -> dict[str, Any] | None:
    hook = os.environ.get(KILL_HOOK)
    return json.loads(hook) if hook else None


def run_dataset_jobs(
    jobs: Sequence[Job], task: Task, engine: Engine, formats: Sequence[str] = ()
) -> Iterator[tuple[dict[str, Any], float]]:
    """Run ``jobs`` on Ray workers; yields each result row (as ``fcodec --json`` prints it)
    with the seconds its worker spent, in the order of ``jobs``. Outputs that exist are
    skipped unless ``task.force``; a file whose worker died on every try is reported failed.
    Ray starts (or is joined) only when there is something to do."""
    if task.device == "cuda" and not engine.gpus_per_worker:
        raise ArgumentError("device 'cuda' on Ray workers needs GPUs per worker (e.g. 1)")
    files: Files = FolderFiles(task.source_fs, task.output_fs)
    local = task.output_fs is None
    skipped: dict[int, dict[str, Any]] = {}
    todo: list[dict[str, Any]] = []
    for position, (job, fmt) in enumerate(zip(jobs, formats or ["PNG"] * len(jobs), strict=True)):
        row = {"input": job.name, "output_name": job.out_name}
        if not task.force and job.output is not None and files.exists(job.output):
            skipped[position] = {
                "input": job.name, "output": job.out_name, "ok": True, "skipped": True
            }  # fmt: skip
        else:
            source = os.path.abspath(job.source) if task.source_fs is None else job.source
            output = os.path.abspath(str(job.output)) if local else str(job.output)
            todo.append({"position": position, "source": source, "output": output, **row,
                         "format": fmt})  # fmt: skip
    seen: set[int] = set()
    done = 0  # skipped rows are yielded where they stand among the others

    def skipped_before(position: int) -> Iterator[tuple[dict[str, Any], float]]:
        nonlocal done
        for at in range(done, position):
            if at in skipped:
                yield skipped[at], 0.0
        done = max(done, position)

    if todo:
        for row, seconds, position in _run_on_workers(todo, task, engine):
            yield from skipped_before(position)
            seen.add(position)
            yield row, seconds
    yield from skipped_before(len(jobs))
    for item in todo:  # whose every worker died: at the end, once that is sure
        if item["position"] not in seen:
            yield _lost(item, engine), 0.0


def _lost(item: dict[str, Any], engine: Engine) -> dict[str, Any]:
    error = f"{item['input']}: its worker died on each of {engine.retries + 1} tries; not coded"
    return {"input": item["input"], "output": item["output_name"], "ok": False, "error": error}


def _run_on_workers(
    todo: list[dict[str, Any]], task: Task, engine: Engine
) -> Iterator[tuple[dict[str, Any], float, int]]:
    """(row, seconds, position) of each item a worker finished, in the order of ``todo``
    (an item whose every worker died gives nothing); temporaries of killed writers swept."""
    ray = _ray(engine)
    _check_room(ray, engine)
    task = replace(task, kill_hook=_kill_hook())
    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks, context.enable_progress_bars
    saved_order = context.execution_options.preserve_order
    logger = logging.getLogger("ray.data")
    saved_level = logger.level
    # a dead worker's file is known from its missing row; rows come in the input's order
    context.max_errored_blocks, context.enable_progress_bars = -1, False
    context.execution_options.preserve_order = True
    logger.setLevel(logging.CRITICAL)  # each failure is a row; Ray would log it again
    try:
        items = ray.data.from_items(todo, override_num_blocks=len(todo))
        for item in _workers(ray, items, task, engine).iter_rows():
            yield json.loads(item["row"]), float(item["seconds"]), int(item["position"])
    finally:
        context.max_errored_blocks, context.enable_progress_bars = saved
        context.execution_options.preserve_order = saved_order
        logger.setLevel(saved_level)
        if task.output_fs is None:
            for item in todo:
                sweep_temporaries(Path(os.path.realpath(item["output"])))


def _check_room(ray: Any, engine: Engine) -> None:
    """ArgumentError unless some machine of the cluster can hold one worker (Ray would
    otherwise wait for one forever)."""
    need = {"CPU": engine.threads_per_worker, "GPU": engine.gpus_per_worker}
    for node in ray.nodes():
        have = node.get("Resources", {})
        if node.get("Alive") and all(have.get(k, 0) >= v for k, v in need.items() if v):
            return
    gpus = f" and {engine.gpus_per_worker:g} GPUs" if engine.gpus_per_worker else ""
    raise ArgumentError(
        f"no machine of the Ray cluster has {engine.threads_per_worker} CPUs{gpus} "
        "for one worker (see --threads-per-worker, --gpus-per-worker)"
    )


def _summary(rows: Iterator[tuple[dict[str, Any], float]]) -> Summary:
    start = time.perf_counter()
    collected = tuple(row for row, _ in rows)
    return Summary(collected, time.perf_counter() - start)


def _check_weights(weights: str | os.PathLike | None, qualities: Sequence[float]) -> str | None:
    """The weights path as workers get it, after its card and the qualities are checked."""
    from fusioncodec.weight_file import check_qualities

    check_qualities(weights, "scalable", qualities)
    return None if weights is None else os.path.abspath(os.fspath(weights))


def encode_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    layers: Sequence[str] = ("machine", "human"),
    quality: float = DEFAULT_QUALITY,
    human_quality: float | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    workers: int = 2,
    threads_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
    retries: int = 3,
    force: bool = False,
    address: str | None = None,
) -> Summary:
    """Encode every picture in ``src`` into ``dst/<stem>.fcb`` on Ray workers (the engine's
    arguments: :class:`Engine`); ``force`` redoes outputs that exist."""
    layers = checked_layers(layers)
    human_quality = quality if human_quality is None else human_quality
    checked = [quality, human_quality] if "human" in layers else [quality]
    engine = Engine(address, workers, threads_per_worker, gpus_per_worker, retries)
    options = {"layers": layers, "quality": quality, "human_quality": human_quality}
    task = task_for("encode", src, dst, weights, checked, device, engine, force, options)
    return _summary(run_dataset_jobs(dataset_jobs(src, dst, "encode", "machine"), task, engine))


def decode_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    layer: str = "auto",
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    workers: int = 2,
    threads_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
    retries: int = 3,
    force: bool = False,
    address: str | None = None,
) -> Summary:
    """Decode ``layer`` of every ``.fcb`` file in ``src`` into ``dst/<stem>.<layer>.png``
    on Ray workers (``auto``: each file's best layer)."""
    checked_layer(layer, also=("auto",))
    engine = Engine(address, workers, threads_per_worker, gpus_per_worker, retries)
    task = task_for("decode", src, dst, weights, [], device, engine, force, {"layer": layer})
    return _summary(run_dataset_jobs(dataset_jobs(src, dst, "decode", layer), task, engine))


def task_for(
    kind: str,
    src: str | os.PathLike,
    dst: str | os.PathLike | None,
    weights: str | os.PathLike | None,
    qualities: Sequence[float],
    device: str,
    engine: Engine,
    force: bool,
    options: dict[str, Any],
) -> Task:
    """The :class:`Task` of a job, once its weights and qualities are checked (a missing or
    invalid weight file fails here, before any worker starts)."""
    return Task(
        kind,
        _check_weights(weights, qualities),
        device,
        engine.threads_per_worker,
        force,
        options,
        Folder.of(src).fs,
        None if dst is None else Folder.of(dst).fs,
    )


def machine_layers(
    src: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    workers: int = 2,
    threads_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
) -> ray.data.Dataset:
    """A lazy Ray dataset of the machine layers of the ``.fcb`` files in ``src``: rows of
    ``name`` (the file's name) and ``image`` (HxWx3 uint8), decoded on workers, for chaining
    a recognition stage with ``map_batches`` without writing pictures."""
    engine = Engine(address, workers, threads_per_worker, gpus_per_worker)
    ray = _ray(engine)
    task = task_for("machine", src, None, weights, [], device, engine, False, {})
    folder = Folder.of(src)
    names = [n for n in folder.names() if n.lower().endswith(".fcb")]
    if not names:
        raise ArgumentError(f"{show(os.fspath(src))}: no .fcb files in this folder")
    items = [{"source": folder.join(n)} for n in names]
    return _workers(ray, ray.data.from_items(items, override_num_blocks=len(items)), task, engine)
