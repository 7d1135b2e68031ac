"""The contract of a latent codec: what the codecs, training, the weight files and the
container need of an entropy model (compare CompressAI's ``latent_codecs/base.py``), and
the registry that builds the one a model card names (as CompressAI's ``register_model``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TypeVar

from torch import Tensor, nn

from fusioncodec.exact.latent import LatentModel
from fusioncodec.nets.config import LATENT_CODECS, CodecConfig


class LatentCodec(nn.Module, ABC):
    """What the codecs need of a latent codec (compare CompressAI's ``LatentCodec``):

    * ``forward(y, q, context)``: the training path, the quantised latent (float) and the
      likelihoods it is charged for, in float32 under any autocast (training runs the
      transforms in bf16, never the entropy model); the rate is charged on noisy latents,
      or on the rounded ones while ``rounded_rate`` is set (a mode, like ``training``);
    * ``coder()``: its coding path, a :class:`fusioncodec.exact.LatentModel` (numpy, integer
      exact) made from the current weights, which both runtimes call: the range-coded stream
      and the decoder's exact latent, the same on every device;
    * ``update()`` after training, ``table_problem()`` before coding with loaded tables;
    * ``hyper_analysis(scaled)`` and ``encoder_gain(q)``: what the encoder runs in float
      around the coder (the hyper-analysis of the gain-scaled latent; the gain per channel
      at level position ``q``);
    * ``aux_loss()``: what training adds to fit the entropy model's own parameters (the
      hyper-latent's quantiles), ``resample_levels(positions)``: the quality levels moved to
      new positions (a run that starts from weights trained for other lambdas);
    * ``from_config(config, slices, lambdas, context_channels)``: the codec a card describes.

    ``context`` is a tensor the decoder already has (the human layer: the machine latent).
    A new entropy model subclasses this; the codecs, the weight files and the container
    never name the class it is.
    """

    rounded_rate: bool = False

    @classmethod
    @abstractmethod
    def from_config(
        cls, config: CodecConfig, slices: int, lambdas: Sequence[float], context_channels: int = 0
    ) -> LatentCodec: ...

    @abstractmethod
    def forward(
        self, y: Tensor, q: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]: ...

    @abstractmethod
    def coder(self) -> LatentModel: ...

    @abstractmethod
    def update(self) -> None: ...

    @abstractmethod
    def table_problem(self) -> str | None: ...

    @abstractmethod
    def hyper_analysis(self, scaled: Tensor) -> Tensor: ...

    @abstractmethod
    def encoder_gain(self, q: Tensor) -> Tensor: ...

    @abstractmethod
    def aux_loss(self) -> Tensor: ...

    @abstractmethod
    def resample_levels(self, positions: Tensor) -> None: ...


_REGISTRY: dict[str, type[LatentCodec]] = {}
C = TypeVar("C", bound=type[LatentCodec])


def register_latent_codec(name: str) -> Callable[[C], C]:
    """Class decorator: the latent codec a card's ``config.latent_codec`` ``name`` builds
    (``name`` must be one of ``nets.config.LATENT_CODECS``, which have an integer path)."""

    def register(cls: C) -> C:
        if name not in LATENT_CODECS:
            raise ValueError(f"latent codec {name!r} is not in nets.config.LATENT_CODECS")
        _REGISTRY[name] = cls
        return cls

    return register


def latent_codec(
    config: CodecConfig, slices: int, lambdas: Sequence[float], context_channels: int = 0
) -> LatentCodec:
    """The latent codec ``config.latent_codec`` names, for ``slices`` slices and ``lambdas``."""
    return _REGISTRY[config.latent_codec].from_config(config, slices, lambdas, context_channels)


def registered() -> tuple[str, ...]:
    """The names that have a class."""
    return tuple(_REGISTRY)
