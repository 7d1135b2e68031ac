"""How much the human layer gains when its latent is optimised per image (amortisation gap).

    python scripts/experiments/latent_refinement.py --images ../shared/data/kodak \
        --limit 1 --steps 60

For each image and quality the additional latent is refined by Adam on the layer's own RD
cost (rate + lambda * 255^2 * MSE, rounding by straight-through estimation), with the
machine layer fixed; both versions are then coded for real and compared by file size and
PSNR.  A large gain would make encoder-side refinement worth shipping as an encode option.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fusioncodec import metrics
from fusioncodec.codec import Codec, level_position
from fusioncodec.container import Container, Layer
from fusioncodec.files import list_images
from fusioncodec.image import read_rgb, to_tensor
from fusioncodec.nets.latent_codec import LatentCodec
from fusioncodec.payload import layer_binding
from fusioncodec.train.losses import lambda_at


def coded_bits(latent: LatentCodec, y: torch.Tensor, q: torch.Tensor, context):  # noqa: ANN001
    """Bits of y and z as the coder codes them (the rate on rounded latents, straight-through
    gradients: the latent codec's ``rounded_rate`` mode), and y's reconstruction."""
    latent.rounded_rate = True
    y_hat, likelihoods = latent(y, q, context)
    return sum(-torch.log2(lik).sum() for lik in likelihoods.values()), y_hat


def measure(codec: Codec, data: bytes, image: Image.Image) -> tuple[float, float]:
    """(bpp, PSNR-RGB) of the human layer of ``data``."""
    decoded = np.asarray(codec.decode(data, "human"))
    return metrics.bpp(len(data), image.width * image.height), metrics.psnr_rgb(
        np.asarray(image), decoded
    )


def refine(codec: Codec, image: Image.Image, quality: float, steps: int, lr: float) -> dict:
    model, (w, h) = codec.model, image.size
    data = codec.encode(image, quality=quality)
    container = Container.from_bytes(data)
    x = to_tensor(image, codec.device)
    add, q = model.additional, level_position(quality, codec.device)
    with torch.no_grad():
        y_machine = torch.from_numpy(codec.decode_latent(container, "machine"))
        y = add.analyze(x, y_machine).requires_grad_(True)
    context, lam = add.context(y_machine), lambda_at(model.config.human_lambdas, q)
    optimizer = torch.optim.Adam([y], lr=lr)
    start = time.perf_counter()
    for _ in range(steps):
        bits, y_hat = coded_bits(add.latent, y, q, context)
        err = (model.human(y_machine, y_hat)[..., :h, :w] - x[..., :h, :w]).square().mean()
        loss = bits / (w * h) + lam * 255**2 * err
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        quality = container.layer("human").quality
        machine = container.layer("machine").payload
        binding = layer_binding("human", quality, w, h, model.config.m, machine)
        payload, _ = codec.encode_layer(
            "additional", y.detach().numpy(), quality, context.numpy(), binding
        )
    human = Layer("human", quality, payload)
    refined = Container(w, h, codec.name, codec.identity, model.config.m,
                        (container.layer("machine"), human)).to_bytes()  # fmt: skip
    (b0, p0), (b1, p1) = measure(codec, data, image), measure(codec, refined, image)
    scale = lam.item() * 255**2
    return {"bpp": (b0, b1), "psnr": (p0, p1), "seconds": seconds,
            "cost": (b0 + scale * 10 ** (-p0 / 10), b1 + scale * 10 ** (-p1 / 10))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=1, help="first N images (0: all)")
    parser.add_argument("--qualities", default="4", help="comma-separated, both layers")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weights", default=None, help="default: the shipped model")
    args = parser.parse_args()
    torch.set_num_threads(2)
    codec = Codec.from_file(args.weights, "cpu")
    codec.model.requires_grad_(False)
    for _, path in list_images(args.images, args.limit):
        image = read_rgb(path)
        for quality in map(float, args.qualities.split(",")):
            r = refine(codec, image, quality, args.steps, args.lr)
            print(f"{path.name} q {quality:g}: {r['bpp'][0]:.4f} bpp {r['psnr'][0]:.2f} dB -> "
                  f"{r['bpp'][1]:.4f} bpp {r['psnr'][1]:.2f} dB, RD cost {r['cost'][0]:.4f} -> "
                  f"{r['cost'][1]:.4f} ({(r['cost'][1] / r['cost'][0] - 1) * 100:+.2f}%), "
                  f"{args.steps} steps in {r['seconds']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
