"""Reading training checkpoints without pickle's code execution.

A checkpoint (``fcodec train``'s ``checkpoint.pt``) holds tensors, numbers, strings, lists
and dicts, and, in files from before fusioncodec 0.2, ``pathlib`` paths.  It is read with
``torch.load(weights_only=True)``, which refuses any other object, so a hostile checkpoint
cannot run code.
"""

from __future__ import annotations

import pathlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch

_ALLOWED = [pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely (one-line message)."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, on the CPU (tensors and plain data only)."""
    try:
        with torch.serialization.safe_globals(_ALLOWED):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        why = f"it holds {found.group(1)}" if found else type(exc).__name__
        raise CheckpointError(
            f"{path} cannot be read safely: a checkpoint holds tensors and plain data only ({why})"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a fusioncodec training checkpoint")
    return state


def plain(value: Any) -> Any:
    """``value`` with paths turned into strings, for a checkpoint's config."""
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
