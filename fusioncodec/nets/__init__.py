"""Networks: defined once, used by training, coding and evaluation."""

from fusioncodec.nets.codecs import (
    MODEL_KINDS,
    STRIDE,
    AdditionalCodec,
    HumanDecoder,
    ScalableCodec,
    SingleLayerCodec,
    SliceFusion,
    count_parameters,
)
from fusioncodec.nets.config import CodecConfig

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
