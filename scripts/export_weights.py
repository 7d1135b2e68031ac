"""Export a training checkpoint as shipped weights: safetensors (fp16) + JSON model card.

    python scripts/export_weights.py runs/joint/checkpoint.pt --kind scalable \
        --name fusioncodec-default [--results results/kodak-rd.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fusioncodec.nets import CodecConfig, count_parameters
from fusioncodec.weights import build, export, models_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--kind", choices=["scalable", "baseline"], required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--results", type=Path, action="append", default=[])
    ap.add_argument("--notes", default="")
    args = ap.parse_args()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    cfg = state["config"]
    config = CodecConfig.from_dict(cfg["codec"])
    model = build(args.kind, config)
    model.load_state_dict(state["model"], strict=False)
    card = {
        "name": args.name,
        "kind": args.kind,
        "config": config.to_dict(),
        "parameters": count_parameters(model),
        "training": {
            "stage": cfg["stage"],
            "steps": state["step"],
            "minutes": round(state["elapsed"] / 60, 1),
            "hardware": "2-core CPU (torch 2.13 CPU build)",
            "batch": cfg["batch"],
            "crop": cfg["crop"],
            "lr": cfg["lr"],
            "data": "../shared/data/train: BSDS500 (boundary maps as edge targets) + COCO "
            "coco_tiny/coco_mini (instance-mask edges); edge bands 5 px wide; Kodak and "
            "coco128 never used",
            "machine_loss": "rate + lambda * MSE on edge pixels only (SA-ICM)",
            "human_loss": "rate of the additional layer + lambda * MSE on the whole image",
            "notes": args.notes,
        },
        "results": {p.stem: json.loads(p.read_text()) for p in args.results},
    }
    path = models_dir() / f"{args.name}.safetensors"
    identity = export(model, card, path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), identity {identity.hex()}")


if __name__ == "__main__":
    main()
