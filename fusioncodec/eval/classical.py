"""Classical image codecs through their Python bindings (or CLI tools), coded for real.

Each codec turns an RGB image into the bytes of a real file at one quality setting and the
bytes back into RGB; the sweep measures bpp from those bytes.  Settings follow the measured
anchors in ``shared/anchors/kodak/measured-pillow-*.json``:

* ``jpeg``: Pillow/libjpeg(-turbo), 4:2:0, no optimize; quality 1..100;
* ``webp``: Pillow/libwebp lossy, method 4 (4:2:0); quality 0..100;
* ``avif``: Pillow's own AVIF support (Pillow >= 11.2) or pillow-avif-plugin, speed 6, 4:2:0,
  full range, one encoder thread (aom output depends on the thread count); quality 0..100;
* ``hevc``: HEIC through pillow-heif (libheif + x265 defaults, 4:2:0); quality 0..100;
* ``vvc``: ``vvencapp``/``vvdecapp`` from PATH on a raw YUV file: full-range BT.601 (JFIF)
  RGB -> YCbCr 4:2:0 8-bit, picture padded to a multiple of 8, preset medium, perceptual QP
  adaptation off, one thread; the "quality" is the QP 0..63 (lower is better).

A codec whose binding is missing reports why through :meth:`ClassicalCodec.missing`.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CLASSICAL", "ClassicalCodec", "avif_backend", "get"]


@dataclass(frozen=True)
class ClassicalCodec:
    """One classical codec: a quality range, default sweep, and real encode/decode."""

    name: str
    label: str
    description: str
    qualities: tuple[int, ...]
    quality_range: tuple[int, int]
    quality_name: str = "quality"
    options: dict = field(default_factory=dict)

    def missing(self) -> str | None:
        """Why this codec cannot run here (None when it can)."""
        return None

    def encode(self, image: Image.Image, quality: int) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        """Decoded HxWx3 uint8 RGB array."""
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class PillowCodec(ClassicalCodec):
    """A format Pillow writes and reads (``options`` are extra ``Image.save`` arguments)."""

    pillow_format: str = ""
    feature: str = ""

    def missing(self) -> str | None:
        from PIL import features

        if self.feature and not features.check(self.feature):
            return f"this Pillow was built without {self.label} support"
        return None

    def encode(self, image: Image.Image, quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=self.pillow_format, quality=int(quality), **self.options)
        return buffer.getvalue()


@cache
def avif_backend() -> str | None:
    """``pillow`` (Pillow's own AVIF), ``plugin`` (pillow-avif-plugin) or None."""
    from PIL import features

    try:
        if features.check("avif"):
            return "pillow"
    except ValueError:  # Pillow < 11.2 does not know the feature
        pass
    try:
        import pillow_avif  # noqa: F401  (registers the AVIF plugin with Pillow)
    except ImportError:
        return None
    return "plugin"


@dataclass(frozen=True)
class AvifCodec(PillowCodec):
    def missing(self) -> str | None:
        if avif_backend() is None:
            return "Pillow has no AVIF support (needs Pillow >= 11.2 or pillow-avif-plugin)"
        return None

    def encode(self, image: Image.Image, quality: int) -> bytes:
        avif_backend()  # imports the plugin when that is the backend
        return super().encode(image, quality)


@cache
def _heif_opener() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


@dataclass(frozen=True)
class HeifCodec(PillowCodec):
    def missing(self) -> str | None:
        if not _heif_opener():
            return "pillow-heif is not installed (pip install pillow-heif)"
        return None

    def encode(self, image: Image.Image, quality: int) -> bytes:
        _heif_opener()
        return super().encode(image, quality)

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        _heif_opener()
        return super().decode(data, width, height)


# --------------------------------------------------------------------------- VVC (vvenc)

# Full-range BT.601 (JFIF) RGB <-> YCbCr, the conversion JPEG and WebP use as well.
_RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC)
_VVC_ALIGN = 8


def _resize(plane: np.ndarray, width: int, height: int, method: Image.Resampling) -> np.ndarray:
    return np.asarray(
        Image.fromarray(plane.astype(np.float32), "F").resize((width, height), method)
    )


def rgb_to_yuv420(rgb: np.ndarray) -> bytes:
    """Planar 8-bit YCbCr 4:2:0 (I420) of an RGB array with even sides (box-filtered chroma)."""
    h, w = rgb.shape[:2]
    ycc = rgb.astype(np.float64) @ _RGB_TO_YCC.T + np.array([0.0, 128.0, 128.0])
    planes = [ycc[..., 0]]
    planes += [_resize(ycc[..., c], w // 2, h // 2, Image.Resampling.BOX) for c in (1, 2)]
    return b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)


def yuv420_to_rgb(data: bytes, width: int, height: int) -> np.ndarray:
    """RGB array from planar I420 samples, 8-bit or 16-bit little-endian (10-bit) ones."""
    n_luma, n_chroma = width * height, (width // 2) * (height // 2)
    n_samples = n_luma + 2 * n_chroma
    if len(data) == n_samples:
        samples, scale = np.frombuffer(data, np.uint8).astype(np.float64), 1.0
    elif len(data) == 2 * n_samples:
        samples, scale = np.frombuffer(data, "<u2").astype(np.float64), 4.0  # 10 -> 8 bit
    else:
        raise ValueError(f"decoded YUV has {len(data)} bytes, expected a {width}x{height} picture")
    samples = samples / scale
    y = samples[:n_luma].reshape(height, width)
    cb, cr = (
        _resize(
            samples[n_luma + i * n_chroma : n_luma + (i + 1) * n_chroma].reshape(
                height // 2, width // 2
            ),
            width,
            height,
            Image.Resampling.BILINEAR,
        )
        for i in (0, 1)
    )
    ycc = np.stack([y, cb - 128.0, cr - 128.0], axis=-1)
    return np.clip(np.rint(ycc @ _YCC_TO_RGB.T), 0, 255).astype(np.uint8)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()
        why = tail[-1] if tail else f"exit status {done.returncode}"
        raise RuntimeError(f"{Path(cmd[0]).name} failed: {why}")


@dataclass(frozen=True)
class VvcCodec(ClassicalCodec):
    """VVC intra through the vvenc/vvdec command-line tools (raw YUV files in a temp folder)."""

    def missing(self) -> str | None:
        absent = [tool for tool in ("vvencapp", "vvdecapp") if shutil.which(tool) is None]
        if absent:
            return f"{' and '.join(absent)} not found on PATH"
        return None

    def encode(self, image: Image.Image, quality: int) -> bytes:
        rgb = np.asarray(image.convert("RGB"))
        h, w = rgb.shape[:2]
        ph, pw = -(-h // _VVC_ALIGN) * _VVC_ALIGN, -(-w // _VVC_ALIGN) * _VVC_ALIGN
        rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        with tempfile.TemporaryDirectory(prefix="fcodec-vvc-") as tmp:
            src, out = os.path.join(tmp, "in.yuv"), os.path.join(tmp, "out.266")
            Path(src).write_bytes(rgb_to_yuv420(rgb))
            _run(
                ["vvencapp", "-i", src, "-s", f"{pw}x{ph}", "-c", "yuv420", "-r", "1"]
                + ["-f", "1", "--qp", str(int(quality)), "--preset", self.options["preset"]]
                + ["--qpa", "0", "-t", "1", "-o", out]
            )
            return Path(out).read_bytes()

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        ph, pw = -(-height // _VVC_ALIGN) * _VVC_ALIGN, -(-width // _VVC_ALIGN) * _VVC_ALIGN
        with tempfile.TemporaryDirectory(prefix="fcodec-vvc-") as tmp:
            src, out = os.path.join(tmp, "in.266"), os.path.join(tmp, "out.yuv")
            Path(src).write_bytes(data)
            _run(["vvdecapp", "-b", src, "-o", out, "-t", "1"])
            rgb = yuv420_to_rgb(Path(out).read_bytes(), pw, ph)
        return rgb[:height, :width]


# --------------------------------------------------------------------------- registry

CLASSICAL: dict[str, ClassicalCodec] = {
    codec.name: codec
    for codec in (
        PillowCodec(
            "jpeg",
            "JPEG (Pillow)",
            "JPEG, Pillow/libjpeg(-turbo), 4:2:0, no optimize",
            (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
            (1, 100),
            options={"subsampling": "4:2:0", "optimize": False},
            pillow_format="JPEG",
            feature="jpg",
        ),
        PillowCodec(
            "webp",
            "WebP (Pillow)",
            "WebP lossy, Pillow/libwebp, method 4 (4:2:0)",
            (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
            (0, 100),
            options={"method": 4, "lossless": False},
            pillow_format="WEBP",
            feature="webp",
        ),
        AvifCodec(
            "avif",
            "AVIF (Pillow)",
            "AVIF, Pillow (libavif) or pillow-avif-plugin, speed 6, 4:2:0, full range, 1 thread",
            (0, 10, 20, 30, 40, 50, 60, 70, 80, 90),
            (0, 100),
            options={"speed": 6, "subsampling": "4:2:0", "range": "full", "max_threads": 1},
            pillow_format="AVIF",
        ),
        HeifCodec(
            "hevc",
            "HEVC (pillow-heif)",
            "HEIC (HEVC intra), pillow-heif/libheif + x265 defaults, 4:2:0",
            (0, 5, 10, 20, 30, 40, 50, 60, 70),
            (0, 100),
            options={"chroma": 420},
            pillow_format="HEIF",
        ),
        VvcCodec(
            "vvc",
            "VVC (vvenc)",
            "VVC intra, vvencapp/vvdecapp, preset medium, QPA off, YCbCr 4:2:0 8-bit BT.601 full",
            (47, 42, 37, 32, 27, 22),
            (0, 63),
            quality_name="QP",
            options={"preset": "medium"},
        ),
    )
}


def get(name: str) -> ClassicalCodec:
    return CLASSICAL[name]
