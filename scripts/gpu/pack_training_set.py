"""Pack the built-in training sources into a mask folder that fits a GPU machine's carry.

    python scripts/gpu/pack_training_set.py --out cache/gpu-data --budget-mib 36

Writes ``OUT/train`` in the layout ``fcodec masks`` writes (image + bilevel edge PNG +
manifest.jsonl), so ``fcodec train --masks OUT/train`` reads it, and ``OUT/val``, the sun80
photos held out from training (``fcodec train --val OUT/val``). No pixel is re-encoded: each
image is its source file, byte for byte, and training shrinks it (antialiased) on the
machine that trains. When the sources do not all fit in ``--budget-mib``, images are taken
in turn from each source (BSDS500, COCO, sun80) until the budget is spent; the rest are
left out and counted. Kodak, coco128 and sun80's held-out photos never enter ``train``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from fusioncodec.train.data import annotated_sources, held_out_images


def _interleaved(items: list) -> list:
    """Items taken in turn from each source, in each source's own order."""
    by_source: dict[str, list] = {}
    for item in items:
        by_source.setdefault(item[0], []).append(item)
    turns = itertools.zip_longest(*by_source.values())
    return [item for turn in turns for item in turn if item is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))
    parser.add_argument("--data", type=Path, default=shared / "data" / "train")
    parser.add_argument("--out", type=Path, default=Path("cache/gpu-data"))
    parser.add_argument("--budget-mib", type=float, default=36.0, help="size of OUT at most")
    args = parser.parse_args()
    items = _interleaved(annotated_sources(args.data, shared if shared.is_dir() else None))
    if args.out.exists():
        shutil.rmtree(args.out)
    train, val = args.out / "train", args.out / "val"
    train.mkdir(parents=True)
    val.mkdir()
    budget = args.budget_mib * 2**20
    spent = 0
    for path in held_out_images(args.data):
        shutil.copyfile(path, val / path.name)
        spent += path.stat().st_size
    rows, kept, left = [], {}, {}
    for k, (source, path, mask) in enumerate(items):
        image_name, mask_name = f"{k:05d}{path.suffix.lower()}", f"{k:05d}.png"
        Image.fromarray(mask > 0).save(train / mask_name, optimize=True)
        size = path.stat().st_size + (train / mask_name).stat().st_size
        if spent + size > budget:
            (train / mask_name).unlink()
            left[source] = left.get(source, 0) + 1
            continue
        shutil.copyfile(path, train / image_name)
        spent += size
        kept[source] = kept.get(source, 0) + 1
        h, w = mask.shape
        rows.append(
            {"image": image_name, "mask": mask_name, "width": w, "height": h, "source": source}
        )
    (train / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    edge = float(np.mean([m.mean() > 0 for _, _, m in items]))
    print(
        f"{len(rows)} training images ({kept}), {len(list(val.iterdir()))} held-out photos, "
        f"{size / 2**20:.1f} MiB; left out for the budget: {left or 'none'}; "
        f"{edge:.0%} of the sources have edge annotations; pixels: the source files, unchanged"
    )


if __name__ == "__main__":
    main()
