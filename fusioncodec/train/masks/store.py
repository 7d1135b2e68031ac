"""The mask store: which training images there are, one PNG per image and a manifest
of the settings each was made with, so that a run resumes and redoes only what changed."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fusioncodec.files import TEST_SETS, is_image, write_atomic
from fusioncodec.image import read_rgb
from fusioncodec.messages import error_reason
from fusioncodec.train.edges import EDGE_WIDTH
from fusioncodec.train.masks.sources import MAP_SUFFIXES, MaskError, band

if TYPE_CHECKING:
    pass

FORBIDDEN = TEST_SETS  # never make training targets from them
MANIFEST = "manifest.jsonl"
OVERLAY_COLOUR = (255, 0, 255)  # magenta: rare in photos, visible on dark and bright areas


# --------------------------------------------------------------------------- inputs


def refuse_test_sets(*paths: str | Path | None) -> None:
    """MaskError if a path names a test set (``kodak``, ``coco128``): never train on them."""
    for path in paths:
        if path is None:
            continue
        texts = {str(path).lower(), str(Path(path).resolve()).lower()}
        for name in FORBIDDEN:
            if any(name in text for text in texts):
                raise MaskError(f"refusing to make training masks from a test set ({name}): {path}")


@dataclass(frozen=True)
class Item:
    """One training image: its file, its key (relative stem, ``/``-separated), its source ref."""

    image: Path
    key: str
    ref: Any = None  # label/boundary map path, or COCO image id


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _is_map(path: Path) -> bool:
    return any(path.name.endswith(suffix) for suffix in MAP_SUFFIXES.values())


def folder_items(
    root: Path,
    map_suffix: str | None = None,
    exclude: Sequence[Path] = (),
) -> tuple[list[Item], int]:
    """Images under ``root`` in sorted order, and how many had no map.

    Files named like maps (``*_segments.png``, ``*_boundaries.png``, ``*<map_suffix>``) and
    anything under ``exclude`` (the output folders) are not images.  With ``map_suffix``, an
    image ``a/b.jpg`` pairs with ``a/b<map_suffix>``; images without one are left out.
    """
    root = root.resolve()
    skip = [p.resolve() for p in exclude]
    items, missing = [], 0
    for path in sorted(root.rglob("*")):
        if not is_image(path) or not path.is_file():
            continue
        if _is_map(path) or (map_suffix and path.name.endswith(map_suffix)):
            continue
        if any(_inside(path, folder) for folder in skip):
            continue
        ref = None
        if map_suffix:
            ref = path.with_name(path.stem + map_suffix)
            if not ref.is_file():
                missing += 1
                continue
        items.append(Item(path, _key(path, root), ref))
    return items, missing


def coco_items(coco: Any, images_dir: Path) -> tuple[list[Item], int]:
    """The annotated images found under ``images_dir``, sorted by file name; and how many not."""
    try:
        infos = coco.loadImgs(coco.getImgIds())
        listed = sorted((str(info["file_name"]), int(info["id"])) for info in infos)
    except (KeyError, TypeError, ValueError) as exc:
        raise MaskError(f"annotations: bad image entry ({error_reason(exc)})") from None
    root = images_dir.resolve()
    items, missing = [], 0
    for name, image_id in listed:
        path = root / name
        if not path.is_file():
            missing += 1
            continue
        items.append(Item(path, _key(path, root), image_id))
    return items, missing


# --------------------------------------------------------------------------- output


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay(
    image: np.ndarray, mask: np.ndarray, colour: Sequence[int] = OVERLAY_COLOUR
) -> np.ndarray:
    """Preview: the image dimmed to 45 %, the edge band mostly ``colour`` (RGB uint8)."""
    out = image.astype(np.float32) * 0.45
    on = mask.astype(bool)
    out[on] = 0.25 * image[on] + 0.75 * np.asarray(colour, np.float32)
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def _read_rgb(path: Path) -> np.ndarray:
    """RGB pixels as the training loader reads them (no EXIF rotation)."""
    try:
        return np.asarray(read_rgb(path))
    except FileNotFoundError:
        raise MaskError(f"{path}: no such file") from None
    except Exception as exc:  # Pillow raises many types on corrupt files
        raise MaskError(f"{path}: cannot read image ({error_reason(exc)})") from None


def read_manifest(out: Path) -> dict[str, dict[str, Any]]:
    """Rows of ``<out>/manifest.jsonl`` keyed by mask path (relative to ``out``).

    A later row for the same mask replaces an earlier one (a run appends as it goes and
    rewrites the file compacted at the end); lines that are not JSON objects (an interrupted
    write) are ignored.
    """
    path = Path(out) / MANIFEST
    rows: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return rows
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("mask"), str):
                rows[row["mask"]] = row
    return rows


def _manifest_bytes(rows: dict[str, dict[str, Any]]) -> bytes:
    return "".join(_row_line(rows[k]) for k in sorted(rows)).encode()


def _row_line(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True) + "\n"


def _rel(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()


@dataclass
class Summary:
    """What a :func:`make_masks` run did."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    previews: int = 0
    redone: int = 0  # masks there, made with other parameters, made again
    errors: list[str] = field(default_factory=list)
    manifest: Path | None = None


def _up_to_date(row: dict[str, Any] | None, source: str, params: dict[str, Any]) -> bool:
    return row is not None and row.get("source") == source and row.get("params") == params


def pending_items(
    items: Sequence[Item], out: Path, source: str, params: dict[str, Any], overwrite: bool = False
) -> list[Item]:
    """Items :func:`make_masks` would (re)make: no PNG, or a manifest row with other settings."""
    if overwrite:
        return list(items)
    rows = read_manifest(out)
    params = json.loads(json.dumps(params))
    return [
        item
        for item in items
        if not (
            (Path(out) / f"{item.key}.png").is_file()
            and _up_to_date(rows.get(f"{item.key}.png"), source, params)
        )
    ]


EdgeFn = Callable[[np.ndarray, Item], "tuple[np.ndarray, int | None]"]


def make_masks(
    items: Sequence[Item],
    edges_fn: EdgeFn,
    out: Path,
    *,
    source: str,
    params: dict[str, Any],
    width: int = EDGE_WIDTH,
    overwrite: bool = False,
    preview: Path | None = None,
    preview_count: int | None = None,
    progress: bool = False,
    on_error: Callable[[str], None] | None = None,
) -> Summary:
    """Write ``<out>/<key>.png`` for each item (in order) and keep ``<out>/manifest.jsonl``.

    ``edges_fn(rgb, item)`` gives thin boolean edges (image size) and the number of masks
    they come from (None where that means nothing).  An item is skipped when its PNG exists and
    its manifest row has the same ``source`` and ``params`` (unless ``overwrite``).  A
    :class:`MaskError` or ``OSError`` for one item is reported through ``on_error`` and the
    others go on.  PNGs are written atomically; each new row is appended to the manifest at once
    and the manifest is rewritten, sorted and one row per mask, when the run ends.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = json.loads(json.dumps(params))  # as it will read back
    rows = read_manifest(out)
    manifest = out / MANIFEST
    summary = Summary(manifest=manifest)
    limit = len(items) if preview_count is None else preview_count
    bar = tqdm(items, file=sys.stderr, disable=not progress, unit="img", desc="masks", leave=False)

    def report(message: str) -> None:
        summary.failed += 1
        summary.errors.append(message)
        if on_error is not None:
            if not bar.disable:
                bar.clear()
            on_error(message)
            if not bar.disable:
                bar.refresh()

    job = _Job(out, edges_fn, source, params, width, overwrite, rows, summary)
    try:
        with manifest.open("a", encoding="utf-8") as journal:
            for index, item in enumerate(bar):
                want = preview if preview is not None and index < limit else None
                try:
                    job.one(item, journal, want)
                except (MaskError, OSError) as exc:
                    text = str(exc) if isinstance(exc, MaskError) else error_reason(exc)
                    if not text.startswith(str(item.image)):
                        text = f"{item.image}: {text}"
                    report(text)
    finally:
        bar.close()
        kept = {k: r for k, r in rows.items() if (out / k).is_file()}
        data = _manifest_bytes(kept)
        if not manifest.is_file() or manifest.read_bytes() != data:
            _write_atomic(manifest, data)
    return summary


@dataclass
class _Job:
    """What every item of a :func:`make_masks` run shares."""

    out: Path
    edges_fn: EdgeFn
    source: str
    params: dict[str, Any]
    width: int
    overwrite: bool
    rows: dict[str, dict[str, Any]]
    summary: Summary

    def one(self, item: Item, journal: Any, preview: Path | None) -> None:
        """Make (or keep) one item's mask; its manifest row goes to ``journal`` at once."""
        mask_rel = f"{item.key}.png"
        mask_path = self.out / mask_rel
        old = self.rows.get(mask_rel)
        done = mask_path.is_file() and old is not None
        same = done and _up_to_date(old, self.source, self.params)
        if same and not self.overwrite:
            self.summary.skipped += 1
            if preview is not None:
                with Image.open(mask_path) as im:
                    mask = np.asarray(im.convert("L"))
                _write_preview(preview, item, _read_rgb(item.image), mask)
                self.summary.previews += 1
            return
        rgb = _read_rgb(item.image)
        edges, n_masks = self.edges_fn(rgb, item)
        if edges.shape != rgb.shape[:2]:
            h, w = rgb.shape[:2]
            eh, ew = edges.shape[:2]
            raise MaskError(f"{item.image}: image is {w}x{h} but its edges are {ew}x{eh}")
        mask = band(edges, self.width)
        _write_atomic(mask_path, _png(mask))
        row = {
            "image": _rel(item.image, self.out.resolve()),
            "mask": mask_rel,
            "width": int(rgb.shape[1]),
            "height": int(rgb.shape[0]),
            "source": self.source,
            "params": self.params,
            "edge_fraction": round(float(mask.mean()) / 255.0, 6),
        }
        if n_masks is not None:
            row["masks"] = int(n_masks)
        self.rows[mask_rel] = row
        journal.write(_row_line(row))
        journal.flush()
        self.summary.written += 1
        self.summary.redone += bool(done and not same)
        if preview is not None:
            _write_preview(preview, item, rgb, mask)
            self.summary.previews += 1


def _write_preview(folder: Path, item: Item, rgb: np.ndarray, mask: np.ndarray) -> None:
    _write_atomic(Path(folder) / f"{item.key}.png", _png(overlay(rgb, mask)))
