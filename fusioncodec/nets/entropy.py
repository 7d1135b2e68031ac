"""The entropy models' tables: compressai's factorized prior (made host-free) and Gaussian
conditional, turned into integer CDF tables for the range coder, checked, and read back
symbol by symbol with an echo that proves the payload was read exactly."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fusioncodec._torchvision import ensure_torchvision
from fusioncodec.coding import CategoricalTables, RangeDecoder, RangeEncoder
from fusioncodec.coding.tables import ESCAPE_RANGE

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


def rounded_likelihood(
    gc: GaussianConditional, y: Tensor, scales: Tensor, means: Tensor
) -> Tensor:
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


def coder_tables(
    eb: EntropyBottleneck, gc: GaussianConditional
) -> tuple[CategoricalTables, CategoricalTables]:
    """The (z, y) table sets of the range coder, from the stored integer CDFs."""
    if eb._offset.numel() == 0 or gc._offset.numel() == 0:
        raise RuntimeError("entropy tables missing: call update() after training")
    z, y = (
        CategoricalTables(
            m._quantized_cdf.cpu().numpy(), m._cdf_length.cpu().numpy(), m._offset.cpu().numpy()
        )
        for m in (eb, gc)
    )
    return z, y


def tables_problem(eb: EntropyBottleneck, gc: GaussianConditional) -> str | None:
    """What is wrong with the CDF tables (shape, range, monotonicity), or None. Empty tables
    (a model never updated) are not checked: coding refuses them itself."""
    for name, module, count in (
        ("z", eb, eb.channels),
        ("y", gc, len(gc.scale_table) if gc.scale_table.numel() else 0),
    ):
        cdf, length, offset = module._quantized_cdf, module._cdf_length, module._offset
        if cdf.numel() == 0:
            continue
        if cdf.dim() != 2 or cdf.shape[0] != count or length.shape != (count,):
            return f"{name}: {tuple(cdf.shape)} tables, the card's sizes need {count}"
        if offset.shape != (count,) or offset.abs().max() > ESCAPE_RANGE:
            return f"{name}: offsets out of range"
        if length.min() < 3 or length.max() > cdf.shape[1]:
            return f"{name}: table lengths out of range"
        cols = torch.arange(cdf.shape[1])[None, :]
        inside = cols < length[:, None]
        steps = (cdf[:, 1:] - cdf[:, :-1])[inside[:, 1:]]
        ends = cdf.gather(1, (length - 1).long()[:, None])
        if (cdf[:, 0] != 0).any() or (ends != 1 << 16).any() or (steps < 1).any():
            return f"{name}: not increasing 16-bit CDFs"
    table = gc.scale_table
    if table.numel() and (not torch.isfinite(table).all() or (table.diff() <= 0).any()):
        return "scale table not increasing"
    return None


def min_payload_bits(eb: EntropyBottleneck, z_shape: tuple[int, int]) -> float:
    """A lower bound on any payload's size for a hyper-latent of ``z_shape``: each z symbol
    costs at least ``-log2`` of its table's largest probability. A shorter payload cannot be
    valid, so the decoder refuses it before allocating anything."""
    cdf, length = eb._quantized_cdf, eb._cdf_length
    cols = torch.arange(cdf.shape[1] - 1)[None, :]
    steps = (cdf[:, 1:] - cdf[:, :-1]).where(cols < (length[:, None] - 1), 0)
    largest = steps.amax(dim=1).double() / (1 << 16)
    # Only tables whose top probability is clearly below 1 count: the coder's own
    # quantisation of probabilities near 1 could make those symbols cheaper still.
    bits = -torch.log2(largest[largest <= 0.99])
    return 0.9 * float(bits.sum()) * z_shape[0] * z_shape[1]


def decoded_symbols(
    tables: CategoricalTables,
    indexes: np.ndarray,
    decoder: RangeDecoder | None,
    echo: RangeEncoder | None,
    words: int | None,
) -> np.ndarray:
    """Symbols read from ``decoder``, encoded again into ``echo`` (if any): the echo of a
    payload the encoder made comes out word for word; decoding stops as soon as the echo
    needs more than ``words`` words (the payload ran out before the latent did)."""
    values = tables.decode(decoder, indexes)
    if echo is not None:
        tables.encode(echo, values, indexes)
        if words is not None and echo.num_words() > words:
            raise ValueError("the payload ends before the latent does")
    return values
