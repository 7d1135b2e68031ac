"""Training steps per second fed by the crop sampler against the same step on random tensors.

    python scripts/gpu/train_rate.py --stages baseline,joint --batch 64 --steps 40 --device cuda

The issue's bar for a GPU: real training at >= 90% of the random-tensor rate. Both loops run
the loop's own step (:func:`~fusioncodec.train.step.step_losses` and
:func:`~fusioncodec.train.step.optimise`) on the default architecture; the real one draws its
crops with :class:`~fusioncodec.train.data.CropSampler` from pictures resident on the device.
Prints one JSON line per stage (and writes them to --json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from fusioncodec.nets import CodecConfig
from fusioncodec.train.data import CropSampler, load_or_build, pictures
from fusioncodec.train.step import build_model, make_optimizer, optimise, step_losses, trainable


def rate(step, steps: int, device: torch.device) -> float:  # noqa: ANN001
    """Steps per second of ``step()`` over ``steps`` calls, after 5 warm-up calls."""
    for _ in range(5):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def measure(
    stage: str, sampler: CropSampler, batch: int, crop: int, steps: int, device: torch.device
) -> dict:
    """Random-tensor and sampler-fed step rates of one stage (fresh weights: the rate does
    not depend on their values)."""
    codec = CodecConfig()
    model = build_model(stage, codec)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer, main_params, quantiles = make_optimizer(model, trainable(model, stage), 1e-5)
    if stage == "human":
        model.machine.eval()
    x = torch.rand(batch, 3, crop, crop, device=device).contiguous(
        memory_format=torch.channels_last
    )
    mask = (torch.rand(batch, 1, crop, crop, device=device) < 0.15).float()

    def fixed() -> None:
        optimise(optimizer, step_losses(model, stage, x, mask, codec), main_params, quantiles)

    def real() -> None:
        crops, edges = sampler.batch(batch)
        losses = step_losses(model, stage, crops, edges, codec)
        optimise(optimizer, losses, main_params, quantiles)

    random_rate, real_rate = rate(fixed, steps, device), rate(real, steps, device)
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "batch": batch,
        "crop": crop,
        "random_it_s": round(random_rate, 2),
        "real_it_s": round(real_rate, 2),
        "real_share": round(real_rate / random_rate, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))
    parser.add_argument("--data", type=Path, default=shared / "data" / "train")
    parser.add_argument("--masks", type=Path, action="append", default=[])
    parser.add_argument("--cache", type=Path, default=Path("cache/train-rate-edges.npz"))
    parser.add_argument("--stages", default="baseline,joint")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    start = time.perf_counter()
    packed = load_or_build(args.cache, args.data, shared if shared.is_dir() else None, args.masks)
    items = pictures(packed, args.crop, device=device)
    sampler = CropSampler(items, args.crop, 0, device)
    setup = time.perf_counter() - start
    rows = []
    for stage in args.stages.split(","):
        row = {"stage": stage, **measure(stage, sampler, args.batch, args.crop, args.steps, device)}
        row |= {"pictures": len(sampler), "setup_s": round(setup, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
