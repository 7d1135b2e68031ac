"""The latent codec: hyperprior z plus a channel-wise conditional Gaussian model for y.

y (S slices of 64 channels) is scaled by a gain unit, then each slice's mean and scale come
from the hyper features and the slices decoded before it, and a latent residual prediction
(LRP) refines each decoded slice (Minnen & Singh, ICIP 2020).  With ``context_channels`` a
tensor the decoder already has (the human layer: the decoded machine latent) is added into
the hyper features, so every slice's mean and scale are conditioned on it.  ``forward`` is
the training path (float, likelihoods); :meth:`SliceLatentCodec.coder` is its coding path,
:mod:`fusioncodec.exact`, the numpy integer twins of the same networks that every runtime
uses, so every table index, mean and decoded latent is identical on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fusioncodec._torchvision import ensure_torchvision
from fusioncodec.exact.latent import SLICE_CHANNELS, LatentModel
from fusioncodec.exact.tables import tables_problem
from fusioncodec.nets.config import CodecConfig
from fusioncodec.nets.entropy import (
    HostFreeBottleneck,
    load_table_buffers,
    rounded_likelihood,
    update_tables,
)
from fusioncodec.nets.exact import exact_conv, exact_deconv, layout, quantize_all
from fusioncodec.nets.latent_codec import LatentCodec, register_latent_codec
from fusioncodec.nets.layers import GainUnit, conv, lambda_log_gains

ensure_torchvision()
from compressai.entropy_models import GaussianConditional  # noqa: E402
from compressai.ops import quantize_ste as ste_round  # noqa: E402


@register_latent_codec("slices")
class SliceLatentCodec(LatentCodec):
    """Hyperprior + S-slice channel-conditional entropy model with LRP and gain units."""

    @classmethod
    def from_config(
        cls, config: CodecConfig, slices: int, lambdas: Sequence[float], context_channels: int = 0
    ) -> SliceLatentCodec:
        gains = lambda_log_gains(list(lambdas))
        hyper, z, levels = config.hyper_channels, config.z_channels, config.levels
        return cls(slices, hyper, z, levels, gains, context_channels=context_channels)

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
        self._coder: tuple[tuple, LatentModel] | None = None

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

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        """Load weights, resizing the CDF-table buffers to the stored shapes."""
        load_table_buffers(self.entropy_bottleneck, self.gaussian_conditional, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def layout(self) -> dict:
        """Which layer of each integer network is what (kind, stride, padding): with the
        tensors, what :class:`fusioncodec.exact.LatentModel` is made of."""
        return {
            "slices": self.slices,
            "h_s": layout(self.h_s),
            "context": None if self.context is None else layout(self.context),
            "param_nets": [layout(net) for net in self.param_nets],
            "lrp_nets": [layout(net) for net in self.lrp_nets],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The tensors as numpy arrays on the host, named as in a weight file."""
        return {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}

    def coder(self) -> LatentModel:
        """The latent coder of the current weights (rebuilt when any of them changed)."""
        state = list(self.state_dict(keep_vars=True).values())
        key = tuple((t.data_ptr(), t._version, t.device) for t in state)
        if self._coder is None or self._coder[0] != key:
            self._coder = (key, LatentModel.from_arrays(self.arrays(), self.layout()))
        return self._coder[1]

    def table_problem(self) -> str | None:
        return tables_problem(self.arrays())

    def hyper_analysis(self, scaled: Tensor) -> Tensor:
        return self.h_a(scaled)

    def encoder_gain(self, q: Tensor) -> Tensor:
        return self.gain.gain(q)

    def aux_loss(self) -> Tensor:
        """The hyper-latent bottleneck's quantile loss (CompressAI's ``aux_loss``)."""
        return self.entropy_bottleneck.loss()

    def resample_levels(self, positions: Tensor) -> None:
        self.gain.resample(positions)
