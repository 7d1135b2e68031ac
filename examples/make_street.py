"""Draw examples/street.png, the sample picture of the examples (a synthetic street scene).

    python examples/make_street.py

Made here rather than taken from a test set, so the examples run on any clone. Seeded: the
same picture every time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 512, 384


def main() -> None:
    rng = np.random.default_rng(23)
    rows = np.linspace(0, 1, H)[:, None, None]
    sky = (1 - rows) * np.array([110, 160, 225]) + rows * np.array([235, 225, 210])
    image = Image.fromarray(np.broadcast_to(sky, (H, W, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((400, 30, 450, 80), fill=(255, 236, 170))
    for left in range(0, W, 70):  # buildings with lit and dark windows
        top = int(rng.integers(90, 190))
        colour = tuple(int(v) for v in rng.integers(90, 200, 3))
        draw.rectangle((left, top, left + 62, 270), fill=colour, outline=(60, 60, 60))
        for y in range(top + 10, 255, 22):
            for x in range(left + 8, left + 56, 16):
                lit = rng.random() < 0.4
                draw.rectangle((x, y, x + 9, y + 13), fill=(250, 220, 120) if lit else (50, 60, 80))
    draw.rectangle((0, 270, W, H), fill=(80, 80, 85))  # road and lane markings
    for x in range(10, W, 60):
        draw.rectangle((x, 325, x + 30, 331), fill=(240, 240, 240))
    for x0, colour in ((60, (200, 30, 40)), (300, (30, 90, 180))):  # two cars
        draw.rounded_rectangle((x0, 285, x0 + 130, 320), 8, fill=colour)
        draw.rounded_rectangle((x0 + 25, 262, x0 + 100, 290), 8, fill=colour)
        draw.rectangle((x0 + 35, 267, x0 + 90, 285), fill=(170, 200, 220))
        for wx in (x0 + 28, x0 + 102):
            draw.ellipse((wx - 13, 308, wx + 13, 334), fill=(25, 25, 25))
    noise = rng.normal(0, 3, (H, W, 3))  # sensor noise and a little blur, as in a photo
    image = image.filter(ImageFilter.GaussianBlur(0.7))
    pixels = np.clip(np.asarray(image, np.float64) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(Path(__file__).with_name("street.png"), optimize=True)


if __name__ == "__main__":
    main()
