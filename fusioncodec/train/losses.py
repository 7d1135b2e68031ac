"""Rate-distortion losses: SA-ICM (MSE on edge pixels only), full-image MSE, rates, and the
quality sampling and weighting that give every quality its share of training."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


def bits_per_pixel(likelihoods: dict[str, Tensor], pixels: int) -> Tensor:
    """Per-sample rate in bits per pixel from the entropy models' likelihoods."""
    total = sum(torch.log(lik).flatten(1).sum(1) for lik in likelihoods.values())
    return total / (-math.log(2) * pixels)


def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per-sample mean squared error over all pixels (values in [0, 1])."""
    return (x_hat - x).square().flatten(1).mean(1)


def edge_mse(x_hat: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """Per-sample MSE counted only on edge pixels (mask 1), the SA-ICM distortion."""
    err = (x_hat - x).square().mean(1, keepdim=True) * mask
    return err.flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1.0)


@functools.cache
def _log_lambdas(lambdas: tuple[float, ...], device: torch.device) -> Tensor:
    """log(lambdas) on ``device``, made once (a copy to a GPU per step would wait for it)."""
    return torch.tensor(lambdas, dtype=torch.float32).log().to(device)


def lambda_at(lambdas: list[float], q: Tensor) -> Tensor:
    """Lambda for continuous quality index q in [0, levels-1] (geometric interpolation)."""
    table = _log_lambdas(tuple(lambdas), q.device)
    q = q.clamp(0, len(lambdas) - 1)
    lo = q.floor().clamp(max=len(lambdas) - 2).long()
    t = q - lo
    return (table[lo] * (1 - t) + table[lo + 1] * t).exp()


def psnr(distortion: Tensor) -> Tensor:
    return -10 * torch.log10(distortion.clamp(min=1e-10))


def sample_quality(n: int, levels: int, device: torch.device | str, ends: bool = True) -> Tensor:
    """``n`` continuous quality indices in [0, levels - 1].

    With ``ends`` every level gets the same share, the two ends included: q is uniform over
    [-0.5, levels - 0.5] and clamped. Without, q is uniform over [0, levels - 1] and each end
    level is drawn half as often as an inner one (the recipe before 0.3).
    """
    u = torch.rand(n, device=device)
    if not ends:
        return u * (levels - 1)
    return (u * levels - 0.5).clamp_(0, levels - 1)


def quality_weight(lam: Tensor, lambdas: list[float], exponent: float) -> Tensor:
    """Per-sample loss weight ``(lam / lam_mid) ** -exponent`` that balances the qualities.

    The gradient of ``bpp + lam * 255^2 * D`` grows about as ``lam ** exponent`` (fitted by
    :func:`fusioncodec.train.balance.fit_exponent`); this weight evens it out, so that low
    qualities get their share of each update. ``lam_mid`` (the geometric middle of the range)
    keeps the middle quality's loss as it was. ``exponent`` 0: every weight is 1.
    """
    if exponent == 0:
        return torch.ones_like(lam)
    middle = math.sqrt(lambdas[0] * lambdas[-1])
    return (lam / middle).pow(-exponent)


def rd_loss(bpp: Tensor, distortion: Tensor, lam: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean over the batch of ``weight * (bpp + lambda * 255^2 * distortion)``."""
    per_sample = bpp + lam * 255**2 * distortion
    return (per_sample if weight is None else per_sample * weight).mean()
