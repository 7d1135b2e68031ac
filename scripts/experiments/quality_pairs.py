"""Human-layer RD over every (machine quality, human quality) pair, from real coded files.

    python scripts/experiments/quality_pairs.py --images ../shared/data/kodak --limit 4 \
        --out pairs.json

For each fixed machine quality q_m it prints the BD-rate (PSNR-RGB) of the curve
q_h = 1..levels against the curve q_m = q_h, i.e. what holding the machine layer at q_m
saves for people.  ``fcodec eval human --machine-quality Q`` measures one such curve on a
whole set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fusioncodec import metrics
from fusioncodec.codec import Codec
from fusioncodec.files import list_images
from fusioncodec.image import read_rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=4, help="first N images (0: all)")
    parser.add_argument("--weights", default=None, help="default: the shipped model")
    parser.add_argument("--out", type=Path, help="per-image records (JSON)")
    args = parser.parse_args()

    codec = Codec.from_file(args.weights, "cpu")
    grid = range(1, codec.levels + 1)
    records = []
    for _, path in list_images(args.images, args.limit):
        image = read_rgb(path)
        ref = np.asarray(image)
        for qm in grid:
            for qh in grid:
                data = codec.encode(image, ("machine", "human"), float(qm), float(qh))
                decoded = np.asarray(codec.decode(data, "human"))
                rate = metrics.bpp(len(data), image.width * image.height)
                records.append(
                    {
                        "image": path.name,
                        "qm": qm,
                        "qh": qh,
                        "bpp": rate,
                        "psnr": metrics.psnr_rgb(ref, decoded),
                    }
                )
        print(f"{path.name} done", flush=True)
    if args.out:
        args.out.write_text(json.dumps(records))

    def curve(pairs: list[tuple[int, int]]) -> tuple[list[float], list[float]]:
        rows = [[r for r in records if (r["qm"], r["qh"]) == pair] for pair in pairs]
        return [np.mean([r["bpp"] for r in row]) for row in rows], [
            np.mean([r["psnr"] for r in row]) for row in rows
        ]

    diag = curve([(q, q) for q in grid])
    for qm in grid:
        rate, psnr = curve([(qm, qh) for qh in grid])
        bd = metrics.bd_rate(*diag, rate, psnr)
        print(f"q_m {qm}: {rate[0]:.3f}-{rate[-1]:.3f} bpp, BD-rate vs q_m = q_h {bd:+.1f}%")


if __name__ == "__main__":
    main()
