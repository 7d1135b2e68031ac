"""A weight file opened without torch: its tensors as numpy arrays (checked), its latent
coders, and onnxruntime sessions of its float graphs (opened on first use).

The graphs live in a folder beside the weight file (``NAME.graphs/``, written by
:func:`fusioncodec.nets.graphs.export_graphs`); each names the weight-file tensors it reads,
which are handed to onnxruntime as external initializers, so the weights are the very file
the torch runtime loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fusioncodec.errors import WeightsError
from fusioncodec.exact.latent import LatentModel
from fusioncodec.exact.tables import tables_problem
from fusioncodec.nets.config import CodecConfig
from fusioncodec.weight_file import (
    declared_shapes_problem,
    existing_weights,
    identity_of,
    read_card,
    tensors_problem,
)

GRAPH_VERSION = 1
# The graphs of a scalable model and their inputs (1 x C x H x W float32, H and W free), and
# its latent codecs by layer: what fusioncodec.nets.graphs exports, what the runtime needs.
GRAPH_INPUTS = {
    "machine.analysis": ["pixels"],
    "machine.hyper_analysis": ["y"],
    "machine.synthesis": ["y"],
    "additional.analysis": ["pixels", "y_machine"],
    "additional.hyper_analysis": ["y_add"],
    "human.synthesis": ["y_machine", "y_add"],
}
LATENTS = {"machine": "machine.latent", "additional": "additional.latent"}


def graphs_folder(weights: Path) -> Path:
    """Where the graphs of a weight file are: ``NAME.graphs/`` beside ``NAME.safetensors``."""
    return weights.with_suffix(".graphs")


def read_arrays(path: Path, kind: str, config: CodecConfig) -> tuple[dict[str, np.ndarray], bytes]:
    """The tensors of a weight file as stored, checked (declared shapes first, then finite
    floats and the integer bounds), and its identity: the file is read once."""
    from safetensors.numpy import load

    problem = declared_shapes_problem(path, kind, config)
    if problem:
        raise WeightsError(f"{path} does not match its model card ({problem})")
    try:
        data = path.read_bytes()
        stored = load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise WeightsError(f"{path} cannot be read ({str(exc).splitlines()[0]})") from None
    if problem := tensors_problem(stored):
        raise WeightsError(f"{path} holds invalid weights: {problem}")
    return stored, identity_of(data)


def latent_model(
    path: Path, arrays: Mapping[str, np.ndarray], prefix: str, layout: Mapping
) -> LatentModel:
    """The latent coder of the latent codec at ``prefix``, its tables and integer networks
    checked; WeightsError on any problem."""
    head = prefix + "."
    sub = {k[len(head) :]: v for k, v in arrays.items() if k.startswith(head)}
    try:
        if problem := tables_problem(sub):
            raise WeightsError(f"{path} has invalid entropy tables: {prefix} {problem}")
        if any(k.endswith(".weight_int") and not v.size for k, v in sub.items()):
            raise WeightsError(
                f"{path} predates portable coding (no integer entropy networks): convert it "
                "with 'fcodec export WEIGHTS --kind KIND --name NEW'"
            )
        model = LatentModel.from_arrays(sub, layout)
        model.check()
    except (KeyError, ValueError, IndexError, TypeError, AttributeError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{path} does not match its model card ({prefix}: {exc})") from None
    return model


class OpenedWeights:
    """A scalable weight file with its graphs, opened for the onnx runtime: everything is
    checked here; the graphs' sessions open on first use."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = existing_weights(path, "scalable")
        self.card = read_card(self.path)
        if self.card["kind"] != "scalable":
            raise WeightsError(
                f"{self.card['name']} is a {self.card['kind']} model, not a scalable codec"
            )
        self.config = CodecConfig.from_dict(self.card["config"])
        self.folder = graphs_folder(self.path)
        self.layout = self._layout()
        self.arrays, self.identity = read_arrays(self.path, "scalable", self.config)
        self.coders = {
            layer: latent_model(self.path, self.arrays, prefix, self.layout["latents"][layer])
            for layer, prefix in LATENTS.items()
        }
        # (graph, large) -> (session, the weights it reads)
        self._sessions: dict[tuple[str, bool], tuple] = {}

    @property
    def name(self) -> str:
        return self.card["name"]

    def _layout(self) -> dict:
        """``layout.json``, checked against the card, with every graph it lists present."""
        file = self.folder / "layout.json"
        if not file.is_file():
            raise WeightsError(
                f"no ONNX graphs beside {self.path} (expected {file.parent}/): export them "
                "with 'fcodec export-graphs WEIGHTS' where torch is installed, or code with "
                "--backend torch"
            )
        try:
            layout = json.loads(file.read_text())
            fits = (
                layout["version"] == GRAPH_VERSION
                and layout["kind"] == "scalable"
                and CodecConfig.from_dict(layout["config"]) == self.config
            )
            complete = (
                {k: v["inputs"] for k, v in layout["graphs"].items()} == GRAPH_INPUTS
                and all(isinstance(v["weights"], dict) for v in layout["graphs"].values())
                and set(layout["latents"]) == set(LATENTS)
                and all((self.folder / f"{graph}.onnx").is_file() for graph in GRAPH_INPUTS)
            )
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            fits = complete = False
        if not fits:
            raise WeightsError(
                f"the graphs in {file.parent} were not exported for {self.path} (another "
                "architecture or graph version): export them again with 'fcodec export-graphs'"
            )
        if not complete:
            raise WeightsError(
                f"the graphs in {file.parent} are incomplete or damaged: export them again "
                "with 'fcodec export-graphs'"
            )
        return layout

    def session(self, graph: str, large: bool = False):  # noqa: ANN201 - an InferenceSession
        """The onnxruntime session of a graph, opened on first use with the weights; for a
        ``large`` picture (several tiles) one without onnxruntime's memory arena, which
        would keep a tile's peak allocated (0.6 GB at 4096 x 4096) for ~20% more speed."""
        if (graph, large) not in self._sessions:
            self._sessions[graph, large] = self._open(graph, large)
        return self._sessions[graph, large][0]

    def _open(self, graph: str, large: bool) -> tuple:
        import onnxruntime as ort

        try:
            data = (self.folder / f"{graph}.onnx").read_bytes()
            shapes = self.layout["graphs"][graph]["weights"]
            names = list(shapes)
            arrays = [self.arrays[name] for name in names]
        except (OSError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsError(f"the graphs in {self.folder} are incomplete ({exc})") from None
        for name, array in zip(names, arrays, strict=True):
            if list(array.shape) != shapes[name]:
                raise WeightsError(
                    f"{self.path} does not match its graphs ({name} is {list(array.shape)}, "
                    f"the graph needs {shapes[name]})"
                )
        # the float32 the torch runtime computes with (fp16 weights convert exactly)
        values = [ort.OrtValue.ortvalue_from_numpy(a.astype(np.float32)) for a in arrays]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        # No memory pattern: it plans one block for all of a run's tensors, 1 GB more at the
        # peak of a 4096 x 4096 encode (2.7 GB against 1.7), and no faster here.
        options.enable_mem_pattern = False
        options.enable_cpu_mem_arena = not large
        options.add_external_initializers(names, values)
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise WeightsError(f"{self.folder / graph}.onnx cannot run: {reason(exc)}") from None
        if [i.name for i in session.get_inputs()] != GRAPH_INPUTS[graph]:
            raise WeightsError(f"{self.folder / graph}.onnx does not take the inputs it should")
        return session, values  # onnxruntime reads the weights in place: keep them

    def run(self, graph: str, *inputs: np.ndarray, large: bool = False) -> np.ndarray:
        """A graph on float32 inputs (in :data:`GRAPH_INPUTS` order): its output."""
        session = self.session(graph, large)
        feed = {
            name: np.ascontiguousarray(x, dtype=np.float32)
            for name, x in zip(GRAPH_INPUTS[graph], inputs, strict=True)
        }
        try:
            return session.run(None, feed)[0]
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise WeightsError(f"{self.folder / graph}.onnx failed: {reason(exc)}") from None


def reason(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
