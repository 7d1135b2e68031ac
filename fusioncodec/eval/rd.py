"""Rate-distortion sweeps: code every image for real with each codec, measure, summarise.

The engine behind ``fcodec eval human`` (and the successor of ``scripts/measure_rd.py``):

* :func:`sweep` runs one task per (image, codec) -- all qualities of that codec on that image --
  in-process or in a pool of worker processes (one torch thread each);
* every coded point becomes a record (bytes, bpp, PSNR-RGB, MS-SSIM, encode/decode time);
* :func:`results_json` turns the records of one codec into CompressAI's results layout
  (``{"name", "description", "results": {"quality", "bpp", "psnr-rgb", "ms-ssim-rgb", ...}}``)
  with the per-image values as in ``shared/anchors/kodak/measured-pillow-*.json``;
* :func:`bd_table` compares every curve with every anchor (BD-rate at equal PSNR-RGB,
  BD-PSNR at equal rate, BD-rate at equal MS-SSIM in dB).

Rates: fusioncodec (human) counts the whole ``.fcb`` file (header + both layers) and also
records the machine layer's share (the stripped file); fusioncodec-machine counts the
stripped file alone; the baseline counts its payload; classical codecs their file bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from fusioncodec import metrics
from fusioncodec.messages import one_line

CODECS = ("fusioncodec", "fusioncodec-machine", "baseline", "jpeg", "webp", "avif", "hevc", "vvc")
LEARNED = ("fusioncodec", "fusioncodec-machine", "baseline")
SCALABLE = ("fusioncodec", "fusioncodec-machine")
LEARNED_QUALITIES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
LABELS = {
    "fusioncodec": "fusioncodec (human layer)",
    "fusioncodec-machine": "fusioncodec (machine layer)",
    "baseline": "single-layer LIC (baseline)",
}
CSV_COLUMNS = (
    "image",
    "codec",
    "quality",
    "width",
    "height",
    "bytes",
    "bpp",
    "psnr_rgb",
    "ms_ssim_rgb",
    "ms_ssim_db",
    "machine_bytes",
    "machine_bpp",
    "encode_s",
    "decode_s",
)


class SweepError(Exception):
    """A failure while coding or measuring; the message is one line naming codec and image."""


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ModelSpec:
    """What the learned codecs need in a worker: weight files and the device."""

    weights: str | None = None
    baseline: str | None = None
    device: str = "cpu"
    machine_quality: float | None = None


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


@cache
def _scalable(weights: str | None, device: str) -> Any:
    from fusioncodec.codec import Codec
    from fusioncodec.weights import load

    return Codec(load(weights, "scalable"), device)


@cache
def _baseline(weights: str | None, device: str) -> Any:
    from fusioncodec.codec import SingleLayerRunner
    from fusioncodec.weights import load

    return SingleLayerRunner(load(weights, "baseline"), device)


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


def _measure(
    key: str,
    codec: str,
    quality: float,
    ref: np.ndarray,
    out: np.ndarray,
    n_bytes: int,
    times: tuple[float, float],
    machine_bytes: int | None = None,
) -> dict[str, Any]:
    h, w = ref.shape[:2]
    if out.shape != ref.shape:
        raise ValueError(f"decoded picture is {out.shape[1]}x{out.shape[0]}, not {w}x{h}")
    ssim = metrics.ms_ssim_rgb(ref, out)
    return {
        "image": key,
        "codec": codec,
        "quality": quality,
        "width": w,
        "height": h,
        "bytes": n_bytes,
        "bpp": metrics.bpp(n_bytes, w, h),
        "psnr_rgb": metrics.psnr_rgb(ref, out),
        "ms_ssim_rgb": ssim,
        "ms_ssim_db": metrics.msssim_db(ssim),
        "machine_bytes": machine_bytes,
        "machine_bpp": None if machine_bytes is None else metrics.bpp(machine_bytes, w, h),
        "encode_s": times[0],
        "decode_s": times[1],
    }


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _code_scalable(
    name: str, q: float, image: Any, ref: np.ndarray, key: str, spec: ModelSpec
) -> dict[str, Any]:
    from fusioncodec.container import Container

    codec = _scalable(spec.weights, spec.device)
    if name == "fusioncodec":
        mq = q if spec.machine_quality is None else spec.machine_quality
        data, t_enc = _timed(lambda: codec.encode(image, ("machine", "human"), mq, q))
        decoded, t_dec = _timed(lambda: codec.decode(data, "human"))
        machine = len(Container.from_bytes(data).without_human().to_bytes())
        return _measure(key, name, q, ref, np.asarray(decoded), len(data), (t_enc, t_dec), machine)
    data, t_enc = _timed(lambda: codec.encode(image, ("machine",), q))
    stripped = Container.from_bytes(data).without_human().to_bytes()
    decoded, t_dec = _timed(lambda: codec.decode(stripped, "machine"))
    return _measure(key, name, q, ref, np.asarray(decoded), len(stripped), (t_enc, t_dec))


def _code_baseline(
    q: float, image: Any, ref: np.ndarray, key: str, spec: ModelSpec
) -> dict[str, Any]:
    runner = _baseline(spec.baseline, spec.device)
    w, h = image.size
    payload, t_enc = _timed(lambda: runner.encode(image, q))
    decoded, t_dec = _timed(lambda: runner.decode(payload, w, h, q))
    return _measure(key, "baseline", q, ref, np.asarray(decoded), len(payload), (t_enc, t_dec))


def _code_classical(name: str, q: float, image: Any, ref: np.ndarray, key: str) -> dict[str, Any]:
    from fusioncodec.eval import classical

    codec = classical.get(name)
    h, w = ref.shape[:2]
    data, t_enc = _timed(lambda: codec.encode(image, int(q)))
    decoded, t_dec = _timed(lambda: codec.decode(data, w, h))
    return _measure(key, name, int(q), ref, decoded, len(data), (t_enc, t_dec))


def read_rgb(path: str) -> np.ndarray:
    """HxWx3 uint8 RGB of an image file, converted as the codec does (alpha over white,
    grey replicated: :func:`fusioncodec.image.to_rgb_array`, imported only for non-RGB
    files since it pulls in torch and the networks)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode == "RGB" and "transparency" not in im.info:
            return np.array(im)
        from fusioncodec.image import to_rgb_array

        return np.ascontiguousarray(to_rgb_array(im))


def run_task(task: Task, spec: ModelSpec) -> list[dict[str, Any]]:
    """Code ``task``'s image at each planned quality; SweepError (one line) on any failure."""
    from PIL import Image

    name = Path(task.path).name
    try:
        ref = read_rgb(task.path)
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types
        raise SweepError(f"{name}: cannot read image ({_one_line(exc)})") from None
    image = Image.fromarray(ref, "RGB")
    records = []
    for codec, qualities in task.plan:
        for q in qualities:
            try:
                if codec in SCALABLE:
                    records.append(_code_scalable(codec, q, image, ref, task.key, spec))
                elif codec == "baseline":
                    records.append(_code_baseline(q, image, ref, task.key, spec))
                else:
                    records.append(_code_classical(codec, q, image, ref, task.key))
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


# --------------------------------------------------------------------------- results


def _finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null (CompressAI files are strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def dumps(data: Any) -> str:
    return json.dumps(_finite(data), indent=1, allow_nan=False) + "\n"


def _mean(values: Sequence[float | None]) -> float:
    """Mean of the finite values; NaN if there are none (or inf if a value is +inf)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(xs)) if xs else float("nan")


def results_json(
    codec: str,
    label: str,
    description: str,
    qualities: Sequence[float],
    records: Sequence[dict[str, Any]],
    image_keys: Sequence[str],
    images: str,
) -> dict[str, Any]:
    """One codec's records in CompressAI's layout, with per-image values and the qualities."""
    by_q: dict[float, list[dict[str, Any]]] = {float(q): [] for q in qualities}
    per_image: dict[str, list[dict[str, Any]]] = {key: [] for key in image_keys}
    for r in records:
        by_q[float(r["quality"])].append(r)
        entry = {
            "q": r["quality"],
            "bpp": r["bpp"],
            "psnr": r["psnr_rgb"],
            "msssim": r["ms_ssim_rgb"],
            "t": r["encode_s"],
            "t_dec": r["decode_s"],
            "bytes": r["bytes"],
        }
        if r["machine_bpp"] is not None:
            entry["machine_bpp"] = r["machine_bpp"]
        per_image[r["image"]].append(entry)
    rows = [by_q[float(q)] for q in qualities]
    results: dict[str, list[Any]] = {
        "quality": list(qualities),
        "bpp": [_mean([r["bpp"] for r in row]) for row in rows],
        "psnr-rgb": [_mean([r["psnr_rgb"] for r in row]) for row in rows],
        "ms-ssim-rgb": [_mean([r["ms_ssim_rgb"] for r in row]) for row in rows],
        "encoding_time": [_mean([r["encode_s"] for r in row]) for row in rows],
        "decoding_time": [_mean([r["decode_s"] for r in row]) for row in rows],
    }
    if any(r["machine_bpp"] is not None for r in records):
        results["machine-bpp"] = [_mean([r["machine_bpp"] for r in row]) for row in rows]
    return {
        "name": label,
        "description": f"{description}; images: {images} ({len(image_keys)})",
        "codec": codec,
        "n_images": len(image_keys),
        "results": results,
        "per_image": per_image,
    }


def results_csv(records: Sequence[dict[str, Any]]) -> str:
    """One row per image x codec x quality (NaN as an empty cell)."""

    def cell(value: Any) -> Any:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return repr(value)
        return value

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow([cell(r[c]) for c in CSV_COLUMNS])
    return buffer.getvalue()


# --------------------------------------------------------------------------- curves and BD


@dataclass
class Curve:
    """A rate-quality curve: from this run, or read from a results JSON (``external``)."""

    key: str
    label: str
    bpp: list[float]
    psnr: list[float]
    msssim: list[float] | None = None
    external: bool = False
    source: str = ""
    quality: list[Any] = field(default_factory=list)

    @classmethod
    def from_results(
        cls, key: str, data: dict[str, Any], external: bool = False, source: str = ""
    ) -> Curve:
        """From a CompressAI-layout dict; ValueError if ``results.bpp``/``psnr-rgb`` are bad."""
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, dict):
            raise ValueError("not a CompressAI results file (no 'results' object)")

        def numbers(name: str) -> list[float] | None:
            values = results.get(name)
            if values is None:
                return None
            if not isinstance(values, list) or not all(
                v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                for v in values
            ):
                raise ValueError(f"results.{name} is not a list of numbers")
            return [float("nan") if v is None else float(v) for v in values]

        rates, psnr = numbers("bpp"), numbers("psnr-rgb")
        if rates is None or psnr is None:
            raise ValueError("not a CompressAI results file (needs results.bpp and psnr-rgb)")
        if len(rates) != len(psnr) or not rates:
            raise ValueError("results.bpp and results.psnr-rgb differ in length (or are empty)")
        msssim = numbers("ms-ssim-rgb")
        if msssim is not None and (len(msssim) != len(rates) or all(math.isnan(v) for v in msssim)):
            msssim = None
        label = str(data.get("name") or key)
        return cls(
            key,
            label,
            rates,
            psnr,
            msssim,
            external,
            source,
            list(results.get("quality") or []),
        )

    def points(self, metric: str) -> tuple[list[float], list[float]]:
        """(bpp, quality) pairs with finite values; ``metric`` is psnr or msssim (in dB)."""
        if metric == "psnr":
            ys = self.psnr
        elif self.msssim is None:
            return [], []
        else:
            ys = [metrics.msssim_db(v) for v in self.msssim]
        pairs = [
            (x, y) for x, y in zip(self.bpp, ys, strict=True) if math.isfinite(x + y) and x > 0
        ]
        return [x for x, _ in pairs], [y for _, y in pairs]


def load_curve(path: Path, key: str | None = None) -> Curve:
    """A results JSON (CompressAI layout) as an external curve; ValueError/OSError on failure."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    try:
        return Curve.from_results(key or path.stem, data, external=True, source=str(path))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


BD_METRICS = {
    # column name: (quality measure, function, unit)
    "bd_rate_psnr": ("psnr", metrics.bd_rate, "%"),
    "bd_psnr": ("psnr", metrics.bd_psnr, "dB"),
    "bd_rate_msssim": ("msssim", metrics.bd_rate, "%"),
}


def _why(exc: ValueError) -> str:
    text = str(exc)
    if "four" in text:
        return "< 4 points"
    if "share no" in text:
        return "no overlap"
    return "bad values"


def bd_table(curves: Sequence[Curve], anchors: Sequence[Curve]) -> list[dict[str, Any]]:
    """One row per (curve, anchor): each BD measure, or None with a note saying why."""
    rows = []
    for anchor in anchors:
        for curve in curves:
            row: dict[str, Any] = {"curve": curve.key, "anchor": anchor.key, "notes": {}}
            for name, (measure, fn, _) in BD_METRICS.items():
                ra, qa = anchor.points(measure)
                rt, qt = curve.points(measure)
                if measure == "msssim" and (not qa or not qt):
                    row[name], row["notes"][name] = None, "no MS-SSIM"
                    continue
                try:
                    row[name] = fn(ra, qa, rt, qt)
                except ValueError as exc:
                    row[name], row["notes"][name] = None, _why(exc)
            rows.append(row)
    return rows


def bd_markdown(
    rows: Sequence[dict[str, Any]], curves: Sequence[Curve], anchors: Sequence[Curve], title: str
) -> str:
    """The BD tables as Markdown: one table per measure, a row per curve, a column per anchor."""
    cells = {(r["curve"], r["anchor"]): r for r in rows}
    heads = {
        "bd_rate_psnr": "BD-rate (%) at equal PSNR-RGB; negative: fewer bits than the anchor",
        "bd_psnr": "BD-PSNR (dB) at equal rate; positive: better than the anchor",
        "bd_rate_msssim": "BD-rate (%) at equal MS-SSIM (dB); negative: fewer bits",
    }
    lines = [f"# {title}", ""]
    for name, (_, _, unit) in BD_METRICS.items():
        lines += [f"## {heads[name]}", ""]
        lines.append("| curve | " + " | ".join(f"vs {a.key}" for a in anchors) + " |")
        lines.append("|---|" + "---:|" * len(anchors))
        for curve in curves:
            out = []
            for anchor in anchors:
                row = cells[(curve.key, anchor.key)]
                value = row[name]
                if curve.key == anchor.key:
                    out.append("(anchor)")
                elif value is None:
                    out.append(f"n/a ({row['notes'][name]})")
                elif unit == "%":
                    out.append(f"{value:+.1f}%")
                else:
                    out.append(f"{value:+.2f} dB")
            lines.append(f"| {curve.key} | " + " | ".join(out) + " |")
        lines.append("")
    lines.append(
        "Bjontegaard deltas: cubic fits of log-rate against quality (BD-rate) or of quality "
        "against log-rate (BD-PSNR), averaged over the range both curves cover. "
        "MS-SSIM in dB: -10 log10(1 - MS-SSIM)."
    )
    return "\n".join(lines) + "\n"
