"""Architecture hyper-parameters, stored in every model card so weights rebuild their nets,
and the rules for a coding call's quality and layers (no torch, no numpy: the command line
checks them before anything loads)."""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field

from fusioncodec.container import LAYER_KINDS
from fusioncodec.errors import ArgumentError


def geometric(lo: float, hi: float, n: int) -> list[float]:
    """``n`` values from ``lo`` to ``hi`` in a geometric progression (6 decimals)."""
    return [round(lo * (hi / lo) ** (i / (n - 1)), 6) for i in range(n)]


STRIDE = 64  # total downsampling of image -> z; inputs are padded to a multiple of it
DEFAULT_QUALITY = 4.0  # the quality (of 1..levels) coding uses when none is given


def checked_quality(quality: float, levels: int, what: str = "quality") -> float:
    """``quality`` checked against ``1..levels`` and rounded to float32 (what a file stores):
    the one rule for a quality, at every door (API, command line, Pillow, evaluation)."""
    try:
        value = struct.unpack("<f", struct.pack("<f", float(quality)))[0]
        ok = 1 <= value <= levels
    except (TypeError, ValueError, OverflowError, struct.error):
        ok = False
    if not ok:
        raise ArgumentError(f"{what} must be between 1 and {levels}, got {quality!r}")
    return value


def checked_layers(layers: object) -> tuple[str, ...]:
    """The layers to code, ``("machine",)`` or ``("machine", "human")``, from that tuple, a
    list of the same names, or one name ("machine"); the one rule at every door."""
    if isinstance(layers, str | list):
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if layers not in (("machine",), ("machine", "human")):
        raise ArgumentError(f"layers must be ('machine',) or ('machine', 'human'), got {layers!r}")
    return layers


def checked_layer(layer: object, also: tuple[str | None, ...] = ()) -> str | None:
    """A layer to decode, "machine" or "human", or one of ``also`` where a door takes more
    (None or "auto": the best layer each file holds)."""
    allowed = (*LAYER_KINDS, *also)
    if not (layer is None or isinstance(layer, str)) or layer not in allowed:
        raise ArgumentError(f"layer must be one of {', '.join(map(repr, allowed))}, got {layer!r}")
    return layer


LATENT_CODECS = ("slices",)
"""The latent codecs a card may name (``config.latent_codec``): those with an integer coding
path in :mod:`fusioncodec.exact`, which both runtimes run; ``nets.latent_codec`` maps each
to its torch class."""


@dataclass(frozen=True)
class CodecConfig:
    """Sizes of the transforms and the entropy model, and the lambda of each quality level.

    Quality is continuous in ``[1, levels]``; integer q uses the q-th lambda exactly.
    """

    n: int = 96  # channels inside the image transforms
    slices: int = 5  # S: machine latent slices of 64 channels (M = 64 S)
    m: int = 4  # human-layer (additional) latent slices, 1 <= m <= S
    hyper_channels: int = 192
    z_channels: int = 128
    levels: int = 8
    machine_lambdas: list[float] = field(default_factory=lambda: geometric(0.0005, 0.03, 8))
    human_lambdas: list[float] = field(default_factory=lambda: geometric(0.0013, 0.1, 8))
    # The human layer's encoder also sees the decoded machine latent, so it codes what the
    # machine layer lacks (a residual) instead of the whole picture again.
    conditioned: bool = True
    latent_codec: str = "slices"  # the entropy model, a key of LATENT_CODECS

    def __post_init__(self) -> None:
        if self.latent_codec not in LATENT_CODECS:
            known = ", ".join(LATENT_CODECS)
            raise ValueError(f"unknown latent codec {self.latent_codec!r} (known: {known})")
        if not 1 <= self.m <= self.slices:
            raise ValueError(f"m must be in 1..{self.slices}, got {self.m}")
        for name in ("machine_lambdas", "human_lambdas"):
            if len(getattr(self, name)) != self.levels:
                raise ValueError(f"{name} needs {self.levels} values")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CodecConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("conditioned", False)  # cards from before the option had none
        return cls(**known)
