"""Rate-distortion losses: SA-ICM (MSE on edge pixels only), full-image MSE, and rates."""

from __future__ import annotations

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


def lambda_at(lambdas: list[float], q: Tensor) -> Tensor:
    """Lambda for continuous quality index q in [0, levels-1] (geometric interpolation)."""
    table = torch.tensor(lambdas, dtype=torch.float32, device=q.device).log()
    q = q.clamp(0, len(lambdas) - 1)
    lo = q.floor().clamp(max=len(lambdas) - 2).long()
    t = q - lo
    return (table[lo] * (1 - t) + table[lo + 1] * t).exp()


def rd_loss(bpp: Tensor, distortion: Tensor, lam: Tensor) -> Tensor:
    """Mean over the batch of bpp + lambda * 255^2 * distortion (CompressAI's scaling)."""
    return (bpp + lam * 255**2 * distortion).mean()


def psnr(distortion: Tensor) -> Tensor:
    return -10 * torch.log10(distortion.clamp(min=1e-10))
