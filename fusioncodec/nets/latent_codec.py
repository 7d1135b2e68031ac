"""The contract of a latent codec: what the codecs, training, the weight files and the
container need of an entropy model (compare CompressAI's ``latent_codecs/base.py``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from fusioncodec.exact.latent import LatentModel


class LatentCodec(nn.Module, ABC):
    """What the codecs need of a latent codec (compare CompressAI's ``LatentCodec``):

    * ``forward(y, q, context)``: the training path, the quantised latent (float) and the
      likelihoods it is charged for, in float32 under any autocast (training runs the
      transforms in bf16, never the entropy model); the rate is charged on noisy latents,
      or on the rounded ones while ``rounded_rate`` is set (a mode, like ``training``);
    * ``coder()``: its coding path, a :class:`fusioncodec.exact.LatentModel` (numpy, integer
      exact) made from the current weights, which both runtimes call: the range-coded stream
      and the decoder's exact latent, the same on every device;
    * ``update()`` after training, ``table_problem()`` before coding with loaded tables.

    ``context`` is a tensor the decoder already has (the human layer: the machine latent).
    A new entropy model subclasses this; the codecs, the weight files and the container
    never name the class it is.
    """

    rounded_rate: bool = False

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
