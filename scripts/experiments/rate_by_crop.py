"""The model's own rate estimate per latent slice, on square crops of growing size.

    python scripts/experiments/rate_by_crop.py WEIGHTS --images DIR [--quality 8] \
        [--sizes 128,256,320]

A model whose hyperprior only ever saw small training crops (a 2x2 hyper-latent grid at
128 px) predicts its latent well on crops that size and badly on bigger ones: the rate per
pixel then grows with the crop size instead of staying level.  Prints, per crop size, bpp
of the machine layer (y + z) and of each additional (human) slice and its z, averaged over
the first ``--count`` images of DIR (top-left crops; images smaller than a size are skipped).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fusioncodec.codec import level_position
from fusioncodec.files import image_files
from fusioncodec.image import read_rgb
from fusioncodec.nets.config import checked_quality
from fusioncodec.weights import load


def bits(likelihood: torch.Tensor) -> float:
    return float(-torch.log2(likelihood).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--quality", type=float, default=8.0)
    parser.add_argument("--sizes", default="128,192,256,320")
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load(args.weights)
    model = loaded.model.eval()
    q = level_position(checked_quality(args.quality, loaded.config.levels), torch.device("cpu"))
    images = [
        np.asarray(read_rgb(p)) for p in image_files(args.images, recursive=True)
    ]
    images = images[: args.count]
    for size in (int(s) for s in args.sizes.split(",")):
        rows = []
        for im in images:
            if min(im.shape[:2]) < size:
                continue
            x = torch.from_numpy(im[:size, :size].copy()).permute(2, 0, 1)[None] / 255.0
            with torch.no_grad():
                machine = model.machine(x.float(), q)
                _, lik = model.additional(x.float(), q, machine["y_hat"])
            pixels = size * size
            slices = lik["y"].chunk(model.additional.latent.slices, 1)
            machine_bits = sum(bits(v) for v in machine["likelihoods"].values())
            rows.append([machine_bits / pixels, *(bits(s) / pixels for s in slices)])
            rows[-1].append(bits(lik["z"]) / pixels)
        if rows:
            mean = np.mean(rows, 0)
            human = " ".join(f"{v:.3f}" for v in mean[1:-1])
            print(
                f"{size:4d} px ({len(rows)} images): machine {mean[0]:.3f} bpp, "
                f"human slices {human}, human z {mean[-1]:.3f}"
            )


if __name__ == "__main__":
    main()
