"""Pack the built-in training sources into a compact mask folder (for a lent GPU machine).

Writes ``OUT/train`` in the layout ``fcodec masks`` writes (JPEG image + bilevel edge PNG +
manifest.jsonl), so ``fcodec train --masks OUT/train`` reads it, and copies a few held-out
sun80 photos to ``OUT/val`` for validation with the real coder.

    python scripts/pack_training_set.py --shared ../shared --out cache/devdata --quality 90

All 740 images at quality 90 take 52 MiB. With the shipped two-layer weights also carried
(36 MiB, for a fine-tune), use e.g. ``--quality 80 --limit 400`` to stay under 64 MiB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from fusioncodec.train.data import _bsds, _coco, coco128_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("cache/devdata"))
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the images")
    parser.add_argument("--val", type=int, default=4, help="sun80 photos kept for validation")
    parser.add_argument(
        "--limit", type=int, default=0, help="keep this many images, evenly spaced (0: all)"
    )
    args = parser.parse_args()
    root = args.shared / "data" / "train"
    items = _bsds(root / "bsds500")
    skip = coco128_names(args.shared)
    for sub in ("coco_tiny", "coco_mini"):
        for ann in sorted((root / sub).glob("instances_*.json")):
            items += _coco(root / sub / "images", ann, skip)
    if 0 < args.limit < len(items):
        keep = np.linspace(0, len(items) - 1, args.limit).round().astype(int)
        items = [items[k] for k in keep]
    train = args.out / "train"
    if args.out.exists():
        shutil.rmtree(args.out)
    train.mkdir(parents=True)
    rows = []
    for k, (image, mask) in enumerate(items):
        Image.fromarray(image).save(train / f"{k:05d}.jpg", quality=args.quality)
        Image.fromarray(mask > 0).save(train / f"{k:05d}.png", optimize=True)
        h, w = mask.shape
        rows.append({"image": f"{k:05d}.jpg", "mask": f"{k:05d}.png", "width": w, "height": h})
    (train / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    val = args.out / "val"
    val.mkdir()
    for path in sorted((root / "sun80").rglob("*.jpg"))[: args.val]:
        shutil.copy(path, val / path.name)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    edge = float(np.mean([m.mean() for _, m in items]))
    print(f"{len(items)} images, mean edge fraction {edge:.3f}, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
