"""Validation during training with the real coder: code held-out images, measure bpp/PSNR."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fusioncodec.codec import Codec, SingleLayerRunner
from fusioncodec.image import read_rgb
from fusioncodec.metrics import bpp, psnr_rgb
from fusioncodec.weights import LoadedModel


def _frozen_copy(model: nn.Module, kind: str, card_config: dict) -> LoadedModel:
    """A CPU copy of ``model`` with fresh CDF tables, wrapped like loaded weights."""
    model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()
    for codec in model.latent_codecs():
        codec.update()
    card = {"name": "validation", "kind": kind, "config": card_config}
    return LoadedModel(model, card, b"\0" * 16)


@torch.no_grad()
def validate(
    model: nn.Module, kind: str, card_config: dict, images: list[Path], qualities: list[float]
) -> dict[str, float]:
    """Mean real-coded bpp and PSNR per quality (human layer, or the baseline's only layer)."""
    loaded = _frozen_copy(model, kind, card_config)
    out: dict[str, float] = {}
    pictures = [read_rgb(path) for path in images]
    if kind == "scalable":
        codec = Codec(loaded, "cpu")
        for q in qualities:
            rates, psnrs, machine = [], [], []
            for image in pictures:
                data = codec.encode(image, quality=q)
                container = codec.parse(data)
                decoded = np.asarray(codec.decode(container, "human"))
                rates.append(bpp(len(data), image.width * image.height))
                machine.append(
                    bpp(len(container.without_human().to_bytes()), image.width * image.height)
                )
                psnrs.append(psnr_rgb(np.asarray(image), decoded))
            out[f"val_q{q:g}_bpp"] = float(np.mean(rates))
            out[f"val_q{q:g}_machine_bpp"] = float(np.mean(machine))
            out[f"val_q{q:g}_psnr"] = float(np.mean(psnrs))
    else:
        runner = SingleLayerRunner(loaded, "cpu")
        for q in qualities:
            rates, psnrs = [], []
            for image in pictures:
                payload = runner.encode(image, q)
                decoded = np.asarray(runner.decode(payload, *image.size, q))
                rates.append(bpp(len(payload), image.width * image.height))
                psnrs.append(psnr_rgb(np.asarray(image), decoded))
            out[f"val_q{q:g}_bpp"] = float(np.mean(rates))
            out[f"val_q{q:g}_psnr"] = float(np.mean(psnrs))
    return {k: round(v, 4) for k, v in out.items()}
