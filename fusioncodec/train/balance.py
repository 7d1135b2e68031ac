"""How strongly each quality pulls on the weights: per-crop gradient norms against lambda.

With loss ``bpp + lambda * 255^2 * D`` the gradient grows with lambda, so uniformly drawn
qualities leave the low ones a few percent of each update. :func:`fit_exponent` fits
``|grad| ~ lambda ** e`` on real crops; weighting each crop's loss by ``lambda ** -e``
(:func:`fusioncodec.train.losses.quality_weight`) evens the shares out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fusioncodec.nets import CodecConfig
from fusioncodec.train.losses import lambda_at
from fusioncodec.train.step import Balance, step_losses, trainable


def gradient_norms(
    model: nn.Module, stage: str, x: torch.Tensor, mask: torch.Tensor, codec: CodecConfig
) -> np.ndarray:
    """Unweighted loss-gradient norms, shape (levels, crops): one crop at a time, each level."""
    params = trainable(model, stage)
    norms = np.zeros((codec.levels, len(x)))
    for level in range(codec.levels):
        for i in range(len(x)):
            model.zero_grad(set_to_none=True)
            losses = step_losses(
                model, stage, x[i : i + 1], mask[i : i + 1], codec, Balance.none(), level
            )
            losses["loss"].backward()
            grads = [p.grad.flatten() for p in params if p.grad is not None]
            norms[level, i] = float(torch.cat(grads).norm())
    model.zero_grad(set_to_none=True)
    return norms


def fit_exponent(lambdas: list[float], norms: np.ndarray) -> float:
    """Least-squares slope of log median gradient norm against log lambda."""
    levels = np.arange(len(norms), dtype=np.float32)
    lam = lambda_at(lambdas, torch.from_numpy(levels)).double().numpy()
    return float(np.polyfit(np.log(lam), np.log(np.median(norms, axis=1)), 1)[0])
