"""The latent codec: hyperprior z plus a channel-wise conditional Gaussian model for y.

y (S slices of 64 channels) is scaled by a gain unit, then each slice's mean and scale come
from the hyper features and the slices decoded before it, and a latent residual prediction
(LRP) refines each decoded slice (Minnen & Singh, ICIP 2020).  With ``context_channels`` a
tensor the decoder already has (the human layer: the decoded machine latent) is added into
the hyper features, so every slice's mean and scale are conditioned on it.  ``forward`` is
the training path (float, likelihoods); ``compress``/``decompress`` drive the range coder
with the integer-exact twins of the same networks (:mod:`fusioncodec.nets.exact`), so every
table index, mean and decoded latent is identical on every device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from fusioncodec._torchvision import ensure_torchvision
from fusioncodec.coding import CategoricalTables, RangeDecoder, RangeEncoder
from fusioncodec.coding.tables import ESCAPE_RANGE
from fusioncodec.nets.entropy import (
    HostFreeBottleneck,
    coder_tables,
    decoded_symbols,
    load_table_buffers,
    min_payload_bits,
    rounded_likelihood,
    tables_problem,
    update_tables,
)
from fusioncodec.nets.exact import (
    ACT_LIMIT,
    FRAC,
    exact_conv,
    exact_deconv,
    from_fixed,
    half_tanh,
    quantize_all,
    run_exact,
    scale_indexes,
    scale_thresholds,
    to_fixed,
)
from fusioncodec.nets.latent_codec import LatentCodec
from fusioncodec.nets.layers import GainUnit, conv
from fusioncodec.nets.tiling import reader, run_tiled, tiled

ensure_torchvision()
from compressai.entropy_models import GaussianConditional  # noqa: E402
from compressai.ops import quantize_ste as ste_round  # noqa: E402

SLICE_CHANNELS = 64
# Tiles of the networks at latent resolution, in y positions (16 px) and z positions (64 px):
# a few hundred MB at most for any picture size; a picture up to 2048 px is one tile.
Y_TILE, Z_TILE = 128, 32


def _bands(rows: int, band: int = 64) -> list[slice]:
    """Row bands of a latent: element-wise work on one band at a time keeps transients small."""
    return [slice(r, min(r + band, rows)) for r in range(0, rows, band)]


def _symbols(y: Tensor, gain: Tensor, means: Tensor) -> Tensor:
    """The integer symbols of one slice: ``round(y * gain - mean)`` in float64 (means in
    fixed point), as int32 within the escape range (NaN as 0), one row band at a time."""
    out = torch.empty(means.shape, dtype=torch.int32, device=means.device)
    for rows in _bands(means.shape[-2]):
        scaled = (y[..., rows, :] * gain).double()  # y * gain in float32, as before
        exact = torch.round(scaled - from_fixed(means[..., rows, :].double()))
        limited = exact.nan_to_num_(0.0).clamp_(-ESCAPE_RANGE, ESCAPE_RANGE - 1)
        out[..., rows, :] = limited.to(torch.int32)
    return out


class SliceLatentCodec(LatentCodec):
    """Hyperprior + S-slice channel-conditional entropy model with LRP and gain units."""

    def __init__(
        self,
        slices: int,
        hyper_channels: int = 192,
        z_channels: int = 128,
        levels: int = 8,
        init_log_gain: Tensor | None = None,
        context_channels: int = 0,
    ) -> None:
        super().__init__()
        m, hc = slices * SLICE_CHANNELS, hyper_channels
        self.slices = slices
        self.gain = GainUnit(m, levels, init_log_gain)
        self.h_a = nn.Sequential(
            conv(m, hc, 3, 1),
            nn.ReLU(inplace=True),
            conv(hc, hc),
            nn.ReLU(inplace=True),
            conv(hc, z_channels),
        )
        # Everything the decoder runs before the range decoder reads is integer-exact.
        self.h_s = nn.Sequential(
            exact_deconv(z_channels, hc),
            nn.ReLU(inplace=True),
            exact_deconv(hc, hc),
            nn.ReLU(inplace=True),
            exact_conv(hc, hc, 3, 1),
        )
        self.param_nets = nn.ModuleList(
            nn.Sequential(
                exact_conv(hc + SLICE_CHANNELS * i, 128, 1, 1),
                nn.ReLU(inplace=True),
                exact_conv(128, 128, 3, 1),
                nn.ReLU(inplace=True),
                exact_conv(128, 2 * SLICE_CHANNELS, 1, 1),
            )
            for i in range(slices)
        )
        self.lrp_nets = nn.ModuleList(
            nn.Sequential(
                exact_conv(hc + SLICE_CHANNELS * (i + 1), 96, 1, 1),
                nn.ReLU(inplace=True),
                exact_conv(96, SLICE_CHANNELS, 3, 1),
            )
            for i in range(slices)
        )
        self.context: nn.Module | None = None
        if context_channels:
            self.context = nn.Sequential(
                exact_conv(context_channels, hc, 3, 1),
                nn.ReLU(inplace=True),
                exact_conv(hc, hc, 3, 1),
            )
            nn.init.zeros_(self.context[-1].weight)  # starts as the unconditioned model
            nn.init.zeros_(self.context[-1].bias)
        self.entropy_bottleneck = HostFreeBottleneck(z_channels)
        self.gaussian_conditional = GaussianConditional(None)
        self._tables: tuple[CategoricalTables, CategoricalTables] | None = None

    @property
    def channels(self) -> int:
        return self.slices * SLICE_CHANNELS

    def _hyper(self, z_hat: Tensor, context: Tensor | None) -> Tensor:
        hyper = self.h_s(z_hat)
        if self.context is not None:
            if context is None:
                raise ValueError("this latent codec is conditioned: give its context")
            hyper = hyper + self.context(context)
        return hyper

    def _params(self, i: int, hyper: Tensor, decoded: list[Tensor]) -> tuple[Tensor, Tensor]:
        means, scales = self.param_nets[i](torch.cat([hyper, *decoded], 1)).chunk(2, 1)
        return means, scales

    def _refine(self, i: int, hyper: Tensor, decoded: list[Tensor]) -> Tensor:
        lrp = self.lrp_nets[i](torch.cat([hyper, *decoded], 1))
        return decoded[-1] + 0.5 * torch.tanh(lrp)

    def forward(
        self, y: Tensor, q: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Training path: quantised latent (gain removed) and likelihoods of y and z, in
        float32 under any autocast. The rate is charged on noisy latents, or on the rounded
        ones (straight-through) while :attr:`rounded_rate` is set."""
        with torch.autocast(y.device.type, enabled=False):
            context = None if context is None else context.float()
            return self._forward(y.float(), q, context)

    def _forward(
        self, y: Tensor, q: Tensor, context: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        rounded = self.rounded_rate
        yg = y * self.gain.gain(q)
        z = self.h_a(yg)
        _, z_likelihoods = self.entropy_bottleneck(z, straight_through=rounded)
        medians = self.entropy_bottleneck._get_medians()
        hyper = self._hyper(ste_round(z - medians) + medians, context)
        decoded: list[Tensor] = []
        likelihoods = []
        for i, y_slice in enumerate(yg.chunk(self.slices, 1)):
            means, scales = self._params(i, hyper, decoded)
            if rounded:
                lik = rounded_likelihood(self.gaussian_conditional, y_slice, scales, means)
            else:
                _, lik = self.gaussian_conditional(y_slice, scales, means=means)
            likelihoods.append(lik)
            decoded.append(ste_round(y_slice - means) + means)
            decoded[-1] = self._refine(i, hyper, decoded)
        y_hat = torch.cat(decoded, 1) * self.gain.inverse(q)
        return y_hat, {"y": torch.cat(likelihoods, 1), "z": z_likelihoods}

    # -- entropy coding ---------------------------------------------------------------

    def update(self) -> None:
        """Make the integer networks and the integer CDF tables from the current weights
        (after training; the float weights of the integer networks move to the values of
        their integers)."""
        quantize_all(self)
        update_tables(self.entropy_bottleneck, self.gaussian_conditional)
        self._tables = None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        """Load weights, resizing the CDF-table buffers to the stored shapes."""
        load_table_buffers(self.entropy_bottleneck, self.gaussian_conditional, state_dict)
        self._tables = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def tables(self) -> tuple[CategoricalTables, CategoricalTables]:
        """The (z, y) table sets, built once from the stored integer CDFs."""
        if self._tables is None:
            self._tables = coder_tables(self.entropy_bottleneck, self.gaussian_conditional)
        return self._tables

    def min_payload_bits(self, z_shape: tuple[int, int]) -> float:
        return min_payload_bits(self.entropy_bottleneck, z_shape)

    def table_problem(self) -> str | None:
        return tables_problem(self.entropy_bottleneck, self.gaussian_conditional)

    def _z_indexes(self, shape: torch.Size) -> np.ndarray:
        c = shape[1]
        return np.broadcast_to(np.arange(c)[:, None, None], (c, shape[2], shape[3])).ravel()

    @torch.no_grad()
    def compress(
        self, y: Tensor, q: Tensor, encoder: RangeEncoder, context: Tensor | None = None
    ) -> Tensor:
        """Range-code y (batch of one); returns the decoder's exact reconstruction of it."""
        z_tables, _ = self.tables()
        gain = self.gain.gain(q)  # y * gain is formed a tile or a slice at a time, never whole
        z = tiled(lambda t: self.h_a(t * gain), y, Z_TILE, 3, scale_in=4)  # float: rounding only
        medians = self.entropy_bottleneck._get_medians()
        z_sym = torch.round(z - medians).cpu().numpy().ravel()
        z_values = z_tables.encode(encoder, z_sym, self._z_indexes(z.shape))
        z_values = torch.from_numpy(z_values.reshape(z.shape)).to(z.device)
        return self._code_slices(z_values, (y, gain), q, context, encoder=encoder)

    @torch.no_grad()
    def decompress(
        self,
        decoder: RangeDecoder,
        z_shape: tuple[int, int],
        q: Tensor,
        device: torch.device,
        context: Tensor | None = None,
        echo: RangeEncoder | None = None,
        words: int | None = None,
    ) -> Tensor:
        """Inverse of :meth:`compress` given the hyper-latent's spatial size.

        With ``echo``, every decoded symbol is encoded into it again, in the encoder's order:
        a payload made by :meth:`compress` comes out word for word, anything else does not;
        decoding stops as soon as the echo needs more than ``words`` words (the payload ran
        out before the latent did).
        """
        z_tables, _ = self.tables()
        shape = torch.Size((1, self.entropy_bottleneck.channels, *z_shape))
        z_indexes = self._z_indexes(shape)
        z_values = decoded_symbols(z_tables, z_indexes, decoder, echo, words)
        z_values = torch.from_numpy(z_values.reshape(shape)).to(device)
        return self._code_slices(
            z_values, None, q, context, decoder=decoder, echo=echo, words=words
        )

    def _hyper_fixed(self, z_values: Tensor, context: Tensor | None) -> Tensor:
        """The hyper-synthesis output (and the context's share) in fixed point, as int32."""
        device = z_values.device
        medians = to_fixed(self.entropy_bottleneck._get_medians().to(device))
        z_hat = (z_values.double() * (1 << FRAC) + medians).clamp_(-ACT_LIMIT, ACT_LIMIT)
        # Exact values are stored as int32 (|a| < 2**31) and the networks run in tiles: an
        # integer network gives the same numbers in any tiling (nets.tiling).
        hyper = tiled(
            lambda t: run_exact(self.h_s, t), z_hat, Z_TILE, 2, scale_out=4, dtype=torch.int32
        )
        if self.context is None:
            return hyper
        if context is None:
            raise ValueError("this latent codec is conditioned: give its context")
        hyper += tiled(
            lambda t: run_exact(self.context, to_fixed(t)), context, Y_TILE, 2, dtype=torch.int32
        )
        return hyper.clamp_(-ACT_LIMIT, ACT_LIMIT)

    @staticmethod
    def _slice_params(net: nn.Sequential, inputs: Tensor, thresholds: Tensor) -> Tensor:
        """Means (fixed point) and scale-table indexes of one slice, stacked as channels."""
        means, scales = run_exact(net, inputs).chunk(2, 1)
        return torch.cat([means, scale_indexes(scales, thresholds).to(means)], 1)

    def _code_slices(
        self,
        z_values: Tensor,
        scaled: tuple[Tensor, Tensor] | None,
        q: Tensor,
        context: Tensor | None,
        encoder: RangeEncoder | None = None,
        decoder: RangeDecoder | None = None,
        echo: RangeEncoder | None = None,
        words: int | None = None,
    ) -> Tensor:
        """Code y slice by slice in fixed point (see :mod:`fusioncodec.nets.exact`).

        ``scaled``: the encoder's (y, gain); y times gain is what is coded. The decoded
        latent is exact; the returned float32 tensor (gain removed) is computed from it by
        correctly rounded IEEE operations only, so it is bit-identical on every
        device, and so is anything conditioned on it.
        """
        _, y_tables = self.tables()
        device = z_values.device
        grid = (4 * z_values.shape[-2], 4 * z_values.shape[-1])  # y positions
        hyper = self._hyper_fixed(z_values, context)
        thresholds = scale_thresholds(self.gaussian_conditional.scale_table).to(device)
        # Exact fixed-point slices (int32, unclamped); at the end, y_hat in the same memory.
        store = torch.empty((1, self.channels, *grid), dtype=torch.int32, device=device)
        decoded: list[Tensor] = []

        def with_inputs(t: Tensor) -> Tensor:
            """hyper + the decoded slices, clamped for the networks (float64 holding ints)."""
            return torch.cat([t[:, :hc], t[:, hc:].clamp_(-ACT_LIMIT, ACT_LIMIT)], 1)

        hc = hyper.shape[1]
        for i in range(self.slices):
            part = slice(i * SLICE_CHANNELS, (i + 1) * SLICE_CHANNELS)
            params = run_tiled(
                lambda t, net=self.param_nets[i]: self._slice_params(
                    net, with_inputs(t), thresholds
                ),
                reader(hyper, *decoded),
                grid,
                Y_TILE,
                2,
                dtype=torch.int32,
            )
            means, indexes = params[:, :SLICE_CHANNELS], params[:, SLICE_CHANNELS:]
            flat_indexes = indexes.cpu().numpy().ravel()
            if encoder is not None:
                assert scaled is not None
                symbols = _symbols(scaled[0][:, part], scaled[1][:, part], means)
                values = y_tables.encode(encoder, symbols.cpu().numpy().ravel(), flat_indexes)
                del symbols
            else:
                values = decoded_symbols(y_tables, flat_indexes, decoder, echo, words)
            del flat_indexes, indexes
            values = torch.from_numpy(values.reshape(means.shape)).to(device)
            for rows in _bands(grid[0]):
                band = values[..., rows, :].long() * (1 << FRAC) + means[..., rows, :]
                store[:, part, rows] = band.to(torch.int32)
            del values, means, params
            decoded.append(store[:, part])
            lrp = run_tiled(
                lambda t, net=self.lrp_nets[i]: half_tanh(run_exact(net, with_inputs(t))),
                reader(hyper, *decoded),
                grid,
                Y_TILE,
                2,
                dtype=torch.int32,
            )
            decoded[-1] += lrp
            del lrp
        del hyper, decoded
        gains = self.gain.inverse_exact(float(q.item())).to(device)
        y_hat = store.view(torch.float32)
        for rows in _bands(grid[0]):  # each band read as int32, then written as its float32
            exact = from_fixed(store[..., rows, :].double())
            y_hat[..., rows, :] = (exact * gains).float()
        return y_hat
