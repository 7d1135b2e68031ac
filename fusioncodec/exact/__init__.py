"""The integer path of the file format, in numpy: the integer networks
(:mod:`~fusioncodec.exact.networks`) and the latent coder over them
(:mod:`~fusioncodec.exact.latent`). Both runtimes (torch and onnx) code through this one
implementation, so they cannot disagree about a symbol."""

from fusioncodec.exact.latent import LatentModel
from fusioncodec.exact.networks import IntegerConv, IntegerNetwork

__all__ = ["IntegerConv", "IntegerNetwork", "LatentModel"]
