"""Move a training checkpoint's weights through small files (a lent GPU returns files <16 MiB).

    python scripts/gpu/checkpoint_shards.py split RUN/checkpoint.pt OUTDIR PREFIX
    python scripts/gpu/checkpoint_shards.py join OUTDIR PREFIX RUN/checkpoint.pt

``split`` writes PREFIX-0.safetensors, PREFIX-1.safetensors, ... (float tensors as fp16 except the
entropy bottleneck quantiles) and PREFIX.json (step, elapsed, training config); the optimizer state
is left behind. A checkpoint with a moving average of the weights (``fcodec train --ema``) travels
as that average, the weights ``fcodec export`` would ship. ``join`` rebuilds a weights-only
checkpoint that ``fcodec export`` takes and ``fcodec train`` resumes from (with a fresh optimizer).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fusioncodec.train.checkpoint import load_checkpoint

SHARD_BYTES = 15 * 2**20


def split(checkpoint: Path, out: Path, prefix: str) -> None:
    state = load_checkpoint(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    averaged = state.get("ema") is not None
    for name, tensor in state["ema" if averaged else "model"].items():
        # Only large weights go to fp16: bounds such as compressai's likelihood bound (1e-9)
        # would round to 0, and the quantiles feed the CDF tables.
        halve = (
            tensor.is_floating_point() and tensor.numel() > 16 and not name.endswith("quantiles")
        )
        t = (tensor.half() if halve else tensor).contiguous()
        nbytes = t.numel() * t.element_size()
        if size + nbytes > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    for k, shard in enumerate(shards):
        save_file(shard, str(out / f"{prefix}-{k}.safetensors"))
    meta = {"step": state["step"], "elapsed": state["elapsed"], "config": state["config"]}
    meta["weights"] = "moving average" if averaged else "last step"
    (out / f"{prefix}.json").write_text(json.dumps(meta, default=str))
    print(f"{prefix}: {len(shards)} shards, step {state['step']}")


def join(folder: Path, prefix: str, checkpoint: Path) -> None:
    meta = json.loads((folder / f"{prefix}.json").read_text())
    model: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob(f"{prefix}-*.safetensors")):
        shard = load_file(str(path))
        # Own copies: tensors read from one file may share its storage under different dtypes.
        model |= {k: (v.float() if v.is_floating_point() else v).clone() for k, v in shard.items()}
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    # weights that travelled as the moving average stay marked as one (export names them so)
    ema = model if meta.get("weights") == "moving average" else None
    torch.save({"model": model, "optimizer": None, **meta, "ema": ema}, checkpoint)
    print(f"{checkpoint}: {len(model)} tensors, step {meta['step']}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["split"]:
        split(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
    elif sys.argv[1:2] == ["join"]:
        join(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    else:
        sys.exit(__doc__)
