"""``fcodec masks``: edge-mask training targets from SAM, COCO instances or label/boundary maps.

The work is done by :mod:`fusioncodec.train.masks`; this module checks options and paths,
reports each failed image on one line and prints a one-line summary (see docs/MASKS.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from fusioncodec.cli.common import CliError, device_option, option_group, progress_option, show
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


sam_options = option_group(
    # Segment Anything: its checkpoint and how its masks are kept.
    click.option(
        "--sam-checkpoint", metavar="PATH", help="SAM checkpoint .pth (never downloaded)."
    ),
    click.option(
        "--sam-model",
        type=click.Choice(SAM_MODELS),
        default="vit_h",
        show_default=True,
        help="SAM backbone of the checkpoint; tiny-random: random weights, for tests only.",
    ),
    click.option(
        "--alpha",
        type=float,
        default=None,
        help=f"Keep SAM masks with predicted IoU above this [default: {DEFAULT_ALPHA}].",
    ),
    click.option(
        "--stability",
        type=float,
        default=None,
        help=f"SAM stability-score threshold [default: {DEFAULT_STABILITY}].",
    ),
    click.option(
        "--points-per-side",
        type=int,
        default=None,
        help=f"SAM point-prompt grid per side [default: {DEFAULT_POINTS_PER_SIDE}].",
    ),
)

output_options = option_group(
    # Where the masks go, which images are done, and how the run shows.
    click.option(
        "--out", "out_dir", required=True, metavar="DIR", help="Mask folder (PNGs, manifest)."
    ),
    click.option("--preview", "preview_dir", metavar="DIR", help="Also write overlays here."),
    click.option("--preview-count", type=int, default=None, help="Overlays for the first N only."),
    click.option("--limit", type=int, default=None, help="Only the first N images (sorted order)."),
    click.option("--overwrite", is_flag=True, help="Redo masks that are already up to date."),
    device_option,
    progress_option,
)


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
@click.option(
    "--width",
    type=int,
    default=EDGE_WIDTH,
    show_default=True,
    help="Edge band width in pixels (square dilation of the thin edges).",
)
@sam_options
@output_options
def masks(**options: Any) -> None:
    """Make one edge-mask PNG per training image, and OUT/manifest.jsonl.

    Masks are OUT/<path under IMAGES without extension>.png (uint8 0/255, image size): the
    object boundaries dilated to a band --width px wide.  Images already done with the same
    settings are skipped, so an interrupted run resumes.  Test sets (kodak, coco128) are refused.

    \b
    fcodec masks --source boundaries --images ../shared/data/train/bsds500 --out masks/bsds
    fcodec masks --source coco --images DIR/images --annotations DIR/instances.json --out OUT
    fcodec masks --source sam --sam-checkpoint sam_vit_h_4b8939.pth --images DIR --out OUT
    """
    o = SimpleNamespace(**options)
    _check_usage(o)
    o.alpha = DEFAULT_ALPHA if o.alpha is None else o.alpha
    o.stability = DEFAULT_STABILITY if o.stability is None else o.stability
    if o.points_per_side is None:
        o.points_per_side = DEFAULT_POINTS_PER_SIDE
    for name, value in (("--alpha", o.alpha), ("--stability", o.stability)):
        if not 0.0 <= value <= 1.0:
            raise _usage(f"{name} must be between 0 and 1, got {value}")
    for name, number, low in (
        ("--width", o.width, 1),
        ("--points-per-side", o.points_per_side, 1),
        ("--limit", o.limit, 1),
        ("--preview-count", o.preview_count, 0),
    ):
        if number is not None and number < low:
            raise _usage(f"{name} must be at least {low}, got {number}")
    o.root, o.out = Path(o.images_dir), Path(o.out_dir)
    o.preview = Path(o.preview_dir) if o.preview_dir else None
    try:
        _run(o)
    except MaskError as exc:
        raise CliError(str(exc)) from None


def _check_usage(o: SimpleNamespace) -> None:
    """Options that do not go together, or not with this --source."""
    sam_only = {
        "--alpha": o.alpha,
        "--stability": o.stability,
        "--points-per-side": o.points_per_side,
        "--sam-checkpoint": o.sam_checkpoint,
    }
    if o.source != "sam":
        if o.sam_model != "vit_h":
            raise _usage("--sam-model is only for --source sam")
        for name, value in sam_only.items():
            if value is not None:
                raise _usage(f"{name} is only for --source sam")
    if o.annotations is not None and o.source != "coco":
        raise _usage("--annotations is only for --source coco")
    if o.source == "coco" and o.annotations is None:
        raise _usage("--source coco needs --annotations JSON")
    if o.map_suffix is not None and o.source not in MAP_SUFFIXES:
        raise _usage("--map-suffix is only for --source labels or boundaries")
    if o.preview_count is not None and o.preview_dir is None:
        raise _usage("--preview-count needs --preview DIR")
    suffix = o.map_suffix
    if suffix is not None and (not suffix or "/" in suffix or os.sep in suffix):
        raise _usage(f"--map-suffix must be a file-name ending, got {suffix!r}")
    if o.source == "sam" and o.sam_model == "tiny-random" and o.sam_checkpoint is not None:
        raise _usage("--sam-model tiny-random has random weights and takes no --sam-checkpoint")
    if o.source == "sam" and o.sam_model != "tiny-random" and o.sam_checkpoint is None:
        raise _usage(f"--sam-model {o.sam_model} needs --sam-checkpoint PATH (a local .pth file)")


def _run(o: SimpleNamespace) -> None:
    root, out, preview = o.root, o.out, o.preview
    refuse_test_sets(root, o.annotations)
    _check_folders(root, out, preview)
    params: dict[str, Any] = {"width": o.width}
    exclude = [out, *([preview] if preview else [])]
    missing_what = "images without a map"
    if o.source == "coco":
        items, missing, edges_fn = _coco_source(root, Path(o.annotations), params)
        missing_what = "annotated images not found"
    elif o.source in MAP_SUFFIXES:
        items, missing, edges_fn = _map_source(o.source, root, o.map_suffix, exclude, params)
    else:
        items, missing, edges_fn, generator = _sam_source(o, exclude, params)
    items, excluded = _training_items(items, root, o.limit)
    if o.source == "sam" and pending_items(items, out, o.source, params, o.overwrite):
        import torch

        torch.manual_seed(0)
        sam = build_sam(o.sam_model, o.sam_checkpoint, o.device)  # only if there is work to do
        generator.append(build_generator(sam, o.alpha, o.points_per_side, o.stability))

    show_bar = o.progress if o.progress is not None else sys.stderr.isatty()
    summary = make_masks(
        items,
        edges_fn,
        out,
        source=o.source,
        params=params,
        width=o.width,
        overwrite=o.overwrite,
        preview=preview,
        preview_count=o.preview_count,
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


def _check_folders(root: Path, out: Path, preview: Path | None) -> None:
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


def _coco_source(root: Path, ann: Path, params: dict[str, Any]) -> tuple[list[Item], int, Any]:
    """Items and edges of COCO instance masks."""
    if not ann.is_file():
        raise CliError(f"{show(ann)}: no such file")
    coco = load_coco(ann)
    items, missing = coco_items(coco, root)
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

    return items, missing, edges_fn


def _map_source(
    source: str, root: Path, map_suffix: str | None, exclude: list[Path], params: dict[str, Any]
) -> tuple[list[Item], int, Any]:
    """Items and edges of label or boundary maps beside the images."""
    suffix = map_suffix or MAP_SUFFIXES[source]
    reader = label_map_edges if source == "labels" else boundary_map_edges
    items, missing = folder_items(root, suffix, exclude=exclude)
    params["map_suffix"] = suffix

    def edges_fn(rgb: Any, item: Item) -> tuple[Any, None]:
        return reader(item.ref), None

    return items, missing, edges_fn


def _sam_source(
    o: SimpleNamespace, exclude: list[Path], params: dict[str, Any]
) -> tuple[list[Item], int, Any, list[Any]]:
    """Items and edges of SAM masks; the generator is built later, if any image needs it."""
    if o.sam_checkpoint and not Path(o.sam_checkpoint).is_file():
        raise CliError(f"SAM checkpoint not found: {show(o.sam_checkpoint)} (never downloaded)")
    items, missing = folder_items(o.root, exclude=exclude)
    params.update(
        model=o.sam_model,
        checkpoint=_file_facts(Path(o.sam_checkpoint)) if o.sam_checkpoint else None,
        alpha=o.alpha,
        stability=o.stability,
        points_per_side=o.points_per_side,
    )
    generator: list[Any] = []

    def edges_fn(rgb: Any, item: Item) -> tuple[Any, int]:
        try:
            found = sam_masks(rgb, generator[0], o.alpha)
        except (RuntimeError, ValueError) as exc:  # torch: out of memory; degenerate sizes
            raise MaskError(f"{item.image}: SAM failed ({exc})") from None
        return masks_edges(found, rgb.shape[:2]), len(found)

    return items, missing, edges_fn, generator


def _training_items(items: list[Item], root: Path, limit: int | None) -> tuple[list[Item], int]:
    """The items less coco128's test images (and how many those were), the first ``limit``."""
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
    return items, excluded


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
