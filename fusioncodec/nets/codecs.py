"""The networks: single-layer codec (machine layer and baseline), additional-information
codec, slice-wise fusion, human decoder, and the two-layer bundle that holds them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from fusioncodec.nets.config import CodecConfig
from fusioncodec.nets.latent import SLICE_CHANNELS  # also registers the "slices" codec
from fusioncodec.nets.latent_codec import LatentCodec, latent_codec
from fusioncodec.nets.layers import analysis_transform, conv, synthesis_transform


class SingleLayerCodec(nn.Module):
    """Image -> y (S slices) -> image.  The SA-ICM machine codec and the baseline LIC."""

    def __init__(self, config: CodecConfig, lambdas: list[float]) -> None:
        super().__init__()
        m = config.slices * SLICE_CHANNELS
        self.g_a = analysis_transform(3, config.n, m)
        self.g_s = synthesis_transform(m, config.n)
        self.latent = latent_codec(config, config.slices, lambdas)

    def forward(self, x: Tensor, q: Tensor) -> dict[str, Tensor | dict[str, Tensor]]:
        y_hat, likelihoods = self.latent(self.g_a(x), q)
        return {"x_hat": self.g_s(y_hat), "y_hat": y_hat, "likelihoods": likelihoods}

    def latent_codecs(self) -> list[LatentCodec]:
        return [self.latent]


class AdditionalCodec(nn.Module):
    """The human layer's own analysis transform and m-slice latent codec.

    With ``config.conditioned`` the decoded machine latent (which the decoder has before it
    reads this layer) conditions both the encoder's analysis and the entropy model of every
    slice, so the layer carries what the machine layer lacks instead of the whole picture.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        k = config.m * SLICE_CHANNELS
        self.g_a = analysis_transform(3, config.n, k)
        self.condition: nn.Module | None = None
        if config.conditioned:
            self.condition = nn.Sequential(
                conv(config.slices * SLICE_CHANNELS, k, 3, 1), nn.LeakyReLU(), conv(k, k, 3, 1)
            )
            nn.init.zeros_(self.condition[-1].weight)  # starts as the unconditioned encoder
            nn.init.zeros_(self.condition[-1].bias)
        context = config.slices * SLICE_CHANNELS if config.conditioned else 0
        self.latent = latent_codec(config, config.m, config.human_lambdas, context)

    def analyze(self, x: Tensor, y_machine: Tensor) -> Tensor:
        """The additional latent before quantisation (``y_machine``: decoded machine latent)."""
        y = self.g_a(x)
        return y if self.condition is None else y + self.condition(y_machine)

    def forward(self, x: Tensor, q: Tensor, y_machine: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.latent(self.analyze(x, y_machine), q, self.context(y_machine))

    def context(self, y_machine: Tensor) -> Tensor | None:
        """What the entropy model is conditioned on (None for unconditioned weights)."""
        return y_machine if self.latent.context is not None else None


class SliceFusion(nn.Module):
    """Adds the additional latent's m slices into the first m slices of the machine latent.

    A learned fusion network can replace this module as long as it keeps the signature.
    """

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m

    def forward(self, machine: Tensor, additional: Tensor) -> Tensor:
        k = self.m * SLICE_CHANNELS
        return torch.cat([machine[:, :k] + additional, machine[:, k:]], 1)

    def fuse_(self, machine: Tensor, additional: Tensor) -> Tensor:
        """:meth:`forward` into ``machine`` itself (the same numbers, no second latent)."""
        machine[:, : self.m * SLICE_CHANNELS] += additional
        return machine


class HumanDecoder(nn.Module):
    """Fusion followed by the human synthesis transform."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.fusion = SliceFusion(config.m)
        self.g_s = synthesis_transform(config.slices * SLICE_CHANNELS, config.n)

    def forward(self, machine: Tensor, additional: Tensor) -> Tensor:
        return self.g_s(self.fusion(machine, additional))


class ScalableCodec(nn.Module):
    """The two-layer product: machine codec, additional codec and human decoder."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.machine = SingleLayerCodec(config, config.machine_lambdas)
        self.additional = AdditionalCodec(config)
        self.human = HumanDecoder(config)

    def forward(self, x: Tensor, q_machine: Tensor, q_human: Tensor) -> dict:
        """Both layers; the machine latent is detached so human losses never move it."""
        machine = self.machine(x, q_machine)
        y_machine = machine["y_hat"].detach()
        y_add, add_likelihoods = self.additional(x, q_human, y_machine)
        x_human = self.human(y_machine, y_add)
        return {"machine": machine, "x_human": x_human, "human_likelihoods": add_likelihoods}

    def latent_codecs(self) -> list[LatentCodec]:
        return [self.machine.latent, self.additional.latent]


# The model kinds a weight file can hold (its card's "kind"): what each is built from.
MODEL_KINDS: dict[str, Callable[[CodecConfig], nn.Module]] = {
    "scalable": ScalableCodec,  # the product: machine codec, additional codec, human decoder
    "baseline": lambda config: SingleLayerCodec(config, config.human_lambdas),  # one layer
}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
