"""Throughput, scaling, fixed cost and memory of ``fcodec encode --engine ray`` against the
plain command line on the same pictures, in one run.

    python scripts/reproduce/ray_bench.py [--images DIR] [--count 16] [--repeat 3]
        [--out results/ray/bench.json]

Each configuration (the plain CLI with every core; Ray with 1 and with 2 workers of one
thread each) encodes the same ``--count`` pictures (default: the first 16 of Kodak, both
layers, quality 4) as a fresh ``fcodec encode DIR -o OUT --json`` process, ``--repeat``
times; the figures are the medians. Measured per run:

* ``fixed_s``: from the command's start to its first result row (Python, Ray's start,
  the workers' model load and first picture);
* ``steady_pictures_per_s``: the last three quarters of the rows over the time they took
  to come (the job's throughput once running); ``mp_per_s`` the same in megapixels;
* ``worker_pictures_per_s``: pictures per second of one worker, timed inside the workers
  (1 / the median of ``-v``'s per-file seconds: reading, coding and writing one file);
* ``wall_s`` and ``peak_rss_mb``: the whole command, and the peak resident memory of all its
  processes together (the driver, Ray's raylet, GCS and workers), sampled every 0.2 s.

Then ``scaling`` = X(2) / (2 X(1)) for the steady throughputs X, and ``break_even_pictures``:
from how many pictures the Ray engine (2 workers) finishes before the plain command line,
from the fixed costs and steady throughputs (None where it never does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

SHARED = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_once(images: Path, out: Path, engine: list[str]) -> dict[str, Any]:
    """One ``fcodec encode`` process: its timings and peak memory."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "fusioncodec.cli", "encode", str(images), "-o", str(out)]
    command += ["--json", "-v", *engine]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak[0] = max(peak[0], tree_rss(root))
            except psutil.Error:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    arrivals, rows = [], []
    assert proc.stdout is not None
    for line in proc.stdout:
        row = json.loads(line)
        if "summary" in row:
            continue
        arrivals.append(time.perf_counter() - start)
        rows.append(row)
    stderr = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0 or not all(r["ok"] for r in rows):
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    seconds = [float(line.rsplit(", ", 1)[1].split()[0]) for line in stderr.splitlines()
               if " -> " in line]  # fmt: skip
    pixels = statistics.mean(r["width"] * r["height"] for r in rows)
    first = len(rows) // 4  # rows may come in bursts: the last three quarters
    span = arrivals[-1] - arrivals[first]
    steady = (len(rows) - 1 - first) / span if span > 0 else None
    return {
        "wall_s": wall,
        "fixed_s": arrivals[0],
        "steady_pictures_per_s": steady,
        "mp_per_s": steady * pixels / 1e6 if steady else None,
        "worker_pictures_per_s": 1 / statistics.median(seconds) if seconds else None,
        "peak_rss_mb": peak[0] / 2**20,
        "pictures": len(rows),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = runs[0].keys()
    return {
        k: statistics.median(r[k] for r in runs) if runs[0][k] is not None else None
        for k in keys
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED / "data" / "kodak")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/ray/bench.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    images = work / "images"
    images.mkdir()
    for path in sorted(p for p in args.images.iterdir() if p.suffix == ".png")[: args.count]:
        shutil.copy(path, images)
    configs = {
        "cli": [],
        "ray-1": ["--engine", "ray", "--workers", "1", "--threads-per-worker", "1"],
        "ray-2": ["--engine", "ray", "--workers", "2", "--threads-per-worker", "1"],
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for repeat in range(args.repeat):
        for name, engine in configs.items():
            result = run_once(images, work / "out", engine)
            runs[name].append(result)
            print(json.dumps({"config": name, "repeat": repeat, **result}), flush=True)
    medians = {name: median_of(r) for name, r in runs.items()}
    x1, x2 = medians["ray-1"]["steady_pictures_per_s"], medians["ray-2"]["steady_pictures_per_s"]
    cli, ray2 = medians["cli"], medians["ray-2"]
    gap = 1 / cli["steady_pictures_per_s"] - 1 / ray2["steady_pictures_per_s"]
    break_even = (ray2["fixed_s"] - cli["fixed_s"]) / gap if gap > 0 else None
    report = {
        "command": "python scripts/reproduce/ray_bench.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "pictures": f"{args.count} from {args.images.name}, both layers, quality 4",
        "repeat": args.repeat,
        "medians": medians,
        "scaling_1_to_2_workers": x2 / (2 * x1),
        "break_even_pictures": break_even,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: report[k] for k in ("scaling_1_to_2_workers", "break_even_pictures")}))


if __name__ == "__main__":
    main()
