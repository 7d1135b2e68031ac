"""``fcodec masks``: edge-mask training targets from SAM, COCO instances or label/boundary maps.

The work is done by :mod:`fusioncodec.train.masks`; this module checks options and paths,
reports each failed image on one line and prints a one-line summary (see docs/MASKS.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from fusioncodec.cli.common import CliError, device_option, progress_option, show
from fusioncodec.messages import one_line
from fusioncodec.train.edges import EDGE_WIDTH
from fusioncodec.train.masks import (
    DEFAULT_ALPHA,
    DEFAULT_POINTS_PER_SIDE,
    DEFAULT_STABILITY,
    MAP_SUFFIXES,
    SAM_MODELS,
    SOURCES,
    Item,
    MaskError,
    boundary_map_edges,
    build_generator,
    build_sam,
    coco_items,
    coco_masks,
    folder_items,
    label_map_edges,
    load_coco,
    make_masks,
    masks_edges,
    pending_items,
    refuse_test_sets,
    sam_masks,
)

__all__ = ["masks"]


class _UsageError(click.UsageError):
    """A click usage error shown as one ``fcodec: error:`` line (exit status 2)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"fcodec: error: {self.format_message()}", err=True)


class _OneLineCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _UsageError:
            raise
        except click.UsageError as exc:
            text = " ".join(line.strip() for line in exc.format_message().splitlines())
            message = f"{one_line(text)} (see fcodec masks -h)"
            raise _UsageError(message, ctx) from None


def _usage(message: str) -> _UsageError:
    return _UsageError(message, click.get_current_context())


def _file_facts(path: Path) -> dict[str, Any]:
    """What identifies an input file in the manifest's parameters: its name and size."""
    return {"name": path.name, "bytes": path.stat().st_size}


def _coco128_names() -> set[str]:
    """File names of the coco128 test set (if the shared data is here): never trained on."""
    from fusioncodec.files import shared_dir
    from fusioncodec.train.data import coco128_names

    try:
        return coco128_names(shared_dir())
    except (OSError, ValueError, KeyError, TypeError):
        return set()


@click.command(
    "masks", cls=_OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--source", type=click.Choice(SOURCES), required=True, help="Where the object edges come from."
)
@click.option("--images", "images_dir", required=True, metavar="DIR", help="Training images.")
@click.option(
    "--annotations", metavar="JSON", help="COCO instances JSON (--source coco, required there)."
)
@click.option(
    "--map-suffix",
    metavar="TEXT",
    help="Map beside each image <stem><TEXT> (labels: _segments.png, boundaries: _boundaries.png).",
)
@click.option("--sam-checkpoint", metavar="PATH", help="SAM checkpoint .pth (never downloaded).")
@click.option(
    "--sam-model",
    type=click.Choice(SAM_MODELS),
    default="vit_h",
    show_default=True,
    help="SAM backbone of the checkpoint; tiny-random: random weights, for tests only.",
)
@click.option(
    "--alpha",
    type=float,
    default=None,
    help=f"Keep SAM masks with predicted IoU above this [default: {DEFAULT_ALPHA}].",
)
@click.option(
    "--stability",
    type=float,
    default=None,
    help=f"SAM stability-score threshold [default: {DEFAULT_STABILITY}].",
)
@click.option(
    "--points-per-side",
    type=int,
    default=None,
    help=f"SAM point-prompt grid per side [default: {DEFAULT_POINTS_PER_SIDE}].",
)
@click.option(
    "--width",
    type=int,
    default=EDGE_WIDTH,
    show_default=True,
    help="Edge band width in pixels (square dilation of the thin edges).",
)
@click.option(
    "--out", "out_dir", required=True, metavar="DIR", help="Mask folder (PNGs, manifest)."
)
@click.option("--preview", "preview_dir", metavar="DIR", help="Also write overlays here.")
@click.option("--preview-count", type=int, default=None, help="Overlays for the first N only.")
@click.option("--limit", type=int, default=None, help="Only the first N images (sorted order).")
@click.option("--overwrite", is_flag=True, help="Redo masks that are already up to date.")
@device_option
@progress_option
def masks(
    source: str,
    images_dir: str,
    annotations: str | None,
    map_suffix: str | None,
    sam_checkpoint: str | None,
    sam_model: str,
    alpha: float | None,
    stability: float | None,
    points_per_side: int | None,
    width: int,
    out_dir: str,
    preview_dir: str | None,
    preview_count: int | None,
    limit: int | None,
    overwrite: bool,
    device: str,
    progress: bool | None,
) -> None:
    """Make one edge-mask PNG per training image, and OUT/manifest.jsonl.

    Masks are OUT/<path under IMAGES without extension>.png (uint8 0/255, image size): the
    object boundaries dilated to a band --width px wide.  Images already done with the same
    settings are skipped, so an interrupted run resumes.  Test sets (kodak, coco128) are refused.

    \b
    fcodec masks --source boundaries --images ../shared/data/train/bsds500 --out masks/bsds
    fcodec masks --source coco --images DIR/images --annotations DIR/instances.json --out OUT
    fcodec masks --source sam --sam-checkpoint sam_vit_h_4b8939.pth --images DIR --out OUT
    """
    sam_only = {
        "--alpha": alpha,
        "--stability": stability,
        "--points-per-side": points_per_side,
        "--sam-checkpoint": sam_checkpoint,
    }
    if source != "sam":
        if sam_model != "vit_h":
            raise _usage("--sam-model is only for --source sam")
        for name, value in sam_only.items():
            if value is not None:
                raise _usage(f"{name} is only for --source sam")
    if annotations is not None and source != "coco":
        raise _usage("--annotations is only for --source coco")
    if source == "coco" and annotations is None:
        raise _usage("--source coco needs --annotations JSON")
    if map_suffix is not None and source not in MAP_SUFFIXES:
        raise _usage("--map-suffix is only for --source labels or boundaries")
    if preview_count is not None and preview_dir is None:
        raise _usage("--preview-count needs --preview DIR")
    alpha = DEFAULT_ALPHA if alpha is None else alpha
    stability = DEFAULT_STABILITY if stability is None else stability
    points_per_side = DEFAULT_POINTS_PER_SIDE if points_per_side is None else points_per_side
    for name, value in (("--alpha", alpha), ("--stability", stability)):
        if not 0.0 <= value <= 1.0:
            raise _usage(f"{name} must be between 0 and 1, got {value}")
    for name, number, low in (
        ("--width", width, 1),
        ("--points-per-side", points_per_side, 1),
        ("--limit", limit, 1),
        ("--preview-count", preview_count, 0),
    ):
        if number is not None and number < low:
            raise _usage(f"{name} must be at least {low}, got {number}")
    if map_suffix is not None and (not map_suffix or "/" in map_suffix or os.sep in map_suffix):
        raise _usage(f"--map-suffix must be a file-name ending, got {map_suffix!r}")

    if source == "sam" and sam_model == "tiny-random" and sam_checkpoint is not None:
        raise _usage("--sam-model tiny-random has random weights and takes no --sam-checkpoint")
    if source == "sam" and sam_model != "tiny-random" and sam_checkpoint is None:
        raise _usage(f"--sam-model {sam_model} needs --sam-checkpoint PATH (a local .pth file)")

    try:
        _run(
            source=source,
            root=Path(images_dir),
            annotations=annotations,
            map_suffix=map_suffix,
            sam_checkpoint=sam_checkpoint,
            sam_model=sam_model,
            alpha=alpha,
            stability=stability,
            points_per_side=points_per_side,
            width=width,
            out=Path(out_dir),
            preview=Path(preview_dir) if preview_dir else None,
            preview_count=preview_count,
            limit=limit,
            overwrite=overwrite,
            device=device,
            progress=progress,
        )
    except MaskError as exc:
        raise CliError(str(exc)) from None


def _run(
    *,
    source: str,
    root: Path,
    annotations: str | None,
    map_suffix: str | None,
    sam_checkpoint: str | None,
    sam_model: str,
    alpha: float,
    stability: float,
    points_per_side: int,
    width: int,
    out: Path,
    preview: Path | None,
    preview_count: int | None,
    limit: int | None,
    overwrite: bool,
    device: str,
    progress: bool | None,
) -> None:
    refuse_test_sets(root, annotations)
    if not root.is_dir():
        raise CliError(f"{show(root)}: no such directory")
    for name, folder in (("--out", out), ("--preview", preview)):
        if folder is None:
            continue
        if folder.exists() and not folder.is_dir():
            raise CliError(f"{show(folder)}: not a directory ({name})")
        if _inside(root.resolve(), folder.resolve()):
            raise CliError(f"{name} {show(folder)} must not be --images or hold it")
    if preview is not None and preview.resolve() == out.resolve():
        raise CliError("--preview must be another folder than --out (it would replace masks)")

    params: dict[str, Any] = {"width": width}
    missing_what = "images without a map"
    if source == "coco":
        assert annotations is not None
        ann = Path(annotations)
        if not ann.is_file():
            raise CliError(f"{show(ann)}: no such file")
        coco = load_coco(ann)
        items, missing = coco_items(coco, root)
        missing_what = "annotated images not found"
        params["annotations"] = _file_facts(ann)

        def edges_fn(rgb: Any, item: Item) -> tuple[Any, int]:
            info = coco.loadImgs(item.ref)[0]
            size = (int(info["height"]), int(info["width"]))
            if size != rgb.shape[:2]:
                raise MaskError(
                    f"{item.image}: image is {rgb.shape[1]}x{rgb.shape[0]} but the annotations "
                    f"say {size[1]}x{size[0]}"
                )
            try:
                found = coco_masks(coco, item.ref)
            except Exception as exc:  # pycocotools raises bare Exceptions on bad segmentations
                raise MaskError(f"{item.image}: bad segmentation ({exc})") from None
            return masks_edges(found, size), len(found)

    elif source in MAP_SUFFIXES:
        suffix = map_suffix or MAP_SUFFIXES[source]
        reader = label_map_edges if source == "labels" else boundary_map_edges
        items, missing = folder_items(root, suffix, exclude=[out, *([preview] if preview else [])])
        params["map_suffix"] = suffix

        def edges_fn(rgb: Any, item: Item) -> tuple[Any, None]:
            return reader(item.ref), None

    else:
        if sam_checkpoint and not Path(sam_checkpoint).is_file():
            raise CliError(f"SAM checkpoint not found: {show(sam_checkpoint)} (never downloaded)")
        items, missing = folder_items(root, exclude=[out, *([preview] if preview else [])])
        params.update(
            model=sam_model,
            checkpoint=_file_facts(Path(sam_checkpoint)) if sam_checkpoint else None,
            alpha=alpha,
            stability=stability,
            points_per_side=points_per_side,
        )
        generator: list[Any] = []  # built before the run, if any image needs it

        def edges_fn(rgb: Any, item: Item) -> tuple[Any, int]:
            try:
                found = sam_masks(rgb, generator[0], alpha)
            except (RuntimeError, ValueError) as exc:  # torch: out of memory; degenerate sizes
                raise MaskError(f"{item.image}: SAM failed ({exc})") from None
            return masks_edges(found, rgb.shape[:2]), len(found)

    test_names = _coco128_names()
    before = len(items)
    items = [item for item in items if item.image.name not in test_names]
    excluded = before - len(items)
    for item in items:
        refuse_test_sets(item.image)
    if limit is not None:
        items = items[:limit]
    if not items:
        raise CliError(f"no training images found under {show(root)}")
    _check_collisions(items)
    if source == "sam" and pending_items(items, out, source, params, overwrite):
        import torch

        torch.manual_seed(0)
        sam = build_sam(sam_model, sam_checkpoint, device)  # only if there is work to do
        generator.append(build_generator(sam, alpha, points_per_side, stability))

    show_bar = progress if progress is not None else sys.stderr.isatty()
    summary = make_masks(
        items,
        edges_fn,
        out,
        source=source,
        params=params,
        width=width,
        overwrite=overwrite,
        preview=preview,
        preview_count=preview_count,
        progress=show_bar,
        on_error=lambda message: click.echo(f"fcodec: error: {message}", err=True),
    )
    parts = [f"{summary.written} written"]
    if summary.redone:
        parts[-1] += f" ({summary.redone} redone: other settings)"
    parts.append(f"{summary.skipped} up to date")
    if summary.failed:
        parts.append(f"{summary.failed} failed")
    if summary.previews:
        parts.append(f"{summary.previews} previews in {show(preview)}")
    if missing:
        parts.append(f"{missing} {missing_what}")
    if excluded:
        parts.append(f"{excluded} coco128 test images left out")
    click.echo(f"masks: {', '.join(parts)}; manifest {show(summary.manifest)}", err=True)
    if summary.failed:
        click.get_current_context().exit(1)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_collisions(items: list[Item]) -> None:
    seen: dict[str, Item] = {}
    for item in items:
        other = seen.setdefault(item.key, item)
        if other is not item:
            raise CliError(
                f"{show(other.image)} and {show(item.image)} would both write {item.key}.png; "
                "nothing written"
            )
