"""The latent coder of the file format: hyper-latent z, then y slice by slice, over the
integer networks (:mod:`fusioncodec.exact.networks`), the one implementation both runtimes
call.

y (S slices of 64 channels) is scaled by a gain; each slice's mean and scale-table index
come from the hyper features and the slices decoded before it, and a latent residual
prediction refines each decoded slice (Minnen & Singh, ICIP 2020). With a context (the
human layer: the decoded machine latent) an integer network adds it into the hyper features.
The only float work is the encoder's hyper-analysis (z is rounded, then coded), which each
runtime brings as a function; everything the decoder computes is exact integers.

A :class:`LatentModel` is made from a latent codec's tensors (named as in a weight file,
without the codec's prefix) and its layout (which layer is a convolution, with which stride
and padding), as :meth:`fusioncodec.nets.latent.SliceLatentCodec.layout` writes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

import numpy as np

from fusioncodec.coding import CategoricalTables, RangeEncoder
from fusioncodec.coding.tables import ESCAPE_RANGE
from fusioncodec.exact.networks import (
    ACT_LIMIT,
    FRAC,
    IntegerNetwork,
    from_fixed,
    half_tanh,
    scale_indexes,
    scale_thresholds,
    to_fixed,
)
from fusioncodec.exact.tables import EB, GC, min_payload_bits, tables_of
from fusioncodec.tiling import run_tiled

SLICE_CHANNELS = 64
# Tiles of the networks at latent resolution, in y positions (16 px) and z positions (64 px):
# a few hundred MB at most for any picture size; a picture up to 2048 px is one tile.
Y_TILE, Z_TILE = 128, 32

#: the encoder's hyper-analysis: scaled y (1 x C x H x W float32) -> z (float32)
HyperAnalysis = Callable[[np.ndarray], np.ndarray]
#: the decoder's symbols: (a table set, the table of each symbol) -> the symbols (int32)
SymbolReader = Callable[[CategoricalTables, np.ndarray], np.ndarray]


def bands(rows: int, band: int = 64) -> list[slice]:
    """Row bands of a latent: element-wise work on one band at a time keeps transients small."""
    return [slice(r, min(r + band, rows)) for r in range(0, rows, band)]


def cut(*sources: np.ndarray) -> Callable[[int, int, int, int], np.ndarray]:
    """A tile reader over same-grid arrays: their region, channels concatenated, float64."""

    def read(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        parts = [s[..., r0:r1, c0:c1] for s in sources]
        return np.concatenate(parts, -3, dtype=np.float64)

    return read


@dataclass
class LatentModel:
    """A latent codec's integer networks, CDF tables and gains: what coding needs of it."""

    slices: int
    hyper: IntegerNetwork
    context: IntegerNetwork | None
    params: list[IntegerNetwork]
    lrps: list[IntegerNetwork]
    medians: np.ndarray  # z channels, float32: z is rounded around them
    thresholds: np.ndarray  # fixed-point scale-table thresholds
    log_gain: np.ndarray  # levels x channels, float32
    log_inverse: np.ndarray
    arrays: Mapping[str, np.ndarray] = field(repr=False)
    _tables: tuple[CategoricalTables, CategoricalTables] | None = field(default=None, repr=False)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], layout: Mapping) -> LatentModel:
        """The model of a latent codec's tensors (float ones as float32) and its layout."""

        def nets(name: str) -> list[IntegerNetwork]:
            return [
                IntegerNetwork.from_arrays(arrays, f"{name}.{i}", net)
                for i, net in enumerate(layout[name])
            ]

        quantiles = np.asarray(arrays[f"{EB}.quantiles"], dtype=np.float32)
        context = layout.get("context")
        return cls(
            slices=int(layout["slices"]),
            hyper=IntegerNetwork.from_arrays(arrays, "h_s", layout["h_s"]),
            context=None
            if context is None
            else IntegerNetwork.from_arrays(arrays, "context", context),
            params=nets("param_nets"),
            lrps=nets("lrp_nets"),
            medians=quantiles[:, 0, 1].copy(),
            thresholds=scale_thresholds(arrays[f"{GC}.scale_table"]),
            log_gain=np.asarray(arrays["gain.log_gain"], dtype=np.float32),
            log_inverse=np.asarray(arrays["gain.log_inverse"], dtype=np.float32),
            arrays=arrays,
        )

    @property
    def channels(self) -> int:
        return self.slices * SLICE_CHANNELS

    @property
    def z_channels(self) -> int:
        return len(self.medians)

    def tables(self) -> tuple[CategoricalTables, CategoricalTables]:
        """The (z, y) table sets of the range coder, built once."""
        if self._tables is None:
            if self.arrays[f"{EB}._offset"].size == 0 or self.arrays[f"{GC}._offset"].size == 0:
                raise RuntimeError("entropy tables missing: call update() after training")
            self._tables = (tables_of(self.arrays, EB), tables_of(self.arrays, GC))
        return self._tables

    def check(self) -> None:
        """ValueError unless the integer networks and gains fit together: each network takes
        the channels it will meet and gives those coding needs (shapes only, no work)."""
        hc = self.hyper.channels()[1]
        needs = [(self.hyper, "the hyper-synthesis", self.z_channels, hc)]
        if self.context is not None:
            needs.append((self.context, "the context network", self.context.channels()[0], hc))
        for i in range(self.slices):
            width = hc + SLICE_CHANNELS * i
            needs.append((self.params[i], f"slice {i}'s parameters", width, 2 * SLICE_CHANNELS))
            needs.append((self.lrps[i], f"slice {i}'s prediction", width + SLICE_CHANNELS, 64))
        for net, name, cin, cout in needs:
            if net.channels() != (cin, cout):
                raise ValueError(f"{name} maps {net.channels()} channels, coding needs {cin, cout}")
        for table in (self.log_gain, self.log_inverse):
            if table.ndim != 2 or table.shape[1] != self.channels or table.shape[0] < 2:
                raise ValueError(f"gain tables of shape {table.shape} for {self.channels} channels")

    def min_payload_bits(self, z_shape: tuple[int, int]) -> float:
        return min_payload_bits(self.arrays, z_shape)

    # -- gains --------------------------------------------------------------------------

    def gain(self, position: float) -> np.ndarray:
        """The encoder's gain at a level position (quality - 1), float32 per channel, as
        the gain unit interpolates it (encoder only: it never decides what is decoded)."""
        table = self.log_gain
        q = np.float32(min(max(position, 0.0), table.shape[0] - 1.0))
        lo = int(min(max(math.floor(q), 0), table.shape[0] - 2))
        t = np.float32(q - np.float32(lo))
        return np.exp(table[lo] * (np.float32(1) - t) + table[lo + 1] * t)

    def inverse_gain(self, position: float) -> np.ndarray:
        """The decoder's inverse gain at a level position, float64, the same on every
        machine: interpolation and ``exp`` in 40-digit decimal arithmetic, each gain rounded
        once to float64 (no libm or device maths)."""
        rows = self.log_inverse.astype(np.float64)
        position = min(max(float(position), 0.0), rows.shape[0] - 1.0)
        lo = min(int(math.floor(position)), rows.shape[0] - 2)
        with localcontext() as ctx:
            ctx.prec = 40
            t = Decimal(position) - lo
            gains = [
                float((Decimal(a) * (1 - t) + Decimal(b) * t).exp())
                for a, b in zip(rows[lo].tolist(), rows[lo + 1].tolist(), strict=True)
            ]
        return np.array(gains, dtype=np.float64)

    # -- coding -------------------------------------------------------------------------

    def z_indexes(self, z_shape: tuple[int, int]) -> np.ndarray:
        c = self.z_channels
        return np.broadcast_to(np.arange(c)[:, None, None], (c, *z_shape)).ravel()

    def compress(
        self,
        y: np.ndarray,
        position: float,
        encoder: RangeEncoder,
        hyper_analysis: HyperAnalysis,
        context: np.ndarray | None = None,
        gain: np.ndarray | None = None,
    ) -> np.ndarray:
        """Range-code ``y`` (1 x C x H x W float32) at a level position (quality - 1);
        returns the decoder's exact latent (1 x C x H x W float32, gain removed).

        ``gain``: the encoder's gain per channel (float32), by default :meth:`gain`; y times
        gain is formed a tile or a band at a time, never whole.
        """
        z_tables, _ = self.tables()
        gain = self.gain(position) if gain is None else np.asarray(gain, dtype=np.float32)
        gain = gain.reshape(1, -1, 1, 1)
        grid = (y.shape[-2] // 4, y.shape[-1] // 4)
        z = run_tiled(
            lambda t: hyper_analysis(t * gain),
            lambda r0, r1, c0, c1: y[..., 4 * r0 : 4 * r1, 4 * c0 : 4 * c1],
            grid,
            Z_TILE,
            3,
        )
        z_symbols = np.round(z - self.medians[:, None, None]).ravel()  # float: rounding only
        z_values = z_tables.encode(encoder, z_symbols, self.z_indexes(grid))
        return self.code_slices(
            z_values.reshape(self.z_channels, *grid),
            position,
            context,
            encoder=encoder,
            scaled=(y[0], gain[0]),
        )

    def decompress(
        self,
        read: SymbolReader,
        z_shape: tuple[int, int],
        position: float,
        context: np.ndarray | None = None,
    ) -> np.ndarray:
        """Inverse of :meth:`compress` given the hyper-latent's spatial size; ``read`` gives
        the symbols, table set by table set, in the encoder's order (the payload's reader:
        :class:`fusioncodec.payload.EchoReader` checks them as it goes)."""
        z_tables, _ = self.tables()
        z_values = read(z_tables, self.z_indexes(z_shape))
        return self.code_slices(
            z_values.reshape(self.z_channels, *z_shape), position, context, read=read
        )

    def hyper_fixed(self, z_values: np.ndarray, context: np.ndarray | None) -> np.ndarray:
        """The hyper-synthesis output (and the context's share) in fixed point, as int32."""
        medians = to_fixed(self.medians)[:, None, None]
        z_hat = np.clip(z_values * float(1 << FRAC) + medians, -ACT_LIMIT, ACT_LIMIT)
        # Exact values are stored as int32 (|a| < 2**31) and the networks run in tiles: an
        # integer network gives the same numbers in any tiling (fusioncodec.tiling).
        grid = z_hat.shape[-2:]
        hyper = run_tiled(self.hyper, cut(z_hat), grid, Z_TILE, 2, scale_out=4, dtype=np.int32)
        if self.context is None:
            return hyper
        if context is None:
            raise ValueError("this latent codec is conditioned: give its context")
        context = context.reshape(context.shape[-3:])
        hyper += run_tiled(
            lambda t: self.context(to_fixed(t)),  # type: ignore[misc]
            lambda r0, r1, c0, c1: context[:, r0:r1, c0:c1],
            hyper.shape[-2:],
            Y_TILE,
            2,
            dtype=np.int32,
        )
        return np.clip(hyper, -ACT_LIMIT, ACT_LIMIT, out=hyper)

    def code_slices(
        self,
        z_values: np.ndarray,
        position: float,
        context: np.ndarray | None,
        encoder: RangeEncoder | None = None,
        scaled: tuple[np.ndarray, np.ndarray] | None = None,
        read: SymbolReader | None = None,
    ) -> np.ndarray:
        """Code y slice by slice in fixed point (the encoder's y and gain in ``scaled``) at a
        level position. The decoded latent is exact; the returned float32
        latent (gain removed) is computed from it by correctly rounded IEEE operations only,
        so it is bit-identical on every machine, and so is anything conditioned on it."""
        _, y_tables = self.tables()
        grid = (4 * z_values.shape[-2], 4 * z_values.shape[-1])  # y positions
        hyper = self.hyper_fixed(z_values, context)
        hc = hyper.shape[0]
        # Exact fixed-point slices (int32, unclamped); at the end, y_hat in the same memory.
        store = np.empty((self.channels, *grid), dtype=np.int32)
        decoded: list[np.ndarray] = []

        def with_inputs(t: np.ndarray) -> np.ndarray:
            """hyper + the decoded slices, clamped for the networks (float64 holding ints)."""
            np.clip(t[hc:], -ACT_LIMIT, ACT_LIMIT, out=t[hc:])
            return t

        def slice_params(t: np.ndarray, net: IntegerNetwork) -> np.ndarray:
            means, scales = np.split(net(with_inputs(t)), 2)
            return np.concatenate([means, scale_indexes(scales, self.thresholds)])

        for i in range(self.slices):
            part = slice(i * SLICE_CHANNELS, (i + 1) * SLICE_CHANNELS)
            params = run_tiled(
                lambda t, net=self.params[i]: slice_params(t, net),
                cut(hyper, *decoded),
                grid,
                Y_TILE,
                2,
                dtype=np.int32,
            )
            means, indexes = params[:SLICE_CHANNELS], params[SLICE_CHANNELS:].ravel()
            if scaled is not None:
                symbols = slice_symbols(scaled[0][part], scaled[1][part], means)
                values = y_tables.encode(encoder, symbols.ravel(), indexes)  # type: ignore[arg-type]
                del symbols
            else:
                values = read(y_tables, indexes)  # type: ignore[misc]
            values = values.reshape(means.shape)
            for rows in bands(grid[0]):
                band = values[:, rows].astype(np.int64) * (1 << FRAC) + means[:, rows]
                store[part, rows] = band
            del values, means, params, indexes
            decoded.append(store[part])
            decoded[-1] += run_tiled(
                lambda t, net=self.lrps[i]: half_tanh(net(with_inputs(t))),
                cut(hyper, *decoded),
                grid,
                Y_TILE,
                2,
                dtype=np.int32,
            )
        del hyper, decoded
        gains = self.inverse_gain(position)[:, None, None]
        y_hat = store.view(np.float32)
        for rows in bands(grid[0]):  # each band read as int32, then written as its float32
            y_hat[:, rows] = from_fixed(store[:, rows]) * gains
        return y_hat[None]


def slice_symbols(y: np.ndarray, gain: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The integer symbols of one slice: ``round(y * gain - mean)`` in float64 (means in
    fixed point), as int32 within the escape range (NaN as 0), one row band at a time."""
    out = np.empty(means.shape, dtype=np.int32)
    for rows in bands(means.shape[-2]):
        scaled = (y[:, rows] * gain).astype(np.float64)  # y * gain in float32
        exact = np.round(scaled - from_fixed(means[:, rows]))
        out[:, rows] = np.clip(np.nan_to_num(exact, nan=0.0), -ESCAPE_RANGE, ESCAPE_RANGE - 1)
    return out
