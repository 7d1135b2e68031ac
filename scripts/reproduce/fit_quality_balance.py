"""Fit the quality-balance exponents of ``fcodec train --balance`` to trained weights.

    python scripts/reproduce/fit_quality_balance.py --crops 6

Prints, per stage, the median per-crop gradient norm at each quality level and the fitted
exponent e of ``|grad| ~ lambda ** e`` (the loss weight is ``lambda ** -e``). Crops come
from the built-in training sources (256 px, shrunk as in training); the same seed gives the
same crops.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from fusioncodec.nets import CodecConfig
from fusioncodec.train.balance import fit_exponent, gradient_norms
from fusioncodec.train.data import CropSampler, build_edge_dataset, pictures
from fusioncodec.train.step import build_model
from fusioncodec.weight_file import models_dir, read_card
from fusioncodec.weights import load_weights_into

MODELS = models_dir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))
    parser.add_argument("--data", type=Path, default=shared / "data" / "train")
    parser.add_argument("--crops", type=int, default=6)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    packed = build_edge_dataset(args.data, shared, sources=("bsds500", "coco"))
    sampler = CropSampler(pictures(packed, args.crop, seed=args.seed), args.crop, args.seed)
    x, mask = sampler.batch(args.crops)
    for weights, stage, lambdas in (
        ("baseline-default", "baseline", "human_lambdas"),
        ("fusioncodec-default", "machine", "machine_lambdas"),
        ("fusioncodec-default", "human", "human_lambdas"),
    ):
        path = MODELS / f"{weights}.safetensors"
        codec = CodecConfig.from_dict(read_card(path)["config"])
        model = build_model(stage, codec)
        load_weights_into(model, path, strict=False)
        model.train()
        norms = gradient_norms(model, stage, x, mask, codec)
        medians = " ".join(f"{v:.3g}" for v in torch.from_numpy(norms).median(1).values)
        exponent = fit_exponent(getattr(codec, lambdas), norms)
        ratio = norms[-1].mean() / norms[0].mean()
        print(
            f"{stage} ({weights}): median |grad| by level {medians}; last/first {ratio:.1f}x; "
            f"exponent {exponent:.3f}"
        )


if __name__ == "__main__":
    main()
