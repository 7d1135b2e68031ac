"""The exceptions fusioncodec's API raises (standard library only).

Every one is a ``ValueError`` with a one-line message worded for Python callers:

* :class:`FormatError`: the bytes are not a valid ``.fcb`` file, are damaged, were made with
  other weights, or use a version this fusioncodec does not read;
* :class:`WeightsError`: a weight file is missing, unreadable, invalid or of the wrong kind;
* :class:`ArgumentError`: an argument is out of range (quality, layers, device, picture
  size); raised before any coding work starts;
* :class:`ImageError`: an input picture Pillow cannot read (not an image, damaged or
  truncated); it is also an ``OSError``, as Pillow's own errors are.

Catch :class:`FusionCodecError` for all four.  A missing or unreadable input file raises
the ``OSError`` that ``open`` raises.
"""

from __future__ import annotations

__all__ = ["ArgumentError", "FormatError", "FusionCodecError", "ImageError", "WeightsError"]


class FusionCodecError(ValueError):
    """Base of every error fusioncodec raises on purpose."""


class FormatError(FusionCodecError):
    """The bytes are not a valid ``.fcb`` file (or not one this version can use)."""


class WeightsError(FusionCodecError):
    """A weight file is missing, unreadable or not a valid fusioncodec model."""


class ArgumentError(FusionCodecError):
    """An argument is out of range (checked before any work)."""


class ImageError(FusionCodecError, OSError):
    """An input picture that Pillow cannot read (not an image, damaged or truncated)."""
