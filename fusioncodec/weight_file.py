"""A weight file before any model is built: where the shipped ones are, and the model card
in its header, read and checked without torch (the command line checks qualities against
it before the model loads; :mod:`fusioncodec.weights` loads the tensors)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fusioncodec.container import HASH_SIZE, MAX_NAME_BYTES
from fusioncodec.errors import WeightsError
from fusioncodec.nets.config import CodecConfig, checked_quality

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_NAME",
    "KINDS",
    "card_problem",
    "default_weights",
    "existing_weights",
    "models_dir",
    "read_card",
]

DEFAULT_NAME = "fusioncodec-default"
KINDS = ("scalable", "baseline")  # the keys of fusioncodec.nets.MODEL_KINDS
MAX_CARD_BYTES = 1 << 20  # the shipped cards are about 20 KB
MAX_CARD_DEPTH = 32


def models_dir() -> Path:
    """Where shipped weights live: ``$FUSIONCODEC_MODELS`` or the package's ``models/`` folder
    (installed with it as package data)."""
    env = os.environ.get("FUSIONCODEC_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent / "models"


def default_weights(kind: str = "scalable") -> Path:
    name = DEFAULT_NAME if kind == "scalable" else "baseline-default"
    return models_dir() / f"{name}.safetensors"


def existing_weights(path: str | os.PathLike | None, kind: str = "scalable") -> Path:
    """The weight file to load: ``path``, or the shipped one of ``kind`` when None;
    WeightsError if it does not exist."""
    if path is None:
        shipped = default_weights(kind)
        if not shipped.exists():
            raise WeightsError(
                f"the shipped weights are missing: {shipped} (set FUSIONCODEC_MODELS to the "
                "folder that holds them, or give a weight file)"
            )
        return shipped
    if not Path(path).exists():
        raise WeightsError(f"weights not found: {path}")
    return Path(path)


def check_qualities(path: str | os.PathLike | None, kind: str, qualities: Sequence[float]) -> Path:
    """The weight file to load (as :func:`existing_weights`), once its card is read and
    ``qualities`` are within 1..its levels (NaN is not): WeightsError or ArgumentError
    before any model is built."""
    found = existing_weights(path, kind)
    levels = read_card(found)["config"].get("levels", CodecConfig.levels)
    for q in qualities:
        checked_quality(q, levels)
    return found


def read_card(path: Path) -> dict:
    """The model card stored in a weight file's metadata (reads only the header; no
    torch), checked: size, depth, fields and ranges. WeightsError on any problem."""
    from safetensors import safe_open

    from fusioncodec.sources import NotRegularFile, regular_file

    try:
        regular_file(path)  # a FIFO would block, a device never end
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise WeightsError(f"weights not found: {path}") from None
    except NotRegularFile as exc:
        raise WeightsError(f"weights {exc}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"not a safetensors weight file: {path} ({reason})") from None
    if "fusioncodec" not in meta:
        raise WeightsError(f"{path} has no fusioncodec model card in its metadata")
    text = meta["fusioncodec"]
    if len(text) > MAX_CARD_BYTES:
        raise WeightsError(f"{path} has a model card of {len(text)} bytes, over {MAX_CARD_BYTES}")
    try:  # RecursionError: nested too deep for the parser; ValueError: a huge integer
        card = json.loads(text)
    except (ValueError, RecursionError):
        raise WeightsError(f"{path} has an unreadable model card") from None
    if _depth(card) > MAX_CARD_DEPTH:
        raise WeightsError(f"{path} has a model card nested deeper than {MAX_CARD_DEPTH} levels")
    if not isinstance(card, dict) or not {"name", "kind", "config"} <= card.keys():
        raise WeightsError(f"{path} has an incomplete model card (needs name, kind, config)")
    problem = card_problem(card)
    if problem:
        raise WeightsError(f"{path} has an invalid model card: {problem}")
    return card


MAX_READS = 64  # forebears a card may name
# whose files these weights decode: whole (``reads``), or only the machine layer
READS_KEYS = ("reads", "machine_reads")
_IDENTITY = re.compile(f"[0-9a-f]{{{2 * HASH_SIZE}}}")  # an identity as a card writes it

# Sane ranges of the architecture fields a card may hold: the shipped model is well inside
# them, and anything outside would build a network of gigabytes before any other check.
_CONFIG_RANGES = {
    "n": (1, 512),
    "slices": (1, 16),
    "m": (1, 16),
    "hyper_channels": (1, 512),
    "z_channels": (1, 512),
    "levels": (2, 64),
}


def _depth(value: object) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iteratively)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def card_problem(card: dict) -> str | None:
    """What is wrong with a model card's fields (types and ranges), or None."""
    if not isinstance(card["name"], str):
        return "name must be a string"
    try:
        name_bytes = len(card["name"].encode("utf-8"))
    except UnicodeEncodeError:
        return "name must be valid Unicode text"
    if not 1 <= name_bytes <= MAX_NAME_BYTES:  # it goes into every file's header
        return f"name must be 1..{MAX_NAME_BYTES} UTF-8 bytes, got {name_bytes}"
    if card["kind"] not in KINDS:
        return f"unknown model kind {card['kind']!r} (expected one of {', '.join(KINDS)})"
    config = card["config"]
    if not isinstance(config, dict):
        return "config must be an object"
    for key, (lo, hi) in _CONFIG_RANGES.items():
        value = config.get(key, getattr(CodecConfig, key))
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"config.{key} must be an integer in {lo}..{hi}, got {value!r}"
    levels = config.get("levels", CodecConfig.levels)
    for key in ("machine_lambdas", "human_lambdas"):
        values = config.get(key)
        if values is None:
            continue
        numbers = isinstance(values, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e6 for v in values
        )
        if not numbers or len(values) != levels or sorted(values) != values:
            return f"config.{key} must be {levels} increasing positive numbers"
    if not isinstance(config.get("conditioned", False), bool):
        return "config.conditioned must be true or false"
    for key in READS_KEYS:
        reads = card.get(key, [])
        if (
            not isinstance(reads, list)
            or len(reads) > MAX_READS
            or not all(isinstance(r, str) and _IDENTITY.fullmatch(r) for r in reads)
        ):
            n = MAX_READS
            return f"{key} must be a list of at most {n} identities (32 lowercase hex digits)"
    if set(card.get("reads", [])) & set(card.get("machine_reads", [])):
        return "an identity is in both reads and machine_reads"
    try:
        CodecConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def reads_of(card: dict, key: str = "reads") -> frozenset[bytes]:
    """The identities of the weights whose files these weights decode as those did: a
    decoder-only update (``fcodec train decoder``) reads its forebears' files (``reads``);
    an update of the human layer alone reads their machine layer (``machine_reads``)."""
    return frozenset(bytes.fromhex(r) for r in card.get(key, []))


def identity_of(source: Path | bytes) -> bytes:
    """The identity written into every ``.fcb``: the first 16 bytes of the SHA-256 of the
    weight file's bytes (``source``: the file, or its bytes already read)."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).digest()[:16]
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()[:16]


def _declared_shapes(kind: str, c: CodecConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors that size a model of this card: a file whose card declares a
    larger model than its tensors is refused before the model is built."""
    y, hc = c.slices * 64, c.hyper_channels
    one = {
        "g_a.0.weight": (c.n, 3, 5, 5),
        "g_a.6.weight": (y, c.n, 5, 5),
        "g_s.0.weight": (y, c.n, 5, 5),
        "latent.h_a.0.weight": (hc, y, 3, 3),
        "latent.h_a.4.weight": (c.z_channels, hc, 5, 5),
        "latent.gain.log_gain": (c.levels, y),
    }
    if kind == "baseline":
        return one
    return {f"machine.{k}": v for k, v in one.items()} | {
        "additional.g_a.6.weight": (c.m * 64, c.n, 5, 5),
        "additional.latent.gain.log_gain": (c.levels, c.m * 64),
        "human.g_s.0.weight": (y, c.n, 5, 5),
    }


def declared_shapes_problem(path: Path, kind: str, config: CodecConfig) -> str | None:
    """Whether the file's tensors have the shapes its card declares (header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        present = set(f.keys())
        for key, shape in _declared_shapes(kind, config).items():
            if key not in present:
                return f"no tensor {key}"
            found = tuple(f.get_slice(key).get_shape())
            if found != shape:
                sizes = ("x".join(map(str, s)) for s in (found, shape))
                return "{} is {}, the card says {}".format(key, *sizes)
    return None


def tensors_problem(arrays: Mapping[str, np.ndarray]) -> str | None:
    """Non-finite float weights, or integer tensors outside the bounds of docs/FORMAT.md."""
    import numpy as np

    from fusioncodec.exact.networks import integer_problem

    for key, array in arrays.items():
        if array.dtype.kind == "f":
            if not np.isfinite(array).all():
                return f"{key} holds NaN or infinite values"
        elif problem := integer_problem(key, array):
            return problem
    return None
