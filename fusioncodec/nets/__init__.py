"""Networks: defined once, used by training, coding and evaluation."""

from fusioncodec.nets.codecs import (
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
    "STRIDE",
    "AdditionalCodec",
    "CodecConfig",
    "HumanDecoder",
    "ScalableCodec",
    "SingleLayerCodec",
    "SliceFusion",
    "count_parameters",
]
