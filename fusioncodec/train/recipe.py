"""The training recipe's settings and their defaults (light: the CLI reads them at start-up).

A run is described by its stage, its data (built-in ``SOURCES`` shrunk by a factor in
``DEFAULT_SCALE``), its quality :class:`Balance` and its learning-rate schedule
(:mod:`fusioncodec.train.schedule`). ``Balance.none()``, ``scale=(1, 1)`` and the ``step``
schedule give the recipe before fusioncodec 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES = ("machine", "human", "joint", "baseline", "decoder")
DECODERS = ("human", "machine")  # what the decoder stage can train
DEFAULT_DECODERS = ("human",)
PRECISIONS = ("fp32", "bf16")  # of the transforms in training (fusioncodec.train.precision)
SOURCES = ("bsds500", "coco", "sun80")  # the built-in sources under the training folder
DEFAULT_SCALE = (0.5, 0.9)  # training pictures are shrunk by a random factor in this range
HELD_OUT_EVERY = 10  # every 10th sun80 photo (sorted by name) is kept for validation


@dataclass(frozen=True)
class Balance:
    """How qualities are drawn and weighted.

    ``human`` and ``machine`` are the exponents of :func:`quality_weight` for the whole-image
    loss (human layer, baseline) and the edge loss (machine layer), fitted to the shipped
    weights' gradient norms by ``scripts/reproduce/fit_quality_balance.py``; 0 weights every crop
    alike. ``ends``: every quality level drawn equally often, the two ends included.
    """

    human: float = 0.7
    machine: float = 0.65
    ends: bool = True

    @classmethod
    def none(cls) -> Balance:
        """The recipe before 0.3: no weights, end levels drawn half as often."""
        return cls(0.0, 0.0, False)


DEFAULT_BALANCE = Balance()
