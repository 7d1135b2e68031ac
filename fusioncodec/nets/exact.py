"""The training side of the integer networks: float convolutions with integer twins.

A layer here trains as a float convolution; :meth:`ExactConvMixin.quantize` (at export)
turns its weights into the integers of :mod:`fusioncodec.exact.networks` (int16 weights
with a power-of-two scale per output channel, an integer bias) and sets the float weights
to their exact values, so training, the likelihood estimate and the coder share one
network. The integer arithmetic itself, and the bounds it rests on, live there: coding
runs it in numpy, the one implementation of every runtime.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fusioncodec.exact.networks import (
    BIAS_LIMIT,
    FRAC,
    MAX_FAN_IN,
    MAX_SHIFT,
    RELU,
    WEIGHT_LIMIT,
)

_INT_KEYS = ("weight_int", "weight_shift", "bias_int")


class ExactConvMixin:
    """Integer weights beside a float convolution.

    The float ``forward`` (training) is untouched; ``quantize`` makes the integers and sets
    the float weights to their exact values.  A weight file may hold only the integers:
    loading rebuilds the float weights from them.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None
    _out_dim = 0

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)  # the convolution class after the mixin
        self._init_exact()

    def _init_exact(self) -> None:
        self.register_buffer("weight_int", torch.zeros(0, dtype=torch.int16))
        self.register_buffer("weight_shift", torch.zeros(0, dtype=torch.int8))
        self.register_buffer("bias_int", torch.zeros(0, dtype=torch.int64))
        fan_in = self.weight.numel() // self.weight.shape[self._out_dim]
        if fan_in >= MAX_FAN_IN:
            raise ValueError(f"fan-in {fan_in} too large for exact integer arithmetic")

    @property
    def quantized(self) -> bool:
        return self.weight_int.numel() > 0

    def _view(self, per_channel: Tensor) -> Tensor:
        shape = [1] * self.weight.dim()
        shape[self._out_dim] = -1
        return per_channel.reshape(shape)

    @torch.no_grad()
    def quantize(self) -> None:
        """Make the integer weights from the float ones, then set the floats to match."""
        w = self.weight.detach().cpu().double()
        dims = [d for d in range(w.dim()) if d != self._out_dim]
        peak = w.abs().amax(dim=dims)
        b = self.bias.detach().cpu().double() if self.bias is not None else torch.zeros(len(peak))
        shift = []
        for p, bias in zip(peak.tolist(), b.abs().tolist(), strict=True):
            s = MAX_SHIFT if p == 0 else min(MAX_SHIFT, math.floor(math.log2(WEIGHT_LIMIT / p)))
            if bias > 0:  # the bias at the accumulator's scale stays below BIAS_LIMIT
                s = min(s, math.floor(math.log2(BIAS_LIMIT / bias)) - FRAC)
            shift.append(max(s, -MAX_SHIFT))
        shift_t = torch.tensor(shift, dtype=torch.float64)
        w_int = torch.round(w * self._view(torch.exp2(shift_t))).clamp(-WEIGHT_LIMIT, WEIGHT_LIMIT)
        b_int = torch.round(b * torch.exp2(shift_t + FRAC)).clamp(-BIAS_LIMIT, BIAS_LIMIT)
        self.weight_int = w_int.to(torch.int16).to(self.weight.device)
        self.weight_shift = torch.tensor(shift, dtype=torch.int8, device=self.weight.device)
        self.bias_int = b_int.to(torch.int64).to(self.weight.device)
        self._set_floats()

    @torch.no_grad()
    def _set_floats(self) -> None:
        w, b = self._float_values(self.weight_int, self.weight_shift, self.bias_int)
        self.weight.copy_(w.to(self.weight))
        if self.bias is not None:
            self.bias.copy_(b.to(self.bias))

    def _float_values(self, w_int: Tensor, shift: Tensor, b_int: Tensor) -> tuple[Tensor, Tensor]:
        scale = torch.exp2(-shift.double())
        return w_int.double() * self._view(scale), b_int.double() * scale * 2.0**-FRAC

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        """Resize the integer buffers to the stored ones (empty: not quantized), and rebuild
        float weights that a weight file leaves out."""
        for key in _INT_KEYS:
            stored = state_dict.get(prefix + key)
            if stored is None:
                state_dict[prefix + key] = torch.zeros(0, dtype=getattr(self, key).dtype)
            else:
                setattr(self, key, torch.empty_like(stored, dtype=getattr(self, key).dtype))
        w_int = state_dict[prefix + "weight_int"]
        if w_int.numel():  # integer buffers take the stored shapes: they must be the layer's
            out = self.weight.shape[self._out_dim]
            shapes = [tuple(state_dict[prefix + k].shape) for k in _INT_KEYS]
            if shapes != [tuple(self.weight.shape), (out,), (out,)]:
                raise RuntimeError(f"size mismatch for the integer weights of {prefix}: {shapes}")
        if prefix + "weight" not in state_dict and w_int.numel():
            w, b = self._float_values(
                w_int, state_dict[prefix + "weight_shift"], state_dict[prefix + "bias_int"]
            )
            state_dict[prefix + "weight"] = w.float()
            if self.bias is not None:
                state_dict[prefix + "bias"] = b.float()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]


class ExactConv2d(ExactConvMixin, nn.Conv2d):
    """A convolution with an integer-exact twin (see :class:`ExactConvMixin`)."""

    _out_dim = 0


class ExactConvTranspose2d(ExactConvMixin, nn.ConvTranspose2d):
    """A transposed convolution with an integer-exact twin."""

    _out_dim = 1


def exact_conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> ExactConv2d:
    """A 'same'-padded exact convolution (as :func:`fusioncodec.nets.layers.conv`)."""
    return ExactConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def exact_deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> ExactConvTranspose2d:
    """An exact transposed convolution that upsamples by ``stride``."""
    return ExactConvTranspose2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )


def layout(layers: nn.Sequential) -> list[dict]:
    """What each layer of a Sequential of exact convolutions and ReLUs is (kind, stride,
    padding): how :class:`fusioncodec.exact.IntegerNetwork` reads its integers."""
    out: list[dict] = []
    for layer in layers:
        if isinstance(layer, ExactConvTranspose2d):
            out.append(
                {
                    "kind": "deconv",
                    "stride": layer.stride[0],
                    "padding": layer.padding[0],
                    "output_padding": layer.output_padding[0],
                }
            )
        elif isinstance(layer, ExactConv2d):
            out.append({"kind": "conv", "stride": layer.stride[0], "padding": layer.padding[0]})
        elif isinstance(layer, nn.ReLU):
            out.append({"kind": RELU})
        else:
            raise TypeError(f"{type(layer).__name__} has no exact integer version")
    return out


def quantize_all(module: nn.Module) -> None:
    """Quantize every exact convolution inside ``module``."""
    for sub in module.modules():
        if isinstance(sub, ExactConvMixin):
            sub.quantize()
