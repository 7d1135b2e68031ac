"""Speed, size and rate-accuracy benchmark of the shipped codec (numbers for the issue notes).

    python scripts/benchmark.py [--image PATH] [--train-steps 3] [--out results/benchmark.json]

Model time excludes interpreter start-up; the CLI wall times include it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from fusioncodec.codec import Codec
from fusioncodec.container import Container
from fusioncodec.image import to_tensor
from fusioncodec.nets import CodecConfig, count_parameters
from fusioncodec.train.loop import _step_losses, build_model
from fusioncodec.train.losses import bits_per_pixel
from fusioncodec.weights import default_weights, load


def timed(fn, repeat: int = 5) -> float:  # noqa: ANN001
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()
def estimated_bits(codec: Codec, image: Image.Image, quality: float) -> dict[str, float]:
    """Bits the entropy models predict (eval mode: likelihoods of the rounded symbols)."""
    model = codec.model
    x = to_tensor(image, codec.device)
    q = torch.tensor([quality - 1.0])
    pixels = x.shape[-1] * x.shape[-2]
    machine = model.machine(x, q)
    _, lik = model.additional(x, q)
    return {
        "machine": float(bits_per_pixel(machine["likelihoods"], pixels)) * pixels,
        "human": float(bits_per_pixel(lik, pixels)) * pixels,
    }


def cli_seconds(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fusioncodec.cli", *args], check=True, capture_output=True
    )
    return time.perf_counter() - t


def train_speed(config: CodecConfig, steps: int) -> dict[str, float]:
    """Iterations per hour at batch 8 x 256^2 for each training stage."""
    out = {}
    for stage in ("machine", "human", "joint", "baseline"):
        model = build_model(stage, config).to(memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        x = torch.rand(8, 3, 256, 256).contiguous(memory_format=torch.channels_last)
        mask = (torch.rand(8, 1, 256, 256) < 0.15).float()
        if not hasattr(model, "latent_codecs"):
            model.latent_codecs = lambda m=model: [m.latent]

        def step(model=model, opt=opt, stage=stage, x=x, mask=mask) -> None:  # noqa: ANN001
            losses = _step_losses(model, stage, x, mask, config)
            opt.zero_grad()
            (losses["loss"] + losses["aux"]).backward()
            opt.step()

        out[stage] = 3600 / timed(step, steps)
    return out


def main() -> None:
    shared = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", type=Path, default=shared / "data" / "kodak" / "kodim01.png")
    ap.add_argument("--weights", type=Path, default=default_weights())
    ap.add_argument("--quality", type=float, default=4.0)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report: dict = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    codec = Codec(load(args.weights), "cpu")
    model = codec.model
    report["parameters"] = {
        "machine_codec": count_parameters(model.machine),
        "additional_codec": count_parameters(model.additional),
        "human_decoder": count_parameters(model.human),
        "total": count_parameters(model),
    }
    image = Image.open(args.image).convert("RGB")
    w, h = image.size
    q = args.quality
    data = codec.encode(image, quality=q)
    container = Container.from_bytes(data)
    report["image"] = {"path": str(args.image), "width": w, "height": h, "quality": q}
    report["seconds"] = {
        "encode_machine": timed(lambda: codec.encode(image, ("machine",), q)),
        "encode_both": timed(lambda: codec.encode(image, quality=q)),
        "decode_machine": timed(lambda: codec.decode(container, "machine")),
        "decode_human": timed(lambda: codec.decode(container, "human")),
    }
    est = estimated_bits(codec, image, q)
    coded = {k: 8 * len(container.layer(k).payload) for k in ("machine", "human")}
    report["rate"] = {
        k: {
            "estimated_bits": est[k],
            "coded_bits": coded[k],
            "overhead_percent": 100 * (coded[k] / est[k] - 1),
        }
        for k in coded
    }
    report["rate"]["header_bytes"] = container.header_size
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "x.fcb"
        f.write_bytes(data)
        report["cli_wall_seconds"] = {
            "help": statistics.median(cli_seconds(["--help"]) for _ in range(3)),
            "info": statistics.median(cli_seconds(["info", str(f)]) for _ in range(3)),
        }
    if args.train_steps:
        report["train_iterations_per_hour_8x256"] = train_speed(
            codec.loaded.config, args.train_steps
        )
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
