"""The codecs under evaluation: one registry of names and one round-trip protocol.

Every evaluation (``fcodec eval human``, ``fcodec eval machine``) names codecs from
:data:`CODECS` and codes pictures through :func:`runner`: a function ``(image, quality) ->``
:class:`Coded` that encodes for real, counts the bytes its rate is measured on and decodes.
Each name means one thing everywhere:

* ``fusioncodec``: the whole ``.fcb`` file (header, machine and human layers), decoded by
  the human decoder; the machine layer's share is recorded too;
* ``fusioncodec-machine``: the ``.fcb`` file without its human layer, decoded by the
  machine decoder;
* ``baseline``: the single-layer learned codec (rate: its payload);
* ``jpeg`` ... ``vvc``: the classical codecs of :mod:`fusioncodec.eval.classical` (rate:
  the coded file).

Adding a codec: a :class:`ClassicalCodec` in ``classical.CLASSICAL`` (it is listed here by
itself), or a :class:`LearnedCodec` in :data:`LEARNED_CODECS` for a learned one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from fusioncodec.eval import classical

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "CODECS",
    "LEARNED",
    "LEARNED_CODECS",
    "SCALABLE",
    "Coded",
    "LearnedCodec",
    "ModelSpec",
    "get",
    "label",
    "runner",
]

LEARNED_QUALITIES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)


@dataclass(frozen=True)
class ModelSpec:
    """What the learned codecs need (picklable, for worker processes): weight files (None:
    the shipped ones), the device, and a fixed machine quality for ``fusioncodec`` (None:
    the quality of the human layer)."""

    weights: str | None = None
    baseline: str | None = None
    device: str = "cpu"
    machine_quality: float | None = None


@dataclass(frozen=True)
class Coded:
    """One picture coded for real at one quality."""

    size: int  # bytes the rate is measured on
    decoded: np.ndarray  # HxWx3 uint8 RGB
    encode_s: float
    decode_s: float
    machine_size: int | None = None  # fusioncodec: bytes of its machine layer alone


Runner = Callable[["Image.Image", float], Coded]


def scalable_codec(weights: str | None, device: str) -> Any:
    """The two-layer codec of a weight file, as ``fusioncodec.load`` gives it (cached)."""
    import fusioncodec

    return fusioncodec.load(weights, device)


@cache
def baseline_codec(weights: str | None, device: str) -> Any:
    """The single-layer baseline of a weight file (cached per process)."""
    from fusioncodec.codec import SingleLayerRunner

    return SingleLayerRunner.from_file(weights, device)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _both_layers(image: Image.Image, q: float, spec: ModelSpec) -> Coded:
    from fusioncodec.container import Container

    codec = scalable_codec(spec.weights, spec.device)
    mq = q if spec.machine_quality is None else spec.machine_quality
    data, t_enc = _timed(lambda: codec.encode(image, ("machine", "human"), mq, q))
    decoded, t_dec = _timed(lambda: codec.decode(data, "human"))
    machine = len(Container.from_bytes(data).without_human().to_bytes())
    return Coded(len(data), np.asarray(decoded), t_enc, t_dec, machine)


def _machine_layer(image: Image.Image, q: float, spec: ModelSpec) -> Coded:
    from fusioncodec.container import Container

    codec = scalable_codec(spec.weights, spec.device)
    data, t_enc = _timed(lambda: codec.encode(image, ("machine",), q))
    stripped = Container.from_bytes(data).without_human().to_bytes()
    decoded, t_dec = _timed(lambda: codec.decode(stripped, "machine"))
    return Coded(len(stripped), np.asarray(decoded), t_enc, t_dec)


def _baseline(image: Image.Image, q: float, spec: ModelSpec) -> Coded:
    model = baseline_codec(spec.baseline, spec.device)
    payload, t_enc = _timed(lambda: model.encode(image, q))
    decoded, t_dec = _timed(lambda: model.decode(payload, image.width, image.height, q))
    return Coded(len(payload), np.asarray(decoded), t_enc, t_dec)


@dataclass(frozen=True)
class LearnedCodec:
    """A learned codec under evaluation: named, labelled and described as a
    :class:`~fusioncodec.eval.classical.ClassicalCodec` is, with its round trip."""

    name: str
    label: str
    description: str
    roundtrip: Callable[[Image.Image, float, ModelSpec], Coded]
    scalable: bool  # a layer of the .fcb file (loads through fusioncodec.load)

    def missing(self) -> str | None:
        """Learned codecs run wherever their weights load."""
        return None


LEARNED_CODECS = {
    codec.name: codec
    for codec in (
        LearnedCodec(
            "fusioncodec",
            "fusioncodec (human layer)",
            "fusioncodec human layer; rate: the whole .fcb file (header + both layers)",
            _both_layers,
            scalable=True,
        ),
        LearnedCodec(
            "fusioncodec-machine",
            "fusioncodec (machine layer)",
            "fusioncodec machine layer; rate: the .fcb file without its human layer",
            _machine_layer,
            scalable=True,
        ),
        LearnedCodec(
            "baseline",
            "single-layer LIC (baseline)",
            "single-layer learned codec (the standard LIC); rate: payload bytes",
            _baseline,
            scalable=False,
        ),
    )
}
LEARNED = tuple(LEARNED_CODECS)
SCALABLE = tuple(name for name, codec in LEARNED_CODECS.items() if codec.scalable)
CODECS = (*LEARNED, *classical.CLASSICAL)


def get(name: str) -> LearnedCodec | classical.ClassicalCodec:
    """The codec called ``name``; KeyError for a name not in :data:`CODECS`."""
    return LEARNED_CODECS.get(name) or classical.get(name)


def label(name: str) -> str:
    """The name of a codec's curve in plots and tables."""
    return get(name).label


def description(name: str) -> str:
    """What a codec's curve measures (model and file names are added by the caller)."""
    return get(name).description


def missing(name: str) -> str | None:
    """Why codec ``name`` cannot run here (None when it can)."""
    return get(name).missing()


def runner(name: str, spec: ModelSpec | None = None) -> Runner:
    """The round trip of codec ``name``; learned models load on first use. KeyError for a
    name not in :data:`CODECS`."""
    spec = spec or ModelSpec()
    codec = get(name)
    if isinstance(codec, LearnedCodec):
        return lambda image, q: codec.roundtrip(image, q, spec)

    def classic(image: Image.Image, q: float) -> Coded:
        data, t_enc = _timed(lambda: codec.encode(image, int(q)))
        decoded, t_dec = _timed(lambda: codec.decode(data, image.width, image.height))
        return Coded(len(data), decoded, t_enc, t_dec)

    return classic
