"""Rate and quality metrics: bpp from coded sizes, PSNR-RGB, and the Bjontegaard delta rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bpp(num_bytes: int, width: int, height: int) -> float:
    return 8.0 * num_bytes / (width * height)


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR over all RGB samples of two uint8 images (peak 255)."""
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(255.0**2 / err))


def bd_rate(
    rate_anchor: Sequence[float],
    psnr_anchor: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Average bit-rate difference (%) of ``test`` against ``anchor`` at equal quality.

    Bjontegaard's method: fit log-rate as a cubic polynomial of PSNR for each curve and
    integrate both over the PSNR interval they share.  Negative means ``test`` saves bits.
    """
    la, lt = np.log(np.asarray(rate_anchor, float)), np.log(np.asarray(rate_test, float))
    pa, pt = np.asarray(psnr_anchor, float), np.asarray(psnr_test, float)
    if min(len(pa), len(pt)) < 4:
        raise ValueError("BD-rate needs at least four rate points per curve")
    fit_a, fit_t = np.polyfit(pa, la, 3), np.polyfit(pt, lt, 3)
    lo, hi = max(pa.min(), pt.min()), min(pa.max(), pt.max())
    if lo >= hi:
        raise ValueError("the two curves share no quality range")
    int_a, int_t = np.polyint(fit_a), np.polyint(fit_t)
    avg_a = (np.polyval(int_a, hi) - np.polyval(int_a, lo)) / (hi - lo)
    avg_t = (np.polyval(int_t, hi) - np.polyval(int_t, lo)) / (hi - lo)
    return float((np.exp(avg_t - avg_a) - 1) * 100)
