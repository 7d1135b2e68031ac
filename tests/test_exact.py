"""The integer networks (fusioncodec.exact.networks, made by fusioncodec.nets.exact): exact
at their bounds, the same integers as torch's convolutions in float64, close to the float
layers they stand for, and the same as compressai's scale-table index."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusioncodec._torchvision import ensure_torchvision
from fusioncodec.exact.networks import (
    ACT_LIMIT,
    FRAC,
    WEIGHT_LIMIT,
    IntegerConv,
    from_fixed,
    half_tanh,
    scale_indexes,
    scale_thresholds,
    to_fixed,
)
from fusioncodec.nets.exact import ExactConvMixin, exact_conv, exact_deconv, layout

ensure_torchvision()
from compressai.entropy_models import GaussianConditional  # noqa: E402


def integer_twin(layer: ExactConvMixin) -> IntegerConv:
    """The numpy integer layer of a quantized exact convolution, as coding builds it."""
    arrays = {f"layer.{k}": v.numpy() for k, v in layer.state_dict().items()}
    return IntegerConv.from_arrays(arrays, "layer", layout(nn.Sequential(layer))[0])


def run(layer: ExactConvMixin, x: torch.Tensor) -> torch.Tensor:
    """The integer layer on a batch of one (fixed-point integers as float64)."""
    return torch.from_numpy(integer_twin(layer)(x[0].numpy()))[None]


def int64_conv(x: torch.Tensor, w: torch.Tensor, padding: int) -> torch.Tensor:
    """Reference: the same convolution in int64 (no floating point at all)."""
    cols = F.unfold(x.double(), w.shape[-1], padding=padding)[0].round().long()
    return (w.reshape(w.shape[0], -1).long() @ cols).reshape(1, w.shape[0], *x.shape[-2:])


def test_sums_at_the_bounds_are_exact():
    """Largest activations and weights over the widest fan-in: float64 equals int64."""
    torch.manual_seed(0)
    layer = exact_conv(900, 4, 3, 1)  # fan-in 8100, just under the limit
    layer.quantize()
    sign = torch.randint(0, 2, (4, 900, 3, 3)) * 2 - 1
    layer.weight_int = (sign * WEIGHT_LIMIT).to(torch.int16)
    layer.weight_shift = torch.zeros(4, dtype=torch.int8)
    layer.bias_int = torch.zeros(4, dtype=torch.int64)
    x = (torch.randint(0, 2, (1, 900, 5, 5)) * 2 - 1).double() * ACT_LIMIT
    x[0, :, 1:4, 1:4] = ACT_LIMIT * sign[0]  # output (0, 2, 2) sums 8100 maximal products
    exact = int64_conv(x, layer.weight_int, 1)
    assert exact.abs().max() > 2**50  # the test really reaches the range
    w64 = layer.weight_int.double()
    assert torch.equal(F.conv2d(x, w64, padding=1).long(), exact)
    assert torch.equal(run(layer, x), exact.double().clamp(-ACT_LIMIT, ACT_LIMIT))


def test_too_wide_a_fan_in_is_refused():
    with pytest.raises(ValueError, match="fan-in"):
        exact_conv(1000, 4, 3, 1)


@pytest.mark.parametrize("make", [lambda: exact_conv(24, 16, 3, 1), lambda: exact_deconv(24, 16)])
def test_exact_layer_matches_its_float_layer(make):
    torch.manual_seed(1)
    layer = make()
    layer.quantize()
    x = torch.randn(1, 24, 6, 7) * 3
    fixed = torch.from_numpy(to_fixed(x.numpy()))
    with torch.no_grad():
        ref = layer(torch.from_numpy(from_fixed(fixed.numpy())).float()).double()
    out = torch.from_numpy(from_fixed(run(layer, fixed).numpy()))
    assert (out - ref).abs().max() < 1e-4
    assert torch.equal(out * 2**FRAC, (out * 2**FRAC).round())  # integers
    # the same integers as torch's own convolution in float64 (the torch path before 0.6)
    w = layer.weight_int.double()
    scale = torch.exp2(-layer.weight_shift.double()).reshape(1, -1, 1, 1)
    if isinstance(layer, nn.ConvTranspose2d):
        acc = F.conv_transpose2d(fixed, w, layer.bias_int.double(), 2, 2, 1)
    else:
        acc = F.conv2d(fixed, w, layer.bias_int.double(), 1, 1)
    assert torch.equal(run(layer, fixed), (acc * scale).round().clamp(-ACT_LIMIT, ACT_LIMIT))


def test_quantize_keeps_weights_within_half_a_step():
    torch.manual_seed(2)
    layer = exact_conv(8, 5, 3, 1)
    before = layer.weight.detach().clone()
    layer.quantize()
    assert layer.weight_int.abs().max() <= WEIGHT_LIMIT
    for c in range(5):
        step = 2.0 ** -int(layer.weight_shift[c])
        assert (layer.weight[c] - before[c]).abs().max() <= step / 2 + 1e-12


def test_half_tanh_is_odd_exact_and_accurate():
    a = np.arange(-(12 << FRAC), 12 << FRAC, 97, dtype=np.float64)
    out = half_tanh(a)
    assert np.array_equal(out, -half_tanh(-a))
    assert np.array_equal(out, out.round())
    expected = 0.5 * np.tanh(from_fixed(a))
    assert np.abs(from_fixed(out) - expected).max() < 2e-5


def test_scale_index_equals_compressai_on_fixed_point_scales():
    table = torch.exp(torch.linspace(math.log(0.11), math.log(256.0), 64))
    gc = GaussianConditional(None)
    gc.update_scale_table(table, force=True)
    thresholds = scale_thresholds(gc.scale_table.numpy())
    a = np.concatenate([np.arange(0, 300 << FRAC, 37.0), thresholds, thresholds + 1])
    ours = scale_indexes(a, thresholds)
    theirs = gc.build_indexes(torch.from_numpy(from_fixed(a)))
    assert np.array_equal(ours, theirs.numpy())


def test_large_bias_keeps_the_accumulator_exact():
    layer = exact_conv(4, 2, 1, 1)
    with torch.no_grad():
        layer.weight.fill_(1e-6)
        layer.bias.copy_(torch.tensor([300.0, -2.0]))  # 300 * 2**(40 + 15) would be > 2**53
    layer.quantize()
    assert layer.bias_int.abs().max() <= 2**50
    x = to_fixed(np.full((4, 2, 2), 1.5))
    out = from_fixed(integer_twin(layer)(x))[:, 0, 0]
    assert np.abs(out - np.array([300.0, -2.0])).max() < 1e-3
