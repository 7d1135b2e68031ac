"""PIL images <-> padded float arrays, for any mode and any size from 1x1 (numpy for both
runtimes; :func:`to_tensor` and :func:`to_image` for torch, which they load)."""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from fusioncodec.errors import ArgumentError, ImageError
from fusioncodec.messages import error_reason
from fusioncodec.nets.config import STRIDE

if TYPE_CHECKING:
    import torch


@functools.cache
def enable_optional_formats() -> bool:
    """Let Pillow open HEIC/HEIF through pillow-heif when it is installed (AVIF is Pillow's
    own); returns whether it is."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


@contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Inside this block Pillow refuses pictures over ``max_pixels`` (its decompression-bomb
    warning raised as an error) and takes any below, above its own 89 MP default; Pillow's
    setting is restored after."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """The picture at ``path`` in RGB, read whole with its file closed: how training,
    validation, the detectors and the scripts read their pictures (no EXIF rotation, no
    colour management, alpha dropped; the RD sweep's reference is ``eval.rd``'s
    ``reference_pixels``). Pillow's exceptions pass through; callers name their own error."""
    with Image.open(path) as image:
        return image.convert("RGB")


@contextmanager
def open_picture(
    source: str | os.PathLike | bytes | BinaryIO, max_pixels: int
) -> Iterator[Image.Image]:
    """Pillow's image for ``source`` (a path, bytes or a binary file), header read; its
    failures become :class:`ImageError` and, over ``max_pixels``, :class:`ArgumentError`.
    A file that cannot be opened raises the ``OSError`` of ``open``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    enable_optional_formats()
    try:
        with _pixel_limit(max_pixels), Image.open(source) as image:
            yield image
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ArgumentError(f"image too large ({error_reason(exc)})") from None
    except OSError as exc:
        if exc.errno is not None:  # the file system's error, not the image's
            raise
        raise ImageError(f"cannot read image ({error_reason(exc)})") from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's plugins raise many types on corrupt data
        raise ImageError(f"cannot read image ({error_reason(exc)})") from None


_SRGB = ImageCms.createProfile("sRGB")
_CMS_MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB", "L": "RGB"}


def upright_srgb(image: Image.Image) -> Image.Image:
    """The picture as a viewer shows it: EXIF orientation applied, and colours converted
    from an embedded ICC profile to sRGB (what the codec codes and decodes).  A profile
    LittleCMS cannot use leaves the colours as they are."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image) or image
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in _CMS_MODES:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            image, source, _SRGB, outputMode=_CMS_MODES[image.mode]
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image
    return converted if converted is not None else image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """8-bit RGB array from any PIL mode.

    Grey (L, I, I;16, F) is replicated to three channels; 16-bit and 32-bit integer images
    are scaled from their full range; alpha (RGBA, LA, P with transparency) is composited
    over white, as a viewer would show it.
    """
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode != "F" and (mode.startswith("I;16") or arr.max() > 255) else 255.0
        if mode == "F" and arr.max() <= 1.0:
            top = 1.0
        grey = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "La":  # premultiplied grey: over white, L + (255 - alpha)
        grey, alpha = (np.asarray(band, dtype=np.int16) for band in image.split())
        over_white = np.clip(grey + 255 - alpha, 0, 255).astype(np.uint8)
        return np.repeat(over_white[..., None], 3, axis=2)
    if mode in ("P", "PA", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")  # palette alpha, colour keys, premultiplied alpha
    elif mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGB")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # one copy


def to_tensor(image: Image.Image, device: torch.device) -> torch.Tensor:
    """1x3xHxW float tensor in [0, 1], padded (edge replicate) to a multiple of STRIDE."""
    import torch
    import torch.nn.functional as F

    arr = to_rgb_array(image)
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div_(255).to(device)
    h, w = x.shape[-2:]
    return F.pad(x, (0, padded(w) - w, 0, padded(h) - h), mode="replicate")


def pixel_reader(pixels: np.ndarray, unit: int = 16) -> Callable[[int, int, int, int], np.ndarray]:
    """Regions of the padded picture, as :func:`to_tensor` would give them, one at a time.

    ``read(r0, r1, c0, c1)`` is rows ``unit * r0 : unit * r1`` and columns
    ``unit * c0 : unit * c1`` of the picture padded to a multiple of STRIDE by repeating its
    edge: a 1x3xHxW float32 array in [0, 1] (the same numbers as torch's ``float() / 255``).
    """
    h, w = pixels.shape[:2]

    def read(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        rows = np.minimum(np.arange(unit * r0, unit * r1), h - 1)
        cols = np.minimum(np.arange(unit * c0, unit * c1), w - 1)
        region = pixels[rows[:, None], cols[None, :]]
        return (region.transpose(2, 0, 1)[None].astype(np.float32)) / np.float32(255)

    return read


def pixel_writer(out: Image.Image, unit: int = 16) -> Callable[..., None]:
    """Pastes 1x3xHxW float32 tiles (numpy arrays) at grid position (r0, c0) (``unit`` px
    per grid unit) into an RGB picture, rounded as :func:`to_image` does and cropped to the
    picture."""
    w, h = out.size

    def write(r0: int, r1: int, c0: int, c1: int, x: np.ndarray) -> None:
        top, left = unit * r0, unit * c0
        rows, cols = min(h - top, x.shape[-2]), min(w - left, x.shape[-1])
        if rows <= 0 or cols <= 0:
            return
        x = np.nan_to_num(x[0, :, :rows, :cols], nan=0.0)  # a NaN pixel (a hostile file) is 0
        x = np.round(np.clip(x, 0, 1) * np.float32(255)).astype(np.uint8)
        out.paste(Image.fromarray(np.ascontiguousarray(x.transpose(1, 2, 0)), "RGB"), (left, top))

    return write


def padded(side: int) -> int:
    return -(-side // STRIDE) * STRIDE


def to_image(x: torch.Tensor, width: int, height: int) -> Image.Image:
    """Crop the padding and round to an 8-bit RGB image."""
    x = x[0, :, :height, :width].clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(x.permute(1, 2, 0).cpu().numpy(), "RGB")
