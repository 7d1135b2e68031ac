"""Rate and quality metrics: bpp from coded sizes, PSNR-RGB, MS-SSIM and Bjontegaard deltas.

Conventions (the same as CompressAI's published results and ``shared/anchors``):

* ``bpp`` is ``8 * bytes / (width * height)`` with the bytes of the real coded file;
* ``psnr_rgb`` is one PSNR over all R, G and B samples of two uint8 images (peak 255);
* ``ms_ssim_rgb`` is ``pytorch_msssim.ms_ssim`` on 1x3xHxW float32 tensors holding the 8-bit
  values (``data_range=255``, default 5 scales and 11-tap Gaussian window).  That needs more
  than 160 pixels on the short side; smaller images get NaN (no fallback to single-scale
  SSIM, so that every recorded number is the same metric);
* averages over an image set are means of the per-image values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: MS-SSIM (5 scales, 11-tap window) needs a short side larger than (11 - 1) * 2**4 = 160.
MSSSIM_MIN_SIDE = 161


def bpp(num_bytes: int, pixels: int) -> float:
    """Bits per pixel of ``num_bytes`` coded bytes over ``pixels`` pixels (numpy-free, so that
    ``fcodec info`` and ``strip`` report rates without it)."""
    return 8.0 * num_bytes / pixels


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR over all RGB samples of two uint8 images (peak 255)."""
    import numpy as np

    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(255.0**2 / err))


def ms_ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two HxWx3 uint8 images; NaN if the short side is 160 pixels or less."""
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} and {b.shape}")
    if min(a.shape[:2]) < MSSSIM_MIN_SIDE:
        return float("nan")
    import numpy as np
    import torch
    from pytorch_msssim import ms_ssim

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(x, dtype=np.float32)).permute(2, 0, 1)[None]

    with torch.no_grad():
        return float(ms_ssim(tensor(a), tensor(b), data_range=255, size_average=True))


def msssim_db(value: float) -> float:
    """MS-SSIM on a decibel scale, ``-10 log10(1 - value)`` (inf for 1, NaN stays NaN)."""
    if math.isnan(value):
        return float("nan")
    return float("inf") if value >= 1 else -10.0 * math.log10(1.0 - value)


def _curves(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Log-rates and qualities as arrays; ValueError for fewer than 4 points or bad values."""
    import numpy as np

    ra, qa = np.asarray(rate_anchor, float), np.asarray(quality_anchor, float)
    rt, qt = np.asarray(rate_test, float), np.asarray(quality_test, float)
    if ra.shape != qa.shape or rt.shape != qt.shape:
        raise ValueError("each curve needs as many rates as quality values")
    if min(len(qa), len(qt)) < 4:
        raise ValueError("BD-rate needs at least four rate points per curve")
    for values in (ra, qa, rt, qt):
        if not np.all(np.isfinite(values)):
            raise ValueError("a curve has non-finite values")
    if np.any(ra <= 0) or np.any(rt <= 0):
        raise ValueError("rates must be positive")
    return np.log(ra), qa, np.log(rt), qt


def _average_gap(x_a: np.ndarray, y_a: np.ndarray, x_t: np.ndarray, y_t: np.ndarray) -> float:
    """Mean of (cubic fit of y_t over x) - (cubic fit of y_a over x) on the shared x range."""
    import numpy as np

    lo, hi = max(x_a.min(), x_t.min()), min(x_a.max(), x_t.max())
    if lo >= hi:
        raise ValueError("the two curves share no quality range")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RankWarning for nearly collinear points
        fit_a, fit_t = np.polyfit(x_a, y_a, 3), np.polyfit(x_t, y_t, 3)
    int_a, int_t = np.polyint(fit_a), np.polyint(fit_t)
    avg_a = (np.polyval(int_a, hi) - np.polyval(int_a, lo)) / (hi - lo)
    avg_t = (np.polyval(int_t, hi) - np.polyval(int_t, lo)) / (hi - lo)
    return float(avg_t - avg_a)


def bd_rate(
    rate_anchor: Sequence[float],
    psnr_anchor: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Average bit-rate difference (%) of ``test`` against ``anchor`` at equal quality.

    Bjontegaard's method: fit log-rate as a cubic polynomial of PSNR for each curve and
    integrate both over the PSNR interval they share.  Negative means ``test`` saves bits.
    Any quality measure works in place of PSNR (e.g. :func:`msssim_db`).  ValueError if a
    curve has fewer than four points or the curves share no quality range.
    """
    la, pa, lt, pt = _curves(rate_anchor, psnr_anchor, rate_test, psnr_test)
    gap = _average_gap(pa, la, pt, lt)
    return (math.exp(gap) - 1) * 100 if gap < 700 else math.inf  # exp overflows past ~709


def bd_psnr(
    rate_anchor: Sequence[float],
    psnr_anchor: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Average quality difference (dB) of ``test`` against ``anchor`` at equal rate.

    Bjontegaard's other delta: fit PSNR as a cubic polynomial of log-rate and integrate both
    over the shared log-rate interval.  Positive means ``test`` is better.
    """
    la, pa, lt, pt = _curves(rate_anchor, psnr_anchor, rate_test, psnr_test)
    try:
        return _average_gap(la, pa, lt, pt)
    except ValueError:
        raise ValueError("the two curves share no rate range") from None
