"""What ``fcodec bench`` is asked for and what it runs on: options, the picture, errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fusioncodec.messages import error_reason
from fusioncodec.nets.config import DEFAULT_QUALITY

if TYPE_CHECKING:
    from PIL import Image

COMPRESSAI_MODEL = "mbt2018-mean"
COMPRESSAI_N, COMPRESSAI_M = 192, 320
COMPRESSAI_NOTE = (
    "random-init mbt2018-mean weights: transform speed is representative, "
    "entropy-coding speed and coded size are not"
)
WARM_PHASES = ("encode_machine", "encode_both", "decode_machine", "decode_human")
COLD_PHASES = ("encode", "decode_machine", "decode_human")
MB = 1 << 20

Log = Callable[[str], None]


class BenchError(ValueError):
    """An expected failure (missing image, bad size, no CUDA...): a one-line message."""


@dataclass
class BenchOptions:
    """Everything ``fcodec bench`` can be asked for; see the module docstring."""

    image: Path | None = None  # None and size None: default_image()
    size: tuple[int, int] | None = None  # synthetic image (width, height)
    seed: int = 0  # of the synthetic image
    weights: Path | None = None  # None: the shipped weights
    quality: float = DEFAULT_QUALITY
    device: str = "all"  # cpu, cuda or all (cpu, and cuda when available)
    repeat: int = 5
    threads: int = 0  # 0: torch's default
    cold: bool = True
    cold_repeat: int = 1
    compressai: bool = True
    compressai_weights: Path | None = None
    train: bool = False
    train_steps: int = 3
    train_batch: int = 8
    train_crop: int = 256
    train_precisions: tuple[str, ...] = ("fp32", "bf16")


# --------------------------------------------------------------------------- inputs


def default_image() -> Path:
    from fusioncodec.files import shared_dir

    return shared_dir() / "data" / "kodak" / "kodim01.png"


_SIZE = re.compile(r"^\s*(\d+)\s*[xX×*]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """``"768x512"`` -> ``(768, 512)``, within the ``.fcb`` size limits."""
    from fusioncodec.container import size_problem

    match = _SIZE.match(text)
    if not match:
        raise BenchError(f"bad size {text!r}: use WxH, e.g. 768x512")
    width, height = int(match[1]), int(match[2])
    if problem := size_problem(width, height):
        raise BenchError(f"bad size {text!r} for a .fcb picture: {problem}")
    return width, height


def synthetic_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A seeded test picture: smooth colour gradients, sensor-like noise and hard edges."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    scale = max(width, height, 1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for _ in range(3):  # smooth gradients: a slow sinusoid per channel
        fx, fy, phase = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
        channels.append(0.5 + 0.35 * np.sin(2 * np.pi * (fx * xx + fy * yy) / scale + phase))
    img = np.stack(channels, axis=-1)
    for _ in range(6):  # flat shapes with hard edges: rectangles and discs
        colour = rng.uniform(0, 1, 3)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.25) * scale
        if rng.random() < 0.5:
            inside = (np.abs(xx - cx) < r) & (np.abs(yy - cy) < 0.6 * r)
        else:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        img[inside] = colour
    img[(xx // 2 % 2 == 0) & (yy > 0.8 * height)] *= 0.3  # a band of thin stripes: texture
    img += rng.normal(0, 0.03, img.shape)  # sensor-like noise
    return Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), "RGB")


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image file, as a :class:`BenchError` on failure."""
    from PIL import Image, UnidentifiedImageError

    from fusioncodec.container import MAX_PIXELS, MAX_SIDE

    if not path.exists():
        raise BenchError(f"{path}: no such file")
    if not path.is_file():
        raise BenchError(f"{path}: not a file")
    try:
        with Image.open(path) as image:
            image.load()
    except UnidentifiedImageError:
        raise BenchError(f"{path}: not an image Pillow can read") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types
        raise BenchError(f"{path}: cannot read image ({error_reason(exc)})") from None
    width, height = image.size
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise BenchError(f"{path}: image is {width}x{height}, too large for .fcb")
    return image
