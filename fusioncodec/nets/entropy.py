"""The entropy models of training: compressai's factorized prior (made host-free) and
Gaussian conditional, and the integer CDF tables made from them after training (which
:mod:`fusioncodec.exact.latent` checks and codes with)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fusioncodec._torchvision import ensure_torchvision

ensure_torchvision()
from compressai.entropy_models import EntropyBottleneck, GaussianConditional  # noqa: E402
from compressai.models.utils import update_registered_buffers  # noqa: E402
from compressai.ops import quantize_ste as ste_round  # noqa: E402

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64
TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


class HostFreeBottleneck(EntropyBottleneck):
    """compressai's factorized prior, whose forward never waits for the device.

    compressai 1.2.8 builds the axis permutation of ``EntropyBottleneck.forward`` as a device
    tensor and unpacks it, a host-device round trip per call (per training step on a GPU);
    here it is a tuple of ints. Same parameters, buffers and results.
    """

    def forward(
        self, x: Tensor, training: bool | None = None, straight_through: bool = False
    ) -> tuple[Tensor, Tensor]:
        """compressai's forward; ``straight_through``: the likelihoods of the rounded values
        with the rounding's gradient passed straight through (the rate as coded)."""
        training = self.training if training is None else training
        perm = (1, 0, *range(2, x.ndim))  # B x C x ... <-> C x B x ... (its own inverse)
        x = x.permute(*perm).contiguous()
        shape = x.size()
        values = x.reshape(x.size(0), 1, -1)
        medians = self._get_medians()
        if straight_through:
            outputs = ste_round(values - medians) + medians
        else:
            outputs = self.quantize(values, "noise" if training else "dequantize", medians)
        likelihood, _, _ = self._likelihood(outputs)
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        outputs = outputs.reshape(shape).permute(*perm).contiguous()
        return outputs, likelihood.reshape(shape).permute(*perm).contiguous()


def rounded_likelihood(gc: GaussianConditional, y: Tensor, scales: Tensor, means: Tensor) -> Tensor:
    """Likelihoods of ``y`` rounded around ``means`` as the coder rounds it, the rounding's
    gradient passed straight through (compressai's ``dequantize`` mode stops it)."""
    likelihood = gc._likelihood(ste_round(y - means) + means, scales, means)
    return gc.likelihood_lower_bound(likelihood) if gc.use_likelihood_bound else likelihood


def scale_table() -> Tensor:
    """The 64 log-spaced Gaussian scales whose CDFs are tabulated."""
    return torch.exp(torch.linspace(np.log(SCALE_MIN), np.log(SCALE_MAX), SCALE_LEVELS))


def update_tables(eb: EntropyBottleneck, gc: GaussianConditional) -> None:
    """Integer CDF tables from the current weights (after training)."""
    with torch.no_grad():
        median = eb.quantiles[:, :, 1].clone()
        eb._update_quantiles()  # search the tails of the learned density exactly
        eb.quantiles[:, :, 1] = median  # keep the median training rounded z around
        lo, hi = eb.quantiles[:, :, 0], eb.quantiles[:, :, 2]
        eb.quantiles[:, :, 0] = torch.minimum(lo, median - 0.5)
        eb.quantiles[:, :, 2] = torch.maximum(hi, median + 0.5)
    eb.update(force=True)
    gc.update_scale_table(scale_table(), force=True)


def load_table_buffers(
    eb: EntropyBottleneck, gc: GaussianConditional, state_dict: dict[str, Tensor]
) -> None:
    """Resize the CDF-table buffers to the shapes stored in ``state_dict``."""
    update_registered_buffers(eb, "entropy_bottleneck", list(TABLE_BUFFERS), state_dict)
    keys = [*TABLE_BUFFERS, "scale_table"]
    update_registered_buffers(gc, "gaussian_conditional", keys, state_dict)
