"""Integer networks in numpy: the arithmetic every decoder runs before it reads a symbol.

After Ballé, Johnston & Minnen, "Integer networks for data compression with latent-variable
models" (ICLR 2019), as post-training quantisation of float weights (the training side,
which makes the integers, is :mod:`fusioncodec.nets.exact`):

* an activation ``a`` stands for ``a * 2**-FRAC`` and is an integer with
  ``|a| <= ACT_LIMIT``, rounded and clamped after every layer;
* a convolution's weights are integers with ``|w| <= WEIGHT_LIMIT`` and a power-of-two
  scale per output channel (its shift); its bias is an integer at the scale of the
  accumulator, below ``BIAS_LIMIT`` = 2**50;
* the arithmetic runs on float64 arrays that hold integers. No product or partial sum can
  reach 2**53 (``ACT_LIMIT * WEIGHT_LIMIT * fan-in`` with fan-in below ``MAX_FAN_IN`` stays
  below 2**51, the bias below 2**50), so every sum is exact in any order and with any BLAS,
  and rescaling by a power of two followed by round-half-even is exact;
* ``tanh`` is a table of integers (computed with correctly rounded decimal arithmetic)
  interpolated linearly in integer arithmetic.

Arrays are ``C x H x W`` (one picture). This module is the only implementation of these
networks: the torch backend and the onnx runtime both call it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FRAC = 15  # fractional bits of every activation
ACT_LIMIT = (1 << 24) - 1  # |activation| bound (values up to +-512)
WEIGHT_LIMIT = (1 << 14) - 1
MAX_FAN_IN = 1 << 13  # products * fan-in < 2**51: exact in float64 with room for the bias
MAX_SHIFT = 40
BIAS_LIMIT = float(1 << 50)
COLUMNS_BYTES = 32 << 20  # the stacked inputs of a convolution, per matrix product

TANH_STEP_BITS = 7  # table step 2**-7 over [0, 8]
TANH_FRAC = 30
TANH_ENTRIES = (8 << TANH_STEP_BITS) + 1
# What a weight file may hold in each integer tensor: the bounds the exactness rests on.
INTEGER_BOUNDS = {
    "weight_int": (np.dtype(np.int16), WEIGHT_LIMIT),
    "weight_shift": (np.dtype(np.int8), MAX_SHIFT),
    "bias_int": (np.dtype(np.int64), int(BIAS_LIMIT)),
}


def integer_problem(key: str, array: np.ndarray) -> str | None:
    """What is wrong with a stored integer tensor (dtype, range), or None; other keys: None."""
    bounds = INTEGER_BOUNDS.get(key.rpartition(".")[2])
    if bounds is None:
        return None
    dtype, limit = bounds
    if array.dtype != dtype:
        return f"{key} is {array.dtype}, not {dtype}"
    if array.size and not -limit <= int(array.min()) <= int(array.max()) <= limit:
        return f"{key} holds values beyond +-{limit} ({int(array.min())}..{int(array.max())})"
    return None


def to_fixed(x: np.ndarray) -> np.ndarray:
    """Float values -> clamped fixed-point integers (float64) at ``FRAC`` bits."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * (1 << FRAC)), -ACT_LIMIT, ACT_LIMIT)


def from_fixed(a: np.ndarray) -> np.ndarray:
    """Fixed-point integers -> their exact float64 values."""
    return np.asarray(a, dtype=np.float64) * (2.0**-FRAC)


@dataclass(frozen=True)
class IntegerConv:
    """A convolution (or transposed convolution) on fixed-point integers.

    ``weight`` is the stored int16 tensor (``out x in x k x k``, or ``in x out x k x k``
    when transposed); ``scale`` is ``2**-shift`` per output channel, ``bias`` the integer
    bias at the accumulator's scale. The sums are matrix products in float64: any order
    gives the same integers.
    """

    weight: np.ndarray  # as stored (int16)
    scale: np.ndarray  # out, float64 powers of two
    bias: np.ndarray  # out, float64 holding integers
    stride: int
    padding: int
    transposed: bool = False
    output_padding: int = 0

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], key: str, layer: Mapping[str, int | str]
    ) -> IntegerConv:
        """The layer ``key`` of a weight file (its ``weight_int``, ``weight_shift`` and
        ``bias_int``), laid out as ``layer`` says (kind, stride, padding, output padding)."""
        weight = np.asarray(arrays[f"{key}.weight_int"])
        transposed = layer["kind"] == "deconv"
        out = weight.shape[1 if transposed else 0] if weight.ndim == 4 else -1
        shapes = [arrays[f"{key}.{name}"].shape for name in ("weight_shift", "bias_int")]
        if weight.ndim != 4 or shapes != [(out,), (out,)] or weight.shape[2] != weight.shape[3]:
            raise ValueError(f"size mismatch for the integer weights of {key}")
        if layout_problem(layer, weight.shape[3]):
            raise ValueError(f"{key}: {layout_problem(layer, weight.shape[3])}")
        if weight.size // out >= MAX_FAN_IN:
            raise ValueError(f"{key}: fan-in {weight.size // out} too large for exact arithmetic")
        shift = np.asarray(arrays[f"{key}.weight_shift"], dtype=np.float64)
        return cls(
            weight,
            np.exp2(-shift),
            np.asarray(arrays[f"{key}.bias_int"], dtype=np.float64),
            int(layer["stride"]),
            int(layer["padding"]),
            transposed,
            int(layer.get("output_padding", 0)),
        )

    @property
    def channels(self) -> tuple[int, int]:
        """(in, out) channels."""
        a, b = self.weight.shape[:2]
        return (a, b) if self.transposed else (b, a)

    @functools.cached_property
    def taps(self) -> np.ndarray:
        """``taps[ky, kx]``: the ``out x in`` matrix of one kernel position (float64, made
        on first use)."""
        order = (2, 3, 1, 0) if self.transposed else (2, 3, 0, 1)
        return np.ascontiguousarray(self.weight.transpose(order), dtype=np.float64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Fixed-point integers in, fixed-point integers out (float64 holding integers)."""
        acc = self._transposed(x) if self.transposed else self._direct(x)
        acc += self.bias[:, None, None]
        acc *= self.scale[:, None, None]
        return np.clip(np.round(acc, out=acc), -ACT_LIMIT, ACT_LIMIT, out=acc)

    def _direct(self, x: np.ndarray) -> np.ndarray:
        k, s, p = self.taps.shape[0], self.stride, self.padding
        c, h, w = x.shape
        if k == 1 and s == 1 and p == 0:
            return (self.taps[0, 0] @ x.reshape(c, -1)).reshape(-1, h, w)
        padded = np.pad(x, ((0, 0), (p, p), (p, p)))
        rows, cols = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        # Each kernel position's input, stacked (im2col): one matrix product per band of
        # output rows, the band's columns within COLUMNS_BYTES.
        windows = sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::s, ::s]
        weights = self.matrix
        acc = np.empty((weights.shape[0], rows, cols))
        band = max(1, COLUMNS_BYTES // (8 * k * k * c * cols))
        for r0 in range(0, rows, band):
            part = windows[:, r0 : r0 + band].transpose(3, 4, 0, 1, 2).reshape(k * k * c, -1)
            acc[:, r0 : r0 + band] = (weights @ part).reshape(-1, min(band, rows - r0), cols)
        return acc

    @functools.cached_property
    def matrix(self) -> np.ndarray:
        """The weights as one ``out x (k k in)`` matrix, in the order of :meth:`_direct`'s
        stacked inputs."""
        k, _, out, cin = self.taps.shape
        return self.taps.transpose(2, 0, 1, 3).reshape(out, k * k * cin)

    def _transposed(self, x: np.ndarray) -> np.ndarray:
        k, s, p, extra = self.taps.shape[0], self.stride, self.padding, self.output_padding
        c, h, w = x.shape
        rows, cols = (h - 1) * s - 2 * p + k + extra, (w - 1) * s - 2 * p + k + extra
        full = np.zeros(
            (self.taps.shape[2], max((h - 1) * s + k, p + rows), max((w - 1) * s + k, p + cols))
        )
        flat = x.reshape(c, -1)
        for ky in range(k):
            for kx in range(k):
                part = (self.taps[ky, kx] @ flat).reshape(-1, h, w)
                full[:, ky : ky + s * (h - 1) + 1 : s, kx : kx + s * (w - 1) + 1 : s] += part
        return full[:, p : p + rows, p : p + cols]


RELU = "relu"


def layout_problem(layer: Mapping, kernel: int) -> str | None:
    """What is wrong with a convolution's layout (kind, stride, padding) for a kernel of this
    size, or None: the format's convolutions are 'same'-padded, stride 1 or 2, and a
    transposed one upsamples by exactly its stride."""
    kind, stride = layer.get("kind"), layer.get("stride")
    padding, extra = layer.get("padding"), layer.get("output_padding", 0)
    if kind not in ("conv", "deconv") or stride not in (1, 2) or padding != kernel // 2:
        return f"a layout the format does not use ({dict(layer)})"
    if extra != (stride - 1 if kind == "deconv" else 0):
        return f"a layout the format does not use ({dict(layer)})"
    return None


@dataclass(frozen=True)
class IntegerNetwork:
    """A sequence of integer convolutions and ReLUs (the integer twin of an
    ``nn.Sequential`` of exact convolutions, as its layout describes it)."""

    layers: tuple[IntegerConv | str, ...]

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], prefix: str, layout: Sequence[Mapping]
    ) -> IntegerNetwork:
        layers = [
            RELU
            if layer["kind"] == RELU
            else IntegerConv.from_arrays(arrays, f"{prefix}.{i}", layer)
            for i, layer in enumerate(layout)
        ]
        return cls(tuple(layers))

    def channels(self) -> tuple[int, int]:
        """(in, out) channels; ValueError if a layer does not take its predecessor's."""
        convs = [layer for layer in self.layers if isinstance(layer, IntegerConv)]
        for a, b in zip(convs, convs[1:], strict=False):
            if a.channels[1] != b.channels[0]:
                raise ValueError(
                    f"a layer of {a.channels[1]} channels feeds one of {b.channels[0]}"
                )
        return convs[0].channels[0], convs[-1].channels[1]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = np.maximum(x, 0.0) if layer == RELU else layer(x)  # type: ignore[operator]
        return x


@functools.cache
def tanh_table() -> np.ndarray:
    """tanh at steps of 2**-7 on [0, 8], as integers at 2**-30 (correctly rounded)."""
    values = []
    with localcontext() as ctx:
        ctx.prec = 40
        for i in range(TANH_ENTRIES):
            e = (Decimal(2 * i) / (1 << TANH_STEP_BITS)).exp()
            t = (e - 1) / (e + 1) * (1 << TANH_FRAC)
            values.append(int(t.to_integral_value()))
    table = np.array(values, dtype=np.float64)
    table.flags.writeable = False
    return table


def half_tanh(a: np.ndarray) -> np.ndarray:
    """``0.5 * tanh`` of fixed-point integers, as fixed-point integers (exact)."""
    table = tanh_table()
    step = FRAC - TANH_STEP_BITS
    mag = np.minimum(np.abs(a), ((TANH_ENTRIES - 1) << step) - 1)
    index = np.floor(mag * 2.0**-step)
    within = mag - index * (1 << step)
    lo, hi = table[index.astype(np.int64)], table[index.astype(np.int64) + 1]
    t = lo + np.floor((hi - lo) * within * 2.0**-step)
    return np.sign(a) * np.round(t * 2.0 ** -(TANH_FRAC + 1 - FRAC))


def scale_thresholds(scale_table: np.ndarray) -> np.ndarray:
    """Integer thresholds for the scale-table index of fixed-point scales.

    compressai's index of a scale ``s`` is the number of table scales below ``s`` (the last
    one excluded); for an integer ``a`` standing for ``a * 2**-FRAC``, ``t < a * 2**-FRAC``
    exactly when ``floor(t * 2**FRAC) < a``.
    """
    return np.floor(np.asarray(scale_table, dtype=np.float64)[:-1] * (1 << FRAC))


def scale_indexes(scales: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Table index of each fixed-point scale: the count of thresholds below it."""
    return np.searchsorted(thresholds, scales, side="left")
