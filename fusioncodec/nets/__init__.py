"""Networks: defined once, used by training, coding and evaluation.

:class:`CodecConfig` loads without torch (model cards are read before any model is built);
the networks load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fusioncodec.nets.config import STRIDE, CodecConfig

if TYPE_CHECKING:
    from fusioncodec.nets.codecs import (
        MODEL_KINDS,
        AdditionalCodec,
        HumanDecoder,
        ScalableCodec,
        SingleLayerCodec,
        SliceFusion,
        count_parameters,
    )

__all__ = [
    "MODEL_KINDS",
    "STRIDE",
    "AdditionalCodec",
    "CodecConfig",
    "HumanDecoder",
    "ScalableCodec",
    "SingleLayerCodec",
    "SliceFusion",
    "count_parameters",
]


def __getattr__(name: str) -> Any:
    if name in __all__ and name not in ("STRIDE", "CodecConfig"):
        return getattr(importlib.import_module("fusioncodec.nets.codecs"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
