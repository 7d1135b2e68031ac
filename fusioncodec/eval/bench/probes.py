"""Clocks and memory probes: median wall time of repeated calls, per-phase peak RSS (Linux
``/proc`` high-water mark, else ``ru_maxrss``) and peak CUDA allocation."""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fusioncodec.eval.bench.options import MB

if TYPE_CHECKING:
    import torch


def sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeat: int, device: torch.device) -> float:
    """Median seconds of ``repeat`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _status_kb(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (VmRSS, VmHWM), None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _maxrss_mb(ru_maxrss: int) -> float:
    """ru_maxrss in MiB (kilobytes on Linux, bytes on macOS)."""
    return ru_maxrss / (MB if sys.platform == "darwin" else 1024)


def _rss_now_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def _process_peak_mb() -> float:
    import resource

    return _maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def memory_method() -> dict[str, str]:
    """How peak memory is measured on this machine (goes into the report)."""
    warm = (
        "per phase: RSS high-water mark (VmHWM), reset via /proc/self/clear_refs before it"
        if _reset_hwm()
        else "ru_maxrss: peak RSS of this process so far (not resettable here), not per phase"
    )
    return {
        "warm": warm,
        "cold": "per phase: ru_maxrss of the fresh fcodec process (os.wait4 in a small launcher)",
        "cuda": "torch.cuda.max_memory_allocated, reset before each phase",
    }


@contextmanager
def peak_memory(device: torch.device, into: dict[str, Any]) -> Iterator[None]:
    """Record the peak RSS (and CUDA allocation) of the enclosed work into ``into``."""
    import torch

    resettable = _reset_hwm()
    before = _rss_now_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if resettable:
        hwm = _status_kb("VmHWM")
        peak = hwm / 1024 if hwm is not None else _process_peak_mb()
    else:
        peak = _process_peak_mb()
    into["peak_rss_mb"] = round(peak, 1)
    if before is not None:
        into["rss_before_mb"] = round(before, 1)
    if device.type == "cuda":
        into["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / MB, 1)


def finite(value: float, digits: int = 6) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def speed(seconds: float, pixels: int) -> dict[str, Any]:
    return {
        "seconds": finite(seconds),
        "mp_per_s": finite(pixels / 1e6 / seconds) if seconds > 0 else None,
    }
