"""Shipped weights: safetensors files (no pickle) with the model card in their metadata.

A weight file holds one model kind: ``scalable`` (machine codec + additional codec + human
decoder, the product) or ``baseline`` (the single-layer LIC).  Its metadata carries the card
as JSON (name, kind, architecture config, training notes, measured results); the same card
is also written beside it as ``<name>.json`` for people.  The identity written into every
``.fcb`` file is the first 16 bytes of the SHA-256 of the weight file's bytes.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fusioncodec.errors import WeightsError
from fusioncodec.nets import MODEL_KINDS, CodecConfig
from fusioncodec.weight_file import (
    KINDS,
    declared_shapes_problem,
    existing_weights,
    identity_of,
    read_card,
    tensors_problem,
)

ENTROPY_PARAMETERS = (
    "integer-exact (fusioncodec.nets.exact: 15 fractional bits, int16 weights with a "
    "power-of-two scale per output channel; identical on every device)"
)


@dataclass
class LoadedModel:
    model: nn.Module
    card: dict
    identity: bytes  # 16 bytes

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def kind(self) -> str:
        return self.card["kind"]

    @property
    def config(self) -> CodecConfig:
        return CodecConfig.from_dict(self.card["config"])


def build(kind: str, config: CodecConfig) -> nn.Module:
    """A fresh model of a kind of :data:`fusioncodec.nets.MODEL_KINDS`."""
    if kind not in MODEL_KINDS:
        raise WeightsError(f"unknown model kind {kind!r} (expected one of {', '.join(KINDS)})")
    return MODEL_KINDS[kind](config)


def load(
    path: Path | str | None = None, kind: str = "scalable", require_exact: bool = True
) -> LoadedModel:
    """Load a weight file (default: the shipped one) into a fresh model on the CPU.

    Weights for coding must carry the integer entropy networks (fusioncodec >= 0.2);
    ``require_exact=False`` also loads older files, e.g. to convert them.
    """
    from safetensors.torch import load_file

    path = existing_weights(path, kind)
    card = read_card(path)
    config = CodecConfig.from_dict(card["config"])
    problem = declared_shapes_problem(path, card["kind"], config)  # before building anything
    if problem:
        raise WeightsError(f"{path} does not match its model card ({problem})")
    try:
        stored = load_file(str(path))
        problem = tensors_problem({k: v.numpy() for k, v in stored.items()})
        if problem:
            raise WeightsError(f"{path} holds invalid weights: {problem}")
        model = build(card["kind"], config)
        state = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
        load_state(model, state, strict=True)
    except WeightsError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path} does not match its model card ({reason})") from None
    problem = table_problem(model)
    if problem:
        raise WeightsError(f"{path} has invalid entropy tables: {problem}")
    if require_exact and not is_exact(model):
        raise WeightsError(
            f"{path} predates portable coding (no integer entropy networks): convert it with "
            "'fcodec export WEIGHTS --kind KIND --name NEW'"
        )
    return LoadedModel(model.eval(), card, identity_of(path))


def table_problem(model: nn.Module) -> str | None:
    """What is wrong with a model's CDF tables (shape, range, monotonicity), or None.

    Empty tables (a model never updated) are not checked: coding refuses them itself.
    """
    from fusioncodec.nets.latent_codec import LatentCodec

    for prefix, latent in model.named_modules():
        if isinstance(latent, LatentCodec) and (problem := latent.table_problem()):
            return f"{prefix} {problem}"
    return None


def is_exact(model: nn.Module) -> bool:
    """Whether every integer-exact layer of ``model`` has its integer weights."""
    from fusioncodec.nets.exact import ExactConvMixin

    return all(m.quantized for m in model.modules() if isinstance(m, ExactConvMixin))


# compressai's likelihood floors (LowerBound buffers, 1e-9): constants of the training loss
# that some weight files hold rounded to 0 (an fp16 round trip). They never affect coding.
LIKELIHOOD_BOUND = "likelihood_lower_bound.bound"


def load_state(model: nn.Module, state: dict, strict: bool) -> None:
    """load_state_dict that lets every latent codec resize its CDF-table buffers first.

    The likelihood floors keep the model's own values, so training from any weight file
    cannot meet a zero likelihood (infinite rate).
    """
    from fusioncodec.nets.latent_codec import LatentCodec

    own = model.state_dict()
    state = {
        k: own[k] if k.endswith(LIKELIHOOD_BOUND) and k in own else v for k, v in state.items()
    }

    for prefix, module in model.named_modules():
        if isinstance(module, LatentCodec):
            head = prefix + "."
            sub = {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}
            module.load_state_dict(sub, strict=strict)
    model.load_state_dict(state, strict=strict)


def load_weights_into(model: nn.Module, path: Path, strict: bool = True) -> None:
    """Initialise ``model`` from a weight file (e.g. a trained machine codec for stage 2)."""
    from safetensors.torch import load_file

    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    load_state(model, state, strict=strict)


def export(
    model: nn.Module, card: dict, path: Path, half: bool = True, graphs: bool = True
) -> bytes:
    """Write ``model`` as safetensors (fp16 weights, integer networks and CDF tables) plus a
    JSON card.

    Weights are rounded to fp16 first; the integer entropy networks and the CDF tables are
    made from the rounded weights, so the shipped tables match exactly what a decoder loads.
    The integer networks are stored as integers only (loading rebuilds their float weights
    from them).  Returns the identity.
    """
    from safetensors.torch import save

    from fusioncodec.files import write_atomic
    from fusioncodec.nets.exact import ExactConvMixin
    from fusioncodec.nets.latent_codec import LatentCodec

    model = model.cpu().eval()
    card = dict(card, entropy_parameters=ENTROPY_PARAMETERS)
    if half:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    for module in model.modules():
        if isinstance(module, LatentCodec):
            module.update()
    # Parameters go to fp16, except the factorized prior's quantiles: the CDF tables were
    # built from their exact values. Buffers (bounds, tables) stay exact as well.
    params = {n for n, _ in model.named_parameters() if not n.endswith("quantiles")}
    integer_twins = {
        f"{prefix}.{name}"
        for prefix, m in model.named_modules()
        if isinstance(m, ExactConvMixin)
        for name in ("weight", "bias")
    }
    state = {}
    for k, v in model.state_dict().items():
        if k in integer_twins:
            continue
        v = v.detach().contiguous()
        state[k] = v.half() if half and k in params else v
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save(state, metadata={"fusioncodec": json.dumps(card)}))
    write_atomic(path.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    if graphs and card["kind"] == "scalable" and importlib.util.find_spec("onnx") is not None:
        write_graphs(path)  # without onnx, fcodec export says so
    return identity_of(path)


def write_graphs(path: Path) -> list[Path]:
    """The ONNX graphs of a scalable weight file's float transforms, written beside it
    (``NAME.graphs/``) for the onnx runtime; needs the ``onnx`` package. Returns the files."""
    from safetensors import safe_open

    from fusioncodec.nets.graphs import export_graphs
    from fusioncodec.runtime.graphs import graphs_folder

    if (kind := read_card(path)["kind"]) != "scalable":
        raise WeightsError(f"{path} holds a {kind} model: only scalable codecs have graphs")
    loaded = load(path, "scalable", require_exact=False)
    with safe_open(str(path), framework="numpy") as f:
        keys = set(f.keys())
    return export_graphs(loaded.model, loaded.config, graphs_folder(path), keys)
