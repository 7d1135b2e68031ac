"""Rate-distortion sweeps: code every image for real with each codec and measure it.

The engine behind ``fcodec eval human``: :func:`sweep` runs one :class:`Task` per (image,
codec) -- all qualities of that codec on that image -- in-process or in a pool of worker
processes (one torch thread each). Every coded point becomes a record (bytes, bpp,
PSNR-RGB, MS-SSIM, encode/decode time); :mod:`fusioncodec.eval.curves` turns records into
results files, curves and BD tables. Codecs and their rates are those of
:mod:`fusioncodec.eval.runners`.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusioncodec import metrics
from fusioncodec.eval.runners import LEARNED, SCALABLE, Coded, ModelSpec, runner
from fusioncodec.messages import one_line


class SweepError(Exception):
    """A failure while coding or measuring; the message is one line naming codec and image."""


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Task:
    """All qualities of one codec (or the fusioncodec pair) on one image."""

    path: str
    key: str
    plan: tuple[tuple[str, tuple[float, ...]], ...]

    @property
    def points(self) -> int:
        return sum(len(qualities) for _, qualities in self.plan)


def make_tasks(
    images: Sequence[tuple[str, Path]], qualities: dict[str, Sequence[float]]
) -> list[Task]:
    """Tasks, slowest codecs first (a better-balanced pool); the fusioncodec pair shares one."""
    groups: list[tuple[tuple[str, tuple[float, ...]], ...]] = []
    scalable = tuple((c, tuple(qualities[c])) for c in SCALABLE if c in qualities)
    if scalable:
        groups.append(scalable)
    order = ("baseline", "vvc", "avif", "hevc", "webp", "jpeg")
    groups += [((c, tuple(qualities[c])),) for c in order if c in qualities]
    return [Task(str(path), key, plan) for plan in groups for key, path in images]


# --------------------------------------------------------------------------- workers


def init_worker() -> None:
    """Pool initializer: one thread per worker for torch, OpenMP and MKL -- the pool is the
    parallelism.  torch itself is imported only by tasks that need it (its default thread
    count then comes from ``OMP_NUM_THREADS``)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _one_line(exc: BaseException) -> str:
    return one_line(str(exc)) or type(exc).__name__


def _measure(key: str, codec: str, quality: float, ref: np.ndarray, coded: Coded) -> dict[str, Any]:
    h, w = ref.shape[:2]
    out = coded.decoded
    if out.shape != ref.shape:
        raise ValueError(f"decoded picture is {out.shape[1]}x{out.shape[0]}, not {w}x{h}")
    ssim = metrics.ms_ssim_rgb(ref, out)
    machine = coded.machine_size
    return {
        "image": key,
        "codec": codec,
        "quality": quality,
        "width": w,
        "height": h,
        "bytes": coded.size,
        "bpp": metrics.bpp(coded.size, w * h),
        "psnr_rgb": metrics.psnr_rgb(ref, out),
        "ms_ssim_rgb": ssim,
        "ms_ssim_db": metrics.msssim_db(ssim),
        "machine_bytes": machine,
        "machine_bpp": None if machine is None else metrics.bpp(machine, w * h),
        "encode_s": coded.encode_s,
        "decode_s": coded.decode_s,
    }


def reference_pixels(path: str) -> np.ndarray:
    """The reference a coded picture is measured against: HxWx3 uint8 RGB of an image file
    as the codec converts its modes (alpha over white, grey replicated:
    :func:`fusioncodec.image.to_rgb_array`)."""
    from PIL import Image

    from fusioncodec.image import to_rgb_array

    with Image.open(path) as im:
        im.load()
        return np.ascontiguousarray(to_rgb_array(im))


def run_task(task: Task, spec: ModelSpec) -> list[dict[str, Any]]:
    """Code ``task``'s image at each planned quality; SweepError (one line) on any failure."""
    from PIL import Image

    name = Path(task.path).name
    try:
        ref = reference_pixels(task.path)
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types
        raise SweepError(f"{name}: cannot read image ({_one_line(exc)})") from None
    image = Image.fromarray(ref, "RGB")
    records = []
    for codec, qualities in task.plan:
        roundtrip = runner(codec, spec)
        for q in qualities:
            quality = q if codec in LEARNED else int(q)
            try:
                records.append(_measure(task.key, codec, quality, ref, roundtrip(image, q)))
            except SweepError:
                raise
            except Exception as exc:  # noqa: BLE001 - report any codec failure in one line
                raise SweepError(
                    f"{codec} failed on {name} at quality {q:g}: {_one_line(exc)}"
                ) from None
    return records


def _stop_pool(pool: ProcessPoolExecutor, futures: Iterable[Future]) -> None:
    """Cancel what has not started and end this pool's own worker processes."""
    for future in futures:
        future.cancel()
    processes = dict(getattr(pool, "_processes", None) or {})
    for process in processes.values():
        with suppress(Exception):
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes.values():
        with suppress(Exception):
            process.join(5)


def sweep(
    tasks: Sequence[Task],
    spec: ModelSpec,
    jobs: int = 1,
    on_done: Callable[[Task], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every task (``jobs`` worker processes, in-process for 1); records in task order."""
    results: dict[int, list[dict[str, Any]]] = {}
    if jobs <= 1 or len(tasks) <= 1:
        import torch  # one thread here too: the same conditions as in a worker

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for i, task in enumerate(tasks):
                results[i] = run_task(task, spec)
                if on_done:
                    on_done(task)
        finally:
            torch.set_num_threads(threads)
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding torch
        pool = ProcessPoolExecutor(
            max_workers=min(jobs, len(tasks)), mp_context=context, initializer=init_worker
        )
        futures = {pool.submit(run_task, task, spec): i for i, task in enumerate(tasks)}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    i = futures[future]
                    results[i] = future.result()  # raises the worker's SweepError
                    if on_done:
                        on_done(tasks[i])
        except BaseException:
            _stop_pool(pool, futures)
            raise
        pool.shutdown(wait=True)
    return [record for i in range(len(tasks)) for record in results[i]]
