"""The runtime without torch: the two-layer codec on onnxruntime + numpy.

The float transforms run as ONNX graphs exported from the torch modules
(:mod:`fusioncodec.nets.graphs`), tile by tile as in the torch runtime; the integer path is
:mod:`fusioncodec.exact`, the same code the torch runtime calls, so a file coded by either
runtime decodes to the same latent in the other. Weights are the same safetensors file (and
identity) as the torch runtime's.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from fusioncodec.errors import ArgumentError
from fusioncodec.exact.latent import HyperAnalysis, LatentModel
from fusioncodec.image import pixel_reader, pixel_writer
from fusioncodec.runtime.graphs import OpenedWeights
from fusioncodec.scalable import (
    TRANSFORM_HALO,
    TRANSFORM_TILE,
    Y_STRIDE,
    TwoLayerCodec,
    latent_grid,
)
from fusioncodec.tiling import for_tiles, run_tiled
from fusioncodec.weight_file import reads_of

__all__ = ["OnnxCodec"]


class OnnxCodec(TwoLayerCodec):
    """The scalable two-layer codec on onnxruntime (CPU): ``encode`` an image, ``decode``
    either layer (:class:`fusioncodec.scalable.TwoLayerCodec`).

    The encoder's gain is numpy's float32 ``exp`` where the torch runtime uses torch's: the
    two may write different bytes for a picture (a symbol rounded the other way), never a
    file the other decodes differently.
    """

    backend = "onnx"
    device = "cpu"

    def __init__(self, weights: OpenedWeights) -> None:
        self.weights = weights
        self.name = weights.name
        self.identity = weights.identity
        self.reads = reads_of(weights.card)
        self.machine_reads = reads_of(weights.card, "machine_reads")
        self.config = weights.config
        self.levels = weights.config.levels

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, device: str = "auto") -> OnnxCodec:
        """The weights at ``path`` (default: the shipped ones) with their graphs."""
        if device not in ("cpu", "auto"):
            raise ArgumentError(f"the onnx runtime codes on the CPU, not {device!r}")
        return cls(OpenedWeights(path))

    def analysis(self, pixels: np.ndarray, y_machine: np.ndarray | None = None) -> np.ndarray:
        read = pixel_reader(pixels, Y_STRIDE)
        grid = latent_grid(pixels.shape[1], pixels.shape[0])
        large = max(grid) > TRANSFORM_TILE
        run = self.weights.run
        if y_machine is None:
            return run_tiled(
                lambda t: run("machine.analysis", t, large=large),
                read,
                grid,
                TRANSFORM_TILE,
                TRANSFORM_HALO,
            )
        return run_tiled(
            lambda t: run("additional.analysis", *t, large=large),
            lambda r0, r1, c0, c1: (read(r0, r1, c0, c1), y_machine[..., r0:r1, c0:c1]),
            grid,
            TRANSFORM_TILE,
            TRANSFORM_HALO,
        )

    def hyper_analysis(self, layer: str) -> HyperAnalysis:
        graph = f"{layer}.hyper_analysis"
        return lambda scaled: self.weights.run(graph, scaled)

    def coder(self, layer: str) -> LatentModel:
        return self.weights.coders[layer]

    def synthesis(
        self, y_machine: np.ndarray, y_add: np.ndarray | None, width: int, height: int
    ) -> Image.Image:
        graph, latents = (
            ("machine.synthesis", [y_machine])
            if y_add is None
            else ("human.synthesis", [y_machine, y_add])
        )
        out = Image.new("RGB", (width, height))
        large = max(y_machine.shape[-2:]) > TRANSFORM_TILE
        for_tiles(
            lambda tiles: self.weights.run(graph, *tiles, large=large),
            lambda r0, r1, c0, c1: [y[..., r0:r1, c0:c1] for y in latents],
            tuple(y_machine.shape[-2:]),
            TRANSFORM_TILE,
            TRANSFORM_HALO,
            pixel_writer(out, Y_STRIDE),
            scale_out=Y_STRIDE,
        )
        return out
