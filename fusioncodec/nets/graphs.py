"""The float transforms as ONNX graphs, for the runtime without torch (:mod:`fusioncodec.runtime`).

The graphs are exported from the torch modules (the networks stay defined once, in
:mod:`fusioncodec.nets.codecs`) without their weights: every weight is an external
initializer named as its tensor in the weight file, which the runtime hands to onnxruntime
when it opens a graph. A folder of graphs therefore serves any weight file of the same
architecture, and the weights (and with them the identity written into every ``.fcb``) are
the one safetensors file both runtimes load. Beside the graphs, ``layout.json`` records the
architecture they were exported for and the layout of each layer's integer networks.

Export needs torch and the ``onnx`` package (``pip install 'fusioncodec[train]'``).
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fusioncodec.nets.codecs import ScalableCodec
from fusioncodec.nets.config import CodecConfig
from fusioncodec.nets.latent import SLICE_CHANNELS, SliceLatentCodec
from fusioncodec.runtime.graphs import GRAPH_INPUTS, GRAPH_VERSION, LATENTS

OPSET = 17
EXTERNAL = "weights"  # the location external initializers name: the weight file

# Where each graph of a scalable model comes from: its submodule and method (the inputs are
# fusioncodec.runtime.graphs.GRAPH_INPUTS, the order the method takes them in).
SOURCES = {
    "machine.analysis": ("machine.g_a", "forward"),
    "machine.hyper_analysis": ("machine.latent.h_a", "forward"),
    "machine.synthesis": ("machine.g_s", "forward"),
    "additional.analysis": ("additional", "analyze"),
    "additional.hyper_analysis": ("additional.latent.h_a", "forward"),
    "human.synthesis": ("human", "forward"),
}


class Method(nn.Module):
    """A module's method as the forward of a module (parameters under ``inner.``)."""

    def __init__(self, inner: nn.Module, method: str) -> None:
        super().__init__()
        self.inner = inner
        self.method: Callable = getattr(inner, method)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.method(*args)


def example_inputs(config: CodecConfig, inputs: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Small inputs of the right channel counts (one 64 px picture, its 4 x 4 latent)."""
    channels = {
        "pixels": (3, 64),
        "y": (config.slices * SLICE_CHANNELS, 4),
        "y_machine": (config.slices * SLICE_CHANNELS, 4),
        "y_add": (config.m * SLICE_CHANNELS, 4),
    }
    generator = torch.Generator().manual_seed(0)
    return tuple(
        torch.rand(1, channels[name][0], channels[name][1], channels[name][1], generator=generator)
        for name in inputs
    )


def graph_bytes(
    module: nn.Module, prefix: str, inputs: tuple[str, ...], example: tuple, keys: set[str]
) -> tuple[bytes, dict[str, list[int]]]:
    """``module`` as an ONNX graph whose weights are external initializers named as the
    tensors of a weight file (``keys``, with ``prefix``), and their names and shapes."""
    import onnx

    buffer = io.BytesIO()
    # The TorchScript exporter keeps every weight under its module name (torch.export's
    # optimiser folds the GDN reparametrisations into new constants); it warns that it is
    # deprecated.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            example,
            buffer,
            dynamo=False,
            input_names=list(inputs),
            output_names=["out"],
            dynamic_axes={name: {2: "height", 3: "width"} for name in inputs},
            do_constant_folding=False,  # keeps every weight under its own name
            opset_version=OPSET,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    renamed, shapes = {}, {}
    for tensor in graph.graph.initializer:
        key = prefix + tensor.name.removeprefix("inner.")
        if key not in keys:
            raise ValueError(f"{tensor.name}: no tensor {key} in the weight file")
        renamed[tensor.name] = tensor.name = key
        shapes[key] = list(tensor.dims)
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        tensor.external_data.add(key="location", value=EXTERNAL)
    for node in graph.graph.node:  # the nodes that read a weight follow its new name
        node.input[:] = [renamed.get(name, name) for name in node.input]
    return graph.SerializeToString(), shapes


def export_graphs(
    model: ScalableCodec, config: CodecConfig, folder: Path, keys: set[str]
) -> list[Path]:
    """Write the graphs of a scalable ``model`` (built from ``config``) and ``layout.json``
    into ``folder``; ``keys`` are the names of the tensors in its weight file. Returns the
    files written."""
    from fusioncodec.files import write_atomic

    model = model.cpu().eval()
    folder.mkdir(parents=True, exist_ok=True)
    written, graphs = [], {}
    for name, (path, method) in SOURCES.items():
        inputs = tuple(GRAPH_INPUTS[name])
        module = Method(model.get_submodule(path), method)
        example = example_inputs(config, inputs)
        data, weights = graph_bytes(module, f"{path}.", inputs, example, keys)
        target = folder / f"{name}.onnx"
        write_atomic(target, data)
        written.append(target)
        graphs[name] = {"inputs": list(inputs), "weights": weights}
    layout = {
        "version": GRAPH_VERSION,
        "kind": "scalable",
        "config": config.to_dict(),
        "graphs": graphs,
        "latents": {layer: latent_of(model, path).layout() for layer, path in LATENTS.items()},
    }
    target = folder / "layout.json"
    write_atomic(target, json.dumps(layout, indent=1) + "\n")
    return [*written, target]


def latent_of(model: nn.Module, path: str) -> SliceLatentCodec:
    latent = model.get_submodule(path)
    assert isinstance(latent, SliceLatentCodec)
    return latent
