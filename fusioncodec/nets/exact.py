"""Integer-exact networks: entropy parameters that come out the same on every device.

Everything that decides what the range decoder reads (hyper-synthesis, context, each
slice's mean/scale network, latent residual prediction, scale-table index) is computed in
fixed point, after Ballé, Johnston & Minnen, "Integer networks for data compression with
latent-variable models" (ICLR 2019), here as post-training quantisation of float weights:

* an activation ``a`` stands for ``a * 2**-FRAC`` and is an integer with
  ``|a| <= ACT_LIMIT``, rounded and clamped after every layer;
* a convolution's weights are integers with ``|w| <= WEIGHT_LIMIT`` and a power-of-two
  scale per output channel (``weight_shift``); its bias is an integer at the scale of the
  accumulator, below ``BIAS_LIMIT`` = 2**50;
* the arithmetic runs on float64 tensors that hold integers. No product or partial sum can
  reach 2**53 (``ACT_LIMIT * WEIGHT_LIMIT * fan-in`` with fan-in below ``MAX_FAN_IN`` stays
  below 2**51, the bias below 2**50), so every sum is exact in any order, on any device
  and with any BLAS, and rescaling by a power of two followed by round-half-even is exact;
* ``tanh`` is a table of integers (computed with correctly rounded decimal arithmetic)
  interpolated linearly in integer arithmetic.

The integer weights are made from the trained float weights by :meth:`ExactConvMixin.quantize`
(at export) and stored in the weight file; the float weights of these layers are then the
exact values of the integers, so training, the likelihood estimate and the coder share one
network.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FRAC = 15  # fractional bits of every activation
ACT_LIMIT = (1 << 24) - 1  # |activation| bound (values up to +-512)
WEIGHT_LIMIT = (1 << 14) - 1
MAX_FAN_IN = 1 << 13  # products * fan-in < 2**51: exact in float64 with room for the bias
MAX_SHIFT = 40
BIAS_LIMIT = float(1 << 50)

_TANH_STEP_BITS = 7  # table step 2**-7 over [0, 8]
_TANH_FRAC = 30
_TANH_ENTRIES = (8 << _TANH_STEP_BITS) + 1
_INT_KEYS = ("weight_int", "weight_shift", "bias_int")
# What a weight file may hold in each integer tensor: the bounds the exactness rests on.
INTEGER_BOUNDS = {
    "weight_int": (torch.int16, WEIGHT_LIMIT),
    "weight_shift": (torch.int8, MAX_SHIFT),
    "bias_int": (torch.int64, int(BIAS_LIMIT)),
}


def integer_problem(key: str, tensor: Tensor) -> str | None:
    """What is wrong with a stored integer tensor (dtype, range), or None; other keys: None."""
    bounds = INTEGER_BOUNDS.get(key.rpartition(".")[2])
    if bounds is None:
        return None
    dtype, limit = bounds
    if tensor.dtype != dtype:
        return f"{key} is {tensor.dtype}, not {dtype}"
    if tensor.numel() and not -limit <= int(tensor.min()) <= int(tensor.max()) <= limit:
        return f"{key} holds values beyond +-{limit} ({int(tensor.min())}..{int(tensor.max())})"
    return None


def to_fixed(x: Tensor) -> Tensor:
    """Float values -> clamped fixed-point integers (float64) at ``FRAC`` bits."""
    return torch.round(x.double() * (1 << FRAC)).clamp_(-ACT_LIMIT, ACT_LIMIT)


def from_fixed(a: Tensor) -> Tensor:
    """Fixed-point integers -> their exact float64 values."""
    return a * (2.0**-FRAC)


class ExactConvMixin:
    """Integer weights beside a float convolution, and the exact forward that uses them.

    The float ``forward`` (training) is untouched; :meth:`exact` maps fixed-point integers
    to fixed-point integers.  ``quantize`` makes the integers and sets the float weights to
    their exact values.  A weight file may hold only the integers: loading rebuilds the float
    weights from them.
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
        self._cache: tuple | None = None
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
        self._cache = None

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
        self._cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]

    def _exact_params(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if not self.quantized:
            raise RuntimeError("integer entropy parameters missing: quantize() after training")
        if self._cache is None or self._cache[0] != device:
            w = self.weight_int.to(device, torch.float64).contiguous()
            scale = torch.exp2(-self.weight_shift.to(device, torch.float64)).reshape(1, -1, 1, 1)
            bias = self.bias_int.to(device, torch.float64)
            self._cache = (device, w, scale, bias)
        return self._cache[1:]

    def _integer_conv(self, x: Tensor, w: Tensor, bias: Tensor) -> Tensor:
        raise NotImplementedError

    def exact(self, x: Tensor) -> Tensor:
        """Fixed-point integers in, fixed-point integers out (float64 holding integers)."""
        w, scale, bias = self._exact_params(x.device)
        # cuDNN may pick FFT or Winograd algorithms, which are not exact on integers; the
        # native implementation is im2col plus a matrix product.
        with torch.backends.cudnn.flags(enabled=False):
            acc = self._integer_conv(x, w, bias)
        return torch.round(acc.mul_(scale)).clamp_(-ACT_LIMIT, ACT_LIMIT)


class ExactConv2d(ExactConvMixin, nn.Conv2d):
    """A convolution with an integer-exact twin (see :class:`ExactConvMixin`)."""

    _out_dim = 0

    def _integer_conv(self, x: Tensor, w: Tensor, bias: Tensor) -> Tensor:
        return F.conv2d(x, w, bias, self.stride, self.padding)


class ExactConvTranspose2d(ExactConvMixin, nn.ConvTranspose2d):
    """A transposed convolution with an integer-exact twin."""

    _out_dim = 1

    def _integer_conv(self, x: Tensor, w: Tensor, bias: Tensor) -> Tensor:
        return F.conv_transpose2d(x, w, bias, self.stride, self.padding, self.output_padding)


def exact_conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> ExactConv2d:
    """A 'same'-padded exact convolution (as :func:`fusioncodec.nets.layers.conv`)."""
    return ExactConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def exact_deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> ExactConvTranspose2d:
    """An exact transposed convolution that upsamples by ``stride``."""
    return ExactConvTranspose2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )


def run_exact(layers: nn.Sequential, x: Tensor) -> Tensor:
    """The integer twin of a Sequential of exact convolutions and ReLUs."""
    for layer in layers:
        if isinstance(layer, ExactConvMixin):
            x = layer.exact(x)
        elif isinstance(layer, nn.ReLU):
            x = x.clamp_min(0)
        else:
            raise TypeError(f"{type(layer).__name__} has no exact integer version")
    return x


def quantize_all(module: nn.Module) -> None:
    """Quantize every exact convolution inside ``module``."""
    for sub in module.modules():
        if isinstance(sub, ExactConvMixin):
            sub.quantize()


@functools.cache
def _tanh_table() -> tuple[int, ...]:
    """tanh at steps of 2**-7 on [0, 8], as integers at 2**-30 (correctly rounded)."""
    values = []
    with localcontext() as ctx:
        ctx.prec = 40
        for i in range(_TANH_ENTRIES):
            e = (Decimal(2 * i) / (1 << _TANH_STEP_BITS)).exp()
            t = (e - 1) / (e + 1) * (1 << _TANH_FRAC)
            values.append(int(t.to_integral_value()))
    return tuple(values)


@functools.cache
def _tanh_tensor(device: torch.device) -> Tensor:
    return torch.tensor(_tanh_table(), dtype=torch.float64, device=device)


def half_tanh(a: Tensor) -> Tensor:
    """``0.5 * tanh`` of fixed-point integers, as fixed-point integers (exact)."""
    table = _tanh_tensor(a.device)
    step = FRAC - _TANH_STEP_BITS
    mag = a.abs().clamp_(max=((_TANH_ENTRIES - 1) << step) - 1)
    index = torch.floor(mag * 2.0**-step)
    within = mag - index * (1 << step)
    lo, hi = table[index.long()], table[index.long() + 1]
    t = lo + torch.floor((hi - lo) * within * 2.0**-step)
    return torch.sign(a) * torch.round(t * 2.0 ** -(_TANH_FRAC + 1 - FRAC))


def scale_thresholds(scale_table: Tensor) -> Tensor:
    """Integer thresholds for the scale-table index of fixed-point scales.

    compressai's index of a scale ``s`` is the number of table scales below ``s`` (the last
    one excluded); for an integer ``a`` standing for ``a * 2**-FRAC``, ``t < a * 2**-FRAC``
    exactly when ``floor(t * 2**FRAC) < a``.
    """
    return torch.floor(scale_table[:-1].double() * (1 << FRAC))


def scale_indexes(scales: Tensor, thresholds: Tensor) -> Tensor:
    """Table index of each fixed-point scale: the count of thresholds below it."""
    return torch.searchsorted(thresholds.to(scales.device), scales.contiguous(), right=False)
