"""``fcodec eval machine``: detector COCO mAP against bpp, for fusioncodec and other codecs.

The sweep is :mod:`fusioncodec.eval.machine`, its results files and BD tables
:mod:`fusioncodec.eval.map_results`. Outputs in ``--out``: ``<detector>_<codec>.json`` in
the layout of ``shared/anchors/coco128/*.json`` (so curves overlay and can serve as BD-rate
anchors), ``results.csv``, ``map-<detector>.png`` and ``bd-rate.md`` / ``bd-rate.json``.
Every option, file, detector and model is checked before the first picture is coded.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from fusioncodec.cli.common import (
    CliError,
    check_qualities_early,
    device_option,
    option_group,
    show,
    weights_option,
)
from fusioncodec.eval import machine as M
from fusioncodec.eval import map_results as R
from fusioncodec.eval import runners
from fusioncodec.files import write_atomic
from fusioncodec.messages import error_reason


def _parse_list(text: str, what: str, cast: Any) -> list[Any]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise CliError(f"{what}: empty list")
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise CliError(f"{what}: not a comma list of numbers: {text!r}") from None


def _write(path: Path, data: bytes | str) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise CliError(f"{show(path)}: cannot write: {error_reason(exc)}") from None


input_options = option_group(
    # The pictures, their annotations and the detectors that score them.
    click.option(
        "--images",
        "images_dir",
        required=True,
        metavar="DIR",
        help="Original images; files are matched to the annotations' file names by stem.",
    ),
    click.option(
        "--annotations",
        required=True,
        metavar="FILE",
        help="COCO instances JSON (e.g. shared/data/coco128/instances.json).",
    ),
    click.option(
        "--detector",
        "detector_specs",
        multiple=True,
        metavar="SPEC",
        help="yolox, fastestdet, NAME:MODEL.onnx, plugin.py[:MODEL.onnx] or "
        "module:factory[:MODEL.onnx]; repeatable. Default: yolox and fastestdet "
        "from $FUSIONCODEC_SHARED/detectors.",
    ),
    click.option("--limit", type=int, default=None, metavar="N", help="Only the first N images."),
)

codec_options = option_group(
    # The codecs swept, their qualities and weights.
    click.option(
        "--codecs",
        default=None,
        metavar="LIST",
        help="Comma list of uncompressed, fusioncodec-machine (machine layer), fusioncodec (both "
        "layers, human decoder), baseline (single-layer LIC), jpeg, webp, avif, hevc, vvc. "
        "Default: uncompressed,fusioncodec-machine (uncompressed only with --decoded). "
        "The uncompressed images are always scored.",
    ),
    click.option(
        "--qualities",
        default="1,2,3,4,5,6,7,8",
        show_default=True,
        metavar="LIST",
        help="Qualities of fusioncodec-machine, fusioncodec and baseline.",
    ),
    click.option(
        "--classical-qualities",
        default=None,
        metavar="LIST",
        help="Qualities for jpeg/webp/avif/hevc. Default: the sweeps of the shared anchors.",
    ),
    weights_option,
    click.option(
        "--baseline-weights",
        default=None,
        metavar="PATH",
        help="Single-layer baseline weights (codec 'baseline'). Default: the shipped baseline.",
    ),
    device_option,
)

decoded_options = option_group(
    # Pictures decoded elsewhere, scored as one more curve.
    click.option(
        "--decoded",
        "decoded_dirs",
        multiple=True,
        metavar="DIR",
        help="Score a folder of images decoded by any codec (matched by stem, the part of the "
        "name before the first dot); repeat for several rate points of one curve.",
    ),
    click.option(
        "--bpp-json",
        "bpp_files",
        multiple=True,
        metavar="FILE",
        help="Bits per pixel of a --decoded folder (in the same order): a number, "
        '{"bpp": x} or {image name: bpp}. Default: DIR/bpp.json if present.',
    ),
    click.option(
        "--label",
        default="decoded",
        metavar="NAME",
        show_default=True,
        help="Curve name for the --decoded folders.",
    ),
)

output_options = option_group(
    # Where the results go, what they are compared with, and how the sweep runs.
    click.option(
        "--out",
        "out_dir",
        default="eval-machine",
        show_default=True,
        metavar="DIR",
        help="Output folder.",
    ),
    click.option(
        "--overlay",
        multiple=True,
        metavar="JSON|DIR|NAME",
        help="Extra curves on the plots: anchor JSON files, a folder of <detector>_*.json, "
        "or a codec name from $FUSIONCODEC_SHARED/anchors/coco128; repeatable.",
    ),
    click.option(
        "--anchor",
        default="jpeg",
        show_default=True,
        metavar="NAME|JSON",
        help="BD-rate anchor: a codec of this run, an anchor JSON, or a codec name from "
        "$FUSIONCODEC_SHARED/anchors/coco128.",
    ),
    click.option("--force", "-f", is_flag=True, help="Overwrite existing outputs in --out."),
    click.option(
        "--jobs",
        "-j",
        type=int,
        default=0,
        show_default=True,
        metavar="N",
        help="CPU threads for the detectors and the codec (0: all cores).",
    ),
    click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bars on stderr. Default: when stderr is a terminal.",
    ),
)


@click.command("machine")
@input_options
@codec_options
@decoded_options
@output_options
def machine(**options: Any) -> None:
    """Detector COCO mAP against bpp, with machine-task BD-rates.

    Each detector (onnxruntime) scores the uncompressed images, every codec's quality
    sweep and any --decoded folders; results go to --out as <detector>_<codec>.json
    (the layout of shared/anchors/coco128), results.csv, map-<detector>.png and
    bd-rate.md/.json. See docs/DETECTORS.md for plugging in another detector.
    """
    o = SimpleNamespace(**options)
    run = _check_options(o)
    run.detectors = _detectors(o.detector_specs, o.jobs)
    _annotated(run, o.limit)
    run.decoded = [_decoded_set(run, d, o.bpp_files[k] if o.bpp_files else None)
                   for k, d in enumerate(o.decoded_dirs)]  # fmt: skip
    _check_outputs(run, bool(o.decoded_dirs), o.force)
    spec = runners.ModelSpec(o.weights, o.baseline_weights, o.device)
    run.roundtrips = _roundtrips(run, spec, o.jobs)
    try:
        run.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{show(run.out)}: cannot create directory: {error_reason(exc)}") from None

    show_bar = o.progress if o.progress is not None else sys.stderr.isatty()
    sweep = M.Sweep(run.detectors, run.coco, run.sources, show_bar)
    baseline = sweep.run_point("uncompressed", None, M.originals(run.sources), len(run.sources))
    click.echo(M.report_line(baseline, run.names))
    curves = M.measure(run, sweep, click.echo)
    R.write_results(run, baseline, curves, (o.anchor, o.overlay), _write, click.echo)


def _check_options(o: SimpleNamespace) -> M.Run:
    """Every cheap check of the options, before detectors or models load."""
    images, ann, out = Path(o.images_dir), Path(o.annotations), Path(o.out_dir)
    limit, jobs, label = o.limit, o.jobs, o.label
    decoded_dirs, bpp_files = o.decoded_dirs, o.bpp_files
    if not images.is_dir():
        raise CliError(f"{show(images)}: no such directory (--images)")
    if not ann.is_file():
        raise CliError(f"{show(ann)}: no such file (--annotations)")
    if limit is not None and limit < 1:
        raise CliError(f"--limit must be at least 1, got {limit}")
    if jobs < 0:
        raise CliError(f"--jobs must be 0 (all cores) or more, got {jobs}")
    if out.exists() and not out.is_dir():
        raise CliError(f"{show(out)}: not a directory (--out)")
    if not label or "/" in label or os.sep in label or label.startswith("."):
        raise CliError(f"--label {label!r}: use a plain name (it names output files)")
    codec_list = M.check_codecs(o.codecs, bool(decoded_dirs))
    if label in codec_list or label == "uncompressed":
        raise CliError(f"--label {label!r} is also a codec name; choose another")
    fc_qualities = _parse_list(o.qualities, "--qualities", float)
    for q in fc_qualities:
        if not (math.isfinite(q) and q >= 1):
            raise CliError(f"--qualities: quality must be a finite number of at least 1, got {q}")
    cl_qualities = (
        _parse_list(o.classical_qualities, "--classical-qualities", int)
        if o.classical_qualities
        else None
    )
    if bpp_files and len(bpp_files) != len(decoded_dirs):
        raise CliError(
            f"--bpp-json given {len(bpp_files)} times for {len(decoded_dirs)} --decoded folders; "
            "give one per folder, in the same order"
        )
    for directory in decoded_dirs:
        if not Path(directory).is_dir():
            raise CliError(f"{show(directory)}: no such directory (--decoded)")
    for file in bpp_files:
        if not Path(file).is_file():
            raise CliError(f"{show(file)}: no such file (--bpp-json)")
    for spec in (o.anchor, *o.overlay):
        path = Path(spec)
        if path.is_file():
            R.read_anchor(path)
        elif path.suffix.lower() == ".json" or (os.sep in spec and not path.is_dir()):
            raise CliError(f"{show(path)}: no such file (--anchor/--overlay)")
    return M.Run(images, ann, out, codec_list, fc_qualities, cl_qualities, label)


def _detectors(specs: tuple[str, ...], jobs: int) -> list[Any]:
    """The detectors, their sessions opened (a missing model fails here)."""
    from fusioncodec.eval.detectors import resolve

    detectors = [resolve(spec, threads=jobs) for spec in specs or ("yolox", "fastestdet")]
    for detector in detectors:
        detector.session()
    names = [d.name for d in detectors]
    if len(set(names)) != len(names):
        raise CliError(f"two detectors share a name ({', '.join(names)}); name them apart")
    return detectors


def _annotated(run: M.Run, limit: int | None) -> None:
    """The annotations and the images of --images they list."""
    from fusioncodec.eval.coco_map import load_coco

    try:
        run.coco = load_coco(run.annotations)
    except OSError as exc:
        raise CliError(f"{show(run.annotations)}: cannot read: {error_reason(exc)}") from None
    run.stems = M.annotated_stems(run.coco)
    run.sources = M.sources(run.images, run.annotations, run.stems, limit)
    for name in run.codecs:
        why = None if name == "uncompressed" else runners.missing(name)
        if why:
            raise CliError(f"{name}: {why}")


def _decoded_set(
    run: M.Run, directory: str, bpp_file: str | None
) -> tuple[Path, list[M.Source], dict[int, Path], Any]:
    """A --decoded folder: the scored images it has, and their bpp if known."""
    found = M.match(M.image_files(Path(directory)), run.stems)
    chosen = [s for s in run.sources if s.image_id in found]
    if not chosen:
        raise CliError(
            f"{show(directory)}: none of its images matches one of the {len(run.sources)} "
            "images scored (matched by stem)"
        )
    if len(chosen) < len(run.sources):
        click.echo(
            f"fcodec: warning: {show(directory)} has {len(chosen)} of the "
            f"{len(run.sources)} images; scoring those",
            err=True,
        )
    path = Path(bpp_file) if bpp_file else Path(directory) / "bpp.json"
    override = M.load_bpp(path, run.stems) if path.is_file() else None
    if isinstance(override, dict):
        lacking = [s for s in chosen if s.image_id not in override]
        if lacking:
            raise CliError(
                f"{show(path)}: no bpp for {lacking[0].path.name} "
                f"({len(lacking)} of the {len(chosen)} images lack one)"
            )
    return Path(directory), chosen, found, override


def _check_outputs(run: M.Run, decoded: bool, force: bool) -> None:
    planned = ["results.csv", "bd-rate.md", "bd-rate.json"]
    curve_names = [c for c in run.codecs if c != "uncompressed"] + ([run.label] if decoded else [])
    for det in run.names:
        planned += [f"{det}_uncompressed.json", f"map-{det}.png"]
        planned += [f"{det}_{c}.json" for c in curve_names]
    if not force:
        existing = [p for p in planned if (run.out / p).exists()]
        if existing:
            raise CliError(
                f"{show(run.out / existing[0])}: already exists (use --force to overwrite)"
            )


def _roundtrips(run: M.Run, spec: runners.ModelSpec, jobs: int) -> dict[str, Any]:
    """The codecs' round trips; learned models load now, so that bad weights or qualities
    fail before any work."""
    found: dict[str, Any] = {}
    for name in run.codecs:
        if name == "uncompressed":
            continue
        description = runners.description(name)
        if name in runners.SCALABLE:
            check_qualities_early(spec.weights, "scalable", run.fc_qualities)
            model = runners.scalable_codec(spec.weights, spec.device)
            description += f", model {model.name}"
        elif name == "baseline":
            check_qualities_early(spec.baseline, "baseline", run.fc_qualities)
            model = runners.baseline_codec(spec.baseline, spec.device)
            description += f", model {model.loaded.name}"
        found[name] = (description, runners.runner(name, spec))
    if jobs and any(name in runners.LEARNED for name in found):
        import torch

        torch.set_num_threads(jobs)
    return found
