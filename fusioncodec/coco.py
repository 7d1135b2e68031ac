"""COCO instance annotations, read quietly and checked: one loader for the edge masks of
training and the detector scores of evaluation."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

__all__ = ["load_coco"]


def load_coco(path: str | Path) -> Any:
    """A pycocotools ``COCO`` index of an instances JSON; ValueError (one line) if the file
    is missing, not JSON or not an instances file."""
    from pycocotools.coco import COCO

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (JSON) file") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise ValueError(
            f"{path}: not a COCO instances file (needs images, annotations, categories)"
        )
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        try:
            coco.createIndex()
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: malformed COCO instances file ({exc!r})") from None
    return coco
