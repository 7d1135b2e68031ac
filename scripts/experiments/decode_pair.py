"""Code pictures once and decode the machine layer with two weight files that read the same files.

  python scripts/experiments/decode_pair.py --weights-a OLD --weights-b NEW --out DIR \
      [--images ../shared/data/coco128/images] [--qualities 1,2,3,4,6,8]

For a decoder-only update (``fcodec train decoder``: the payload bytes do not change) this
isolates what the new decoder does to the pictures. Each picture is encoded once per quality
with ``--weights-a`` (machine layer only); the file is decoded with both weight files, into
``DIR/a/qQ/STEM.png`` and ``DIR/b/qQ/STEM.png``, and each folder gets the ``bpp.json`` that
``fcodec eval machine --decoded`` reads (file bytes, header included). ``--weights-b`` must
read the machine layer of ``--weights-a``'s files (its card's ``reads`` or
``machine_reads``); then compare with
``scripts/experiments/paired_map.py DIR/b/qQ DIR/a/qQ``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import fusioncodec
from fusioncodec.files import shared_dir
from fusioncodec.image import read_rgb
from fusioncodec.metrics import bpp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-a", type=Path, required=True)
    parser.add_argument("--weights-b", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=Path, default=shared_dir() / "data/coco128/images")
    parser.add_argument("--qualities", default="1,2,3,4,6,8")
    args = parser.parse_args()
    paths = sorted(args.images.glob("*.jpg")) + sorted(args.images.glob("*.png"))
    sides = {"a": args.weights_a, "b": args.weights_b}
    for q in (float(v) for v in args.qualities.split(",")):
        folders = {side: args.out / side / f"q{q:g}" for side in sides}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        rates: dict[str, float] = {}  # one file per picture, so one rate for both sides
        for path in paths:
            picture = read_rgb(path)
            data = fusioncodec.encode(picture, ("machine",), q, weights=args.weights_a)
            rates[path.stem] = bpp(len(data), picture.width * picture.height)
            for side, weights in sides.items():
                picture_out = fusioncodec.decode(data, "machine", weights)
                picture_out.save(folders[side] / f"{path.stem}.png")
        for folder in folders.values():
            (folder / "bpp.json").write_text(json.dumps(rates, indent=1))
        mean = sum(rates.values()) / len(paths)
        print(f"q {q:g}: {len(paths)} pictures, {mean:.4f} bpp", flush=True)


if __name__ == "__main__":
    main()
