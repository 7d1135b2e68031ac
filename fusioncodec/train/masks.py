"""Edge-mask targets for the SA-ICM machine layer, made once per training image and stored.

Three sources give the object boundaries of an image as a thin boolean edge map:

* SAM (segment-anything's automatic mask generator): :func:`sam_masks` / :func:`sam_edges`
  keep the masks whose *predicted IoU* (SAM's own quality estimate, ``predicted_iou``) is
  above ``alpha``; :func:`build_sam` loads a real checkpoint, :func:`tiny_random_sam` builds a
  small random SAM from segment-anything's own classes for tests and smoke runs only.
* COCO instance annotations (polygons and RLE): :func:`coco_edges`.
* Label maps (:func:`label_map_edges`) or boundary maps (:func:`boundary_map_edges`) as PNG.

Thin edges are the pixels on either side of a mask boundary (:mod:`fusioncodec.train.edges`);
:func:`band` dilates them to ``EDGE_WIDTH`` pixels, the target the SA-ICM loss counts.
:func:`make_masks` writes one ``<out>/<relative stem>.png`` (uint8 0/255, image size) per image
and a ``manifest.jsonl`` (:func:`read_manifest`), skipping images already done with the same
parameters.  No click here: ``fusioncodec.cli.masks`` is the ``fcodec masks`` command.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fusioncodec.files import TEST_SETS, is_image, write_atomic
from fusioncodec.messages import error_reason
from fusioncodec.train.edges import EDGE_WIDTH, edge_band, label_boundaries, mask_boundaries

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_STABILITY",
    "EDGE_WIDTH",
    "FORBIDDEN",
    "MANIFEST",
    "MAP_SUFFIXES",
    "SAM_MODELS",
    "SOURCES",
    "Item",
    "MaskError",
    "Summary",
    "band",
    "boundary_map_edges",
    "build_generator",
    "build_sam",
    "coco_edges",
    "coco_items",
    "coco_masks",
    "folder_items",
    "label_map_edges",
    "load_coco",
    "make_masks",
    "masks_edges",
    "overlay",
    "pending_items",
    "read_manifest",
    "refuse_test_sets",
    "sam_edges",
    "sam_masks",
    "tiny_random_sam",
]

SOURCES = ("sam", "coco", "labels", "boundaries")
SAM_MODELS = ("vit_h", "vit_l", "vit_b", "tiny-random")
SAM_EMBED_DIMS = {"vit_h": 1280, "vit_l": 1024, "vit_b": 768}  # checks a checkpoint's model
DEFAULT_ALPHA = 0.78  # the reference trains with 0.78 and 0.93
DEFAULT_STABILITY = 0.95  # segment-anything's default stability_score_thresh
DEFAULT_POINTS_PER_SIDE = 32  # segment-anything's default grid (32 x 32 point prompts)
MAP_SUFFIXES = {"labels": "_segments.png", "boundaries": "_boundaries.png"}
FORBIDDEN = TEST_SETS  # never make training targets from them
MANIFEST = "manifest.jsonl"
OVERLAY_COLOUR = (255, 0, 255)  # magenta: rare in photos, visible on dark and bright areas


class MaskError(ValueError):
    """An expected problem with an input or a setting, described in one line."""


# --------------------------------------------------------------------------- edges per source


def masks_edges(masks: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Thin boolean edges (H x W) of binary instance masks: the union of their boundaries."""
    return mask_boundaries(masks, shape)


def band(edges: np.ndarray, width: int = EDGE_WIDTH) -> np.ndarray:
    """The stored target: thin edges dilated to a ``width`` px band, uint8 0/255."""
    return edge_band(edges, width) * np.uint8(255)


def sam_masks(image: np.ndarray, generator: Any, alpha: float) -> list[np.ndarray]:
    """SAM's automatic masks of an RGB uint8 image whose predicted IoU is above ``alpha``.

    ``generator`` is a ``SamAutomaticMaskGenerator`` in ``binary_mask`` mode (or anything whose
    ``generate`` returns records with ``segmentation`` and ``predicted_iou``).  Records are
    filtered again here so the result is right whatever ``pred_iou_thresh`` it was built with.
    """
    records = generator.generate(np.ascontiguousarray(image))
    return [np.asarray(r["segmentation"], bool) for r in records if r["predicted_iou"] > alpha]


def sam_edges(image: np.ndarray, generator: Any, alpha: float) -> np.ndarray:
    """Thin boolean edges of the SAM masks of ``image`` whose predicted IoU is above ``alpha``."""
    return masks_edges(sam_masks(image, generator, alpha), image.shape[:2])


def coco_masks(coco: Any, image_id: int) -> list[np.ndarray]:
    """Binary masks of all instances of one image (polygons, RLE, crowd regions included)."""
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
    return [coco.annToMask(a).astype(bool) for a in anns if a.get("segmentation")]


def coco_edges(coco: Any, image_id: int) -> np.ndarray:
    """Thin boolean edges of the instance masks of COCO image ``image_id``."""
    info = coco.loadImgs(image_id)[0]
    return masks_edges(coco_masks(coco, image_id), (info["height"], info["width"]))


def _read_map(path: Path, boundaries: bool = False) -> np.ndarray:
    """Pixels of a map image; for boundaries, palette images become colours, alpha is dropped."""
    try:
        with Image.open(path) as im:
            if boundaries and im.mode == "P":
                im = im.convert("RGBA")
            arr = np.asarray(im)
            if boundaries and im.mode in ("LA", "RGBA", "PA"):
                arr = arr[..., :-1]  # alpha is not a boundary
            return arr
    except FileNotFoundError:
        raise MaskError(f"{path}: no such file") from None
    except Exception as exc:  # Pillow raises many types on corrupt files
        raise MaskError(f"{path}: cannot read image ({error_reason(exc)})") from None


def label_map_edges(path: str | Path) -> np.ndarray:
    """Thin boolean edges where neighbouring labels differ (grey, 16-bit, palette or colour map)."""
    labels = _read_map(Path(path))
    if labels.ndim == 3:  # colour-coded labels: one integer per colour
        weights = 256 ** np.arange(labels.shape[-1], dtype=np.int64)
        labels = (labels.astype(np.int64) * weights).sum(-1)
    return label_boundaries(labels)


def boundary_map_edges(path: str | Path) -> np.ndarray:
    """Thin boolean edges from a boundary map: every non-zero pixel is a boundary."""
    arr = _read_map(Path(path), boundaries=True)
    if arr.ndim == 3:
        arr = arr.any(-1)
    return arr > 0


# --------------------------------------------------------------------------- SAM models


def _torch_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MaskError("--device cuda: no CUDA device is available here")
    return torch.device(device)


def tiny_random_sam(seed: int = 0, img_size: int = 64) -> Any:
    """A small SAM with random weights, for tests and smoke runs only (its masks mean nothing).

    Built from segment-anything's own classes (``ImageEncoderViT``, ``PromptEncoder``,
    ``MaskDecoder`` with ``TwoWayTransformer``) at ``img_size`` px input (images are resized so
    their longer side is ``img_size``), 32 channels and 2 encoder blocks: a few hundred ms per
    image on a CPU.  The mask-quality head is fixed to predict an IoU of exactly 0.5, so with
    ``alpha >= 0.5`` no mask passes and with ``alpha < 0.5`` all do (before stability and NMS).
    """
    import torch

    from fusioncodec._torchvision import ensure_torchvision

    ensure_torchvision()
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    patch, dim = 16, 32
    if img_size % patch:
        raise MaskError(f"tiny SAM image size must be a multiple of {patch}, got {img_size}")
    grid = img_size // patch
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=img_size,
                patch_size=patch,
                embed_dim=dim,
                depth=2,
                num_heads=2,
                mlp_ratio=2.0,
                out_chans=dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=2,
                global_attn_indexes=(1,),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=dim,
                image_embedding_size=(grid, grid),
                input_image_size=(img_size, img_size),
                mask_in_chans=4,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                transformer_dim=dim,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
        )
    finally:
        torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        head = sam.mask_decoder.iou_prediction_head.layers[-1]
        head.weight.zero_()
        head.bias.fill_(0.5)
    return sam.eval()


def build_sam(model: str, checkpoint: str | Path | None, device: str = "auto") -> Any:
    """A SAM in eval mode on ``device``: ``tiny-random`` or a registry model with its checkpoint.

    ``vit_h``/``vit_l``/``vit_b`` are built with ``segment_anything.sam_model_registry[model]``
    and loaded from ``checkpoint`` (a local file; nothing is ever downloaded).  The state dict
    is read first, on the CPU, with ``weights_only=True``, and checked against ``model`` before
    the (large) network is built.
    """
    if model not in SAM_MODELS:
        raise MaskError(f"unknown SAM model {model!r}; use one of {', '.join(SAM_MODELS)}")
    target = _torch_device(device)
    if model == "tiny-random":
        if checkpoint is not None:
            raise MaskError("--sam-model tiny-random has random weights and takes no checkpoint")
        return tiny_random_sam().to(target)
    if checkpoint is None:
        raise MaskError(f"--sam-model {model} needs --sam-checkpoint PATH (a local .pth file)")
    path = Path(checkpoint)
    if not path.is_file():
        raise MaskError(f"SAM checkpoint not found: {path} (download it yourself; see MASKS.md)")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors of many kinds
        raise MaskError(
            f"{path}: not a readable PyTorch checkpoint ({error_reason(exc)})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    key = "image_encoder.patch_embed.proj.weight"
    if not isinstance(state, dict) or key not in state:
        raise MaskError(f"{path}: not a SAM checkpoint (no {key})")
    dim = int(state[key].shape[0])
    if dim != SAM_EMBED_DIMS[model]:
        found = [name for name, d in SAM_EMBED_DIMS.items() if d == dim]
        hint = f"; use --sam-model {found[0]}" if found else ""
        raise MaskError(f"{path}: checkpoint is not a {model} model (embed dim {dim}){hint}")

    from fusioncodec._torchvision import ensure_torchvision

    ensure_torchvision()
    from segment_anything import sam_model_registry

    sam = sam_model_registry[model](checkpoint=None)
    try:
        sam.load_state_dict(state)
    except RuntimeError as exc:
        raise MaskError(f"{path}: does not fit {model} ({error_reason(exc)})") from None
    return sam.eval().to(target)


def build_generator(
    sam: Any,
    alpha: float,
    points_per_side: int = DEFAULT_POINTS_PER_SIDE,
    stability: float = DEFAULT_STABILITY,
    points_per_batch: int = 64,
) -> Any:
    """``SamAutomaticMaskGenerator`` keeping masks with predicted IoU above ``alpha``.

    ``stability`` is the generator's ``stability_score_thresh`` (segment-anything's default
    0.95); no crops, no small-region clean-up (which would need OpenCV).
    """
    from fusioncodec._torchvision import ensure_torchvision

    ensure_torchvision()
    from segment_anything import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(
        sam,
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
        pred_iou_thresh=alpha,
        stability_score_thresh=stability,
        output_mode="binary_mask",
    )


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


def load_coco(path: Path) -> Any:
    """A ``pycocotools.coco.COCO`` index of an instances JSON (its chatter silenced)."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except FileNotFoundError:
        raise MaskError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise MaskError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except Exception as exc:  # KeyError/TypeError on a JSON that is not a COCO instances file
        raise MaskError(f"{path}: not a COCO instances file ({error_reason(exc)})") from None


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
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
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

    try:
        with manifest.open("a", encoding="utf-8") as journal:
            for index, item in enumerate(bar):
                mask_rel = f"{item.key}.png"
                mask_path = out / mask_rel
                want_preview = preview is not None and index < limit
                try:
                    old = rows.get(mask_rel)
                    done = mask_path.is_file() and old is not None
                    same = done and _up_to_date(old, source, params)
                    if same and not overwrite:
                        summary.skipped += 1
                        if want_preview:
                            with Image.open(mask_path) as im:
                                mask = np.asarray(im.convert("L"))
                            _write_preview(preview, item, _read_rgb(item.image), mask)
                            summary.previews += 1
                        continue
                    rgb = _read_rgb(item.image)
                    edges, n_masks = edges_fn(rgb, item)
                    if edges.shape != rgb.shape[:2]:
                        h, w = rgb.shape[:2]
                        eh, ew = edges.shape[:2]
                        raise MaskError(
                            f"{item.image}: image is {w}x{h} but its edges are {ew}x{eh}"
                        )
                    mask = band(edges, width)
                    _write_atomic(mask_path, _png(mask))
                    row = {
                        "image": _rel(item.image, out.resolve()),
                        "mask": mask_rel,
                        "width": int(rgb.shape[1]),
                        "height": int(rgb.shape[0]),
                        "source": source,
                        "params": params,
                        "edge_fraction": round(float(mask.mean()) / 255.0, 6),
                    }
                    if n_masks is not None:
                        row["masks"] = int(n_masks)
                    rows[mask_rel] = row
                    journal.write(_row_line(row))
                    journal.flush()
                    summary.written += 1
                    summary.redone += bool(done and not same)
                    if want_preview:
                        _write_preview(preview, item, rgb, mask)
                        summary.previews += 1
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


def _write_preview(folder: Path, item: Item, rgb: np.ndarray, mask: np.ndarray) -> None:
    _write_atomic(Path(folder) / f"{item.key}.png", _png(overlay(rgb, mask)))
