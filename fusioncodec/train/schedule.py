"""Learning-rate schedules over a run's progress (0 at the start, 1 at its end)."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "step")
FLOOR_LR = 1e-6  # where the cosine schedule ends


def learning_rate(
    lr: float, progress: float, schedule: str = "cosine", decay_at: float = 0.8
) -> float:
    """The learning rate at ``progress`` in [0, 1].

    ``cosine``: from ``lr`` down to :data:`FLOOR_LR` along half a cosine wave. ``step``: ``lr``
    until ``decay_at``, then a tenth of it (the recipe before 0.3).
    """
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "step":
        return lr * (0.1 if progress >= decay_at else 1.0)
    if schedule != "cosine":
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    floor = min(FLOOR_LR, lr)
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def average_decay(decay: float, updates: int) -> float:
    """Decay of the weights' moving average after ``updates`` updates: ``decay``, but at most
    ``(1 + t) / (10 + t)``, so a short run's average is not held back by its starting weights."""
    return min(decay, (1.0 + updates) / (10.0 + updates))
