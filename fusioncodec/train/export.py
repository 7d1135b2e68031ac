"""Turn a training checkpoint (or an older weight file) into shipped weights: safetensors
(fp16 weights, integer entropy networks, CDF tables) + JSON model card."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fusioncodec.messages import error_reason
from fusioncodec.nets import CodecConfig, count_parameters
from fusioncodec.train.checkpoint import load_checkpoint
from fusioncodec.weight_file import MAX_READS, READS_KEYS, identity_of, read_card
from fusioncodec.weights import build, export, load, load_state

# What the decoder stage may change: the tensors under these names. Weights that differ from
# their forebear only there code the same files and decode the forebear's files as well.
DECODER_TENSORS = ("human.", "machine.g_s.")
# What codes the machine layer: weights that differ from their forebear only outside it (the
# human stage) decode the machine layer of the forebear's files.
MACHINE_CODING = "machine."
# The stages whose export may read its --init weights' files (wholly, or the machine layer).
READING_STAGES = ("decoder", "human")

TRAINING_DATA = (
    "../shared/data/train: BSDS500 (boundary maps as edge targets), COCO coco_tiny/coco_mini "
    "(instance-mask edges) and sun80 photos (no edges; every 10th held out), unless mask "
    "folders from 'fcodec masks' were given; edge bands 5 px wide; Kodak and coco128 never used"
)


def recipe(cfg: dict) -> dict:
    """The recipe a checkpoint's config records (older checkpoints: the recipe before 0.3)."""
    balance = cfg.get("balance") or {"human": 0.0, "machine": 0.0, "ends": False}
    return {
        "sources": list(cfg.get("sources", ["bsds500", "coco"])),
        "scale": list(cfg.get("scale", [1.0, 1.0])),
        "quality_balance": balance,
        "schedule": cfg.get("schedule", "step"),
        "decay_at": cfg.get("decay_at"),
        "seed": cfg.get("seed", 0),
    }


def export_checkpoint(
    checkpoint: Path,
    kind: str,
    name: str,
    out_dir: Path,
    results: dict | None = None,
    notes: str = "",
    also_reads: tuple[Path, ...] = (),
) -> tuple[Path, bytes, list[str]]:
    """Export ``checkpoint`` as ``out_dir/<name>.safetensors`` (+ ``<name>.json``); returns
    the path, the identity and why a would-be forebear's files are not read.

    A checkpoint with a moving average of the weights (``fcodec train --ema``) exports the
    average, which is also what its validation measured. The export of a decoder- or
    human-stage checkpoint reads the files of its ``--init`` weights (and of ``also_reads``)
    when it codes as they do (same architecture, every tensor outside the decoders the same),
    or their machine layer when it codes that as they do (every ``machine.*`` tensor outside
    the machine layer's synthesis the same).
    """
    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    config = CodecConfig.from_dict(cfg["codec"])
    reading = cfg["stage"] in READING_STAGES and cfg.get("init")
    candidates = [Path(cfg["init"])] if reading else []
    forebears, unread = _forebears([*candidates, *also_reads])  # before the export writes
    model = build(kind, config)
    averaged = state.get("ema") is not None
    load_state(model, state["ema" if averaged else "model"], strict=True)  # any CDF table size
    card = {
        "name": name,
        "kind": kind,
        "config": config.to_dict(),
        "parameters": count_parameters(model),
        "training": {
            "stage": cfg["stage"],
            "steps": state["step"],
            "crops_seen": state["step"] * cfg["batch"],
            "minutes": round(state["elapsed"] / 60, 1),
            "batch": cfg["batch"],
            "crop": cfg["crop"],
            "lr": cfg["lr"],
            "weights": f"moving average, decay {cfg['ema']}" if averaged else "last step",
            "data": TRAINING_DATA,
            "recipe": recipe(cfg),
            "mask_dirs": [str(d) for d in cfg.get("mask_dirs", [])],
            "machine_loss": "rate + lambda * MSE on edge pixels only (SA-ICM)",
            "human_loss": "rate of the additional layer + lambda * MSE on the whole image",
            "notes": notes,
        },
        "results": results or {},
    }
    path = out_dir / f"{name}.safetensors"
    identity = export(model, card, path, graphs=not forebears)
    if forebears:
        reads, machine_reads = _reads(forebears, config, _coding_tensors(path.read_bytes()), unread)
        if reads:
            card["reads"] = reads
        if machine_reads:
            card["machine_reads"] = machine_reads
        identity = export(model, card, path)
    return path, identity, unread


def _reads(
    forebears: list[Forebear], config: CodecConfig, mine: dict[str, np.ndarray], unread: list
) -> tuple[list[str], list[str]]:
    """Whose files the exported weights (coding tensors ``mine``) decode: wholly, and only
    the machine layer. A forebear read neither way is added to ``unread``, with why."""
    reads: list[str] = []
    machine_reads: list[str] = []
    for forebear in forebears:
        theirs = CodecConfig.from_dict(forebear.config)
        if replace(theirs, human_lambdas=config.human_lambdas) != config:  # the machine's
            unread.append(f"{forebear.path}: another architecture")
        elif theirs == config and not _coding_difference(forebear.tensors, mine):
            reads += [forebear.identity, *forebear.reads]
            machine_reads += forebear.machine_reads
        elif problem := _coding_difference(_machine(forebear.tensors), _machine(mine)):
            unread.append(f"{forebear.path}: {problem}")
        else:
            machine_reads += [forebear.identity, *forebear.reads, *forebear.machine_reads]
    whole = list(dict.fromkeys(reads))[:MAX_READS]
    machine_only = [r for r in dict.fromkeys(machine_reads) if r not in whole][:MAX_READS]
    return whole, machine_only


@dataclass(frozen=True)
class Forebear:
    """Weights whose files an export may read: what decides that, read before it writes."""

    path: Path
    identity: str
    reads: list[str]
    machine_reads: list[str]
    config: dict
    tensors: dict[str, np.ndarray]


def _forebears(paths: list[Path]) -> tuple[list[Forebear], list[str]]:
    found, unread = [], []
    for path in paths:
        try:
            card, data = read_card(path), path.read_bytes()
            tensors = _coding_tensors(data)
        except Exception as exc:  # noqa: BLE001 - WeightsError, OSError, safetensors' errors
            unread.append(f"{path}: {error_reason(exc)}")
            continue
        reads, machine_reads = (card.get(key, []) for key in READS_KEYS)
        identity = identity_of(data).hex()
        found.append(Forebear(path, identity, reads, machine_reads, card["config"], tensors))
    return found, unread


def _coding_tensors(data: bytes) -> dict[str, np.ndarray]:
    """Every tensor of a weight file's bytes outside the decoders: what decides its files'
    bits."""
    from safetensors.numpy import load

    return {k: v for k, v in load(data).items() if not k.startswith(DECODER_TENSORS)}


def _machine(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The coding tensors of the machine layer."""
    return {k: v for k, v in tensors.items() if k.startswith(MACHINE_CODING)}


def _coding_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> str | None:
    """The first coding tensor that differs between two weight files as numbers (a zero's
    sign aside), or None."""
    if a.keys() != b.keys():
        return "other tensors"
    for key in sorted(a):
        x, y = a[key], b[key]
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
            return f"{key} differs"
    return None


def convert_weights(
    source: Path, kind: str, name: str, out_dir: Path, notes: str = ""
) -> tuple[Path, bytes]:
    """Re-export a weight file with the current format (e.g. one from before the integer
    entropy networks): same trained weights and card, integer networks made from them."""
    loaded = load(source, kind, require_exact=False)
    if loaded.kind != kind:
        raise ValueError(f"it holds a {loaded.kind} model, not {kind}")
    card = dict(loaded.card, name=name, converted_from=loaded.identity.hex())
    for key in READS_KEYS:  # remade integer networks: not checked to code as before
        card.pop(key, None)
    if notes:
        card["training"] = dict(card.get("training", {}), notes=notes)
    path = out_dir / f"{name}.safetensors"
    return path, export(loaded.model, card, path)


def load_results(paths: list[Path]) -> dict:
    """Measured results to embed in a card: each JSON file under its file stem."""
    return {p.stem: json.loads(p.read_text()) for p in paths}
