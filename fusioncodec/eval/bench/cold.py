"""Cold runs: a fresh ``fcodec`` process per phase, its wall time and peak RSS."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fusioncodec.eval.bench.options import COLD_PHASES, BenchError, BenchOptions
from fusioncodec.eval.bench.probes import finite, speed
from fusioncodec.messages import error_reason


def fcodec_command() -> list[str]:
    """How a user starts the CLI: the ``fcodec`` script beside this Python, else ``-m``."""
    script = Path(sys.executable).with_name("fcodec")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "fusioncodec.cli"]


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FCODEC_DEBUG", None)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


# Runs ``argv[2:]`` and reports its wall time and peak RSS as JSON.  A child inherits the
# peak RSS of the process it was forked from (Linux keeps it across exec), so measuring
# ``fcodec`` straight from this large process would report this process's peak; starting
# it from a small launcher keeps the inherited floor at the launcher's ~10 MB.
_LAUNCHER = r"""
import json, os, subprocess, sys, time
try:
    with open(sys.argv[1], "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            peak_kb = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)
        else:
            code = proc.wait()
            seconds, peak_kb = time.perf_counter() - start, None
    print(json.dumps({"seconds": seconds, "peak_kb": peak_kb, "exit": code}))
except OSError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def run_cold(args: list[str], env: dict[str, str], cmd: list[str] | None = None) -> dict[str, Any]:
    """Wall seconds and peak RSS of one fresh ``fcodec ARGS`` process (or of ``cmd``).

    Raises :class:`BenchError` with the child's last stderr line if it fails.
    """
    cmd = cmd or [*fcodec_command(), *args]
    with tempfile.TemporaryDirectory(prefix="fcodec-cold-") as tmp:
        err_path = Path(tmp) / "stderr"
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(err_path), *cmd]
        done = subprocess.run(launcher, env=env, capture_output=True, text=True, check=False)
        try:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            why = error_reason(RuntimeError(done.stderr))
            raise BenchError(f"fcodec {args[0]}: cold-run launcher failed: {why}") from None
        if "error" in result:
            raise BenchError(f"fcodec {args[0]}: cannot start {cmd[0]}: {result['error']}")
        if result["exit"] != 0:
            lines = [x for x in err_path.read_text(errors="replace").splitlines() if x.strip()]
            last = lines[-1].strip() if lines else f"exit status {result['exit']}"
            raise BenchError(f"fcodec {args[0]} failed: {last}")
    peak = result["peak_kb"]
    return {"seconds": result["seconds"], "peak_rss_mb": None if peak is None else peak / 1024}


def cold_median(
    args: list[str], env: dict[str, str], repeat: int, cmd: list[str] | None = None
) -> dict[str, Any]:
    """Median seconds and largest peak RSS of ``repeat`` cold runs."""
    runs = [run_cold(args, env, cmd) for _ in range(repeat)]
    peaks = [r["peak_rss_mb"] for r in runs if r["peak_rss_mb"] is not None]
    return {
        "seconds": finite(statistics.median(r["seconds"] for r in runs)),
        "peak_rss_mb": round(max(peaks), 1) if peaks else None,
    }


def bench_cold(
    image_path: Path,
    weights: Path,
    quality: float,
    device: str,
    work: Path,
    pixels: int,
    opts: BenchOptions,
) -> dict[str, Any]:
    """Fresh-interpreter ``fcodec encode`` and ``decode`` (both layers) on one device."""
    env = child_env(opts.threads)
    fcb = work / f"cold-{device}.fcb"
    model = ["--weights", str(weights), "--device", device, "--force"]
    jobs = {
        "encode": ["encode", str(image_path), "-o", str(fcb), "-q", repr(quality), *model],
        "decode_machine": ["decode", str(fcb), "-o", str(work / f"cold-{device}.machine.png")],
        "decode_human": ["decode", str(fcb), "-o", str(work / f"cold-{device}.human.png")],
    }
    jobs["decode_machine"] += ["--layer", "machine", *model]
    jobs["decode_human"] += ["--layer", "human", *model]
    out = {}
    for phase in COLD_PHASES:
        result = cold_median(jobs[phase], env, opts.cold_repeat)
        out[phase] = {**speed(result["seconds"], pixels), "peak_rss_mb": result["peak_rss_mb"]}
    return out


def bench_cold_cli(fcb: Path, opts: BenchOptions) -> dict[str, Any]:
    """``fcodec --help`` and ``fcodec info`` wall times (median of at least 3)."""
    env = child_env(opts.threads)
    repeat = max(3, opts.cold_repeat)
    out = {
        "command": " ".join(fcodec_command()),
        "help": cold_median(["--help"], env, repeat),
        "info": cold_median(["info", str(fcb)], env, repeat),
    }
    # The share of a cold encode/decode that is just importing torch and the codec.
    imports = [sys.executable, "-c", "import fusioncodec.codec"]
    out["import_codec"] = cold_median(["import"], env, opts.cold_repeat, imports)
    return out
