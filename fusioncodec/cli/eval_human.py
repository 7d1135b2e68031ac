"""``fcodec eval human``: rate-distortion sweep of fusioncodec and classical codecs on images.

Every image is coded for real at every quality of every codec; bpp comes from the coded
bytes, quality is PSNR-RGB and MS-SSIM against the original.  Outputs (``--out DIR``):

* ``<codec>.json`` per codec, in CompressAI's results layout (``name``, ``description``,
  ``results`` with ``quality``, ``bpp``, ``psnr-rgb``, ``ms-ssim-rgb``, times) plus
  ``per_image`` values, so the curves overlay ``shared/anchors/kodak/*.json``;
* ``results.csv``: one row per image x codec x quality;
* ``rd-psnr.png`` and ``rd-msssim.png``: RD plots of this run, anchors and overlays;
* ``bd-rate.md`` and ``bd-rate.json``: every curve against every anchor.

Each file is written to a temporary name and renamed, and only after the whole sweep
succeeded, so a failed run leaves no half-written result.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from fusioncodec.cli.common import (
    CliError,
    device_option,
    force_option,
    option_group,
    progress_option,
    show,
    weights_option,
)
from fusioncodec.eval import human as human_eval
from fusioncodec.eval import rd, runners
from fusioncodec.files import IMAGE_SUFFIXES, list_images, write_atomic
from fusioncodec.messages import error_reason


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


codec_options = option_group(
    # What is coded: the codecs, their qualities and weights.
    click.option(
        "--codecs",
        metavar="LIST",
        default=None,
        help="Comma list from fusioncodec, fusioncodec-machine, baseline, jpeg, webp, avif, hevc, "
        "vvc. Default: fusioncodec,baseline,jpeg,webp,avif,hevc (+vvc when vvencapp is on PATH).",
    ),
    click.option(
        "--qualities",
        "quality_specs",
        multiple=True,
        metavar="CODEC=LIST",
        help="Qualities of one codec, e.g. jpeg=10,50,90 or vvc=37,32,27 (QPs). Repeatable.",
    ),
    click.option(
        "--fc-qualities",
        metavar="LIST",
        help="Qualities of fusioncodec, fusioncodec-machine and baseline; continuous in "
        "[1, levels], e.g. 1,2.5,4. [default: 1,2,...,8]",
    ),
    click.option(
        "--machine-quality",
        type=float,
        default=None,
        help="Fixed machine-layer quality of the fusioncodec files [default: = human quality]; "
        "fusioncodec-machine still sweeps its own qualities.",
    ),
    weights_option,
    click.option(
        "--baseline-weights",
        metavar="PATH",
        help="Single-layer baseline weights. Default: the shipped baseline (skipped if absent).",
    ),
)

report_options = option_group(
    # What the sweep is compared with, and where it is written.
    click.option(
        "--anchor",
        "anchor_args",
        multiple=True,
        metavar="PATH|CODEC",
        help="BD-rate anchor: a results JSON (e.g. vtm.json, looked up in "
        "$FUSIONCODEC_SHARED/anchors/kodak too) or a codec of this run. Repeatable. Default: "
        "baseline if run, VTM for a folder named kodak, else the first codec.",
    ),
    click.option(
        "--overlay",
        "overlay_args",
        multiple=True,
        metavar="PATH",
        help="Extra results JSON drawn (dashed) on the plots and listed in the table. Repeatable.",
    ),
    click.option("--out", "out_dir", required=True, metavar="DIR", help="Output folder."),
)

running_options = option_group(
    # How the sweep runs.
    click.option(
        "--jobs",
        "-j",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Worker processes, each with one torch thread (0: one per core; 1: in-process).",
    ),
    click.option(
        "--limit", type=click.IntRange(min=0), default=0, help="Use only the first N images."
    ),
    device_option,
    force_option,
    progress_option,
)


@click.command("human")
@click.option(
    "--images", required=True, metavar="DIR", help="Folder of images (png, jpg, ...; sorted)."
)
@codec_options
@report_options
@running_options
def human(images: str, **options: Any) -> None:
    """RD sweep on a folder of images: bpp, PSNR-RGB and MS-SSIM per image and quality.

    Codes every image for real with fusioncodec (human layer; the machine layer and the
    single-layer baseline for reference) and classical codecs (JPEG, WebP, AVIF, HEVC, VVC),
    then writes per-codec JSON (CompressAI layout), results.csv, rd-psnr.png, rd-msssim.png
    and a BD-rate table (bd-rate.md, bd-rate.json) to --out.  A codec whose library or
    weights are missing is skipped with a note.

    \b
    Rates (bpp = 8 x bytes / pixels):
      fusioncodec          the whole .fcb file (header + both layers);
                           the machine layer's share is recorded too
      fusioncodec-machine  the .fcb file without its human layer
      baseline             the single-layer payload
      jpeg ... vvc         the coded file
    MS-SSIM needs > 160 px on the short side (smaller images get none).
    """
    o = SimpleNamespace(**options)
    folder = _check_arguments(images, o.machine_quality)
    plan, image_list = _plan(folder, o)
    anchor_keys, externals = plan.anchors(folder, o.anchor_args, o.overlay_args)
    out = Path(o.out_dir)
    names = [f"{codec}.json" for codec in plan.run] + list(human_eval.FIXED_OUTPUTS)
    _prepare_out(out, folder, names, o.force)

    for message in plan.notes:
        click.echo(f"fcodec: note: {message}", err=True)
    qualities = {codec: plan.qualities[codec] for codec in plan.run}
    tasks = rd.make_tasks(image_list, qualities)
    records = _run_sweep(tasks, plan.spec, o.jobs or _cores(), o.progress)

    keys = [key for key, _ in image_list]
    files, curve_list, markdown = human_eval.results(
        folder, keys, plan, records, anchor_keys, externals
    )
    _write_all(out, names, files)
    click.echo(human_eval.summary(curve_list), nl=False)
    click.echo()
    click.echo(markdown, nl=False)
    click.echo(
        f"fcodec: {len(keys)} images x {len(plan.run)} codecs, {len(records)} coded points; "
        f"wrote {len(names)} files to {show(out)}",
        err=True,
    )


def _plan(folder: Path, o: SimpleNamespace) -> tuple[human_eval.Plan, list[tuple[str, Path]]]:
    """What the sweep codes: the plan of codecs and qualities, and the images."""
    requested, explicit = human_eval.parse_codecs(o.codecs)
    plan = human_eval.Plan(runners.ModelSpec(device=o.device, machine_quality=o.machine_quality))
    plan.choose(
        requested, explicit, human_eval.qualities(requested, o.fc_qualities, o.quality_specs)
    )
    plan.learned(o.weights, o.baseline_weights)
    image_list = list_images(folder, o.limit)
    if not image_list:
        raise CliError(f"{show(folder)}: no images ({', '.join(IMAGE_SUFFIXES)})")
    small = human_eval.check_images(image_list, any(c in plan.run for c in runners.SCALABLE))
    if small:
        plan.notes.append(
            f"{small} of {len(image_list)} images are 160 px or less on the short side: "
            "no MS-SSIM for them"
        )
    return plan, image_list


def _check_arguments(images: str, machine_quality: float | None) -> Path:
    """The images folder, once the cheap checks passed."""
    folder = Path(images)
    if not folder.is_dir():
        raise CliError(
            f"{show(images)}: {'not a directory' if folder.exists() else 'no such directory'}"
        )
    missing = [m for m in ("pytorch_msssim", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(f"{' and '.join(missing)} not installed; pip install 'fusioncodec[eval]'")
    if machine_quality is not None and not (
        math.isfinite(machine_quality) and machine_quality >= 1
    ):
        raise CliError(
            f"--machine-quality must be a finite number of at least 1, got {machine_quality}"
        )
    return folder


def _write_all(out: Path, names: list[str], files: dict[str, bytes]) -> None:
    """Everything is computed: now replace the files one by one."""
    for name in names:
        try:
            write_atomic(out / name, files[name])
        except OSError as exc:
            raise CliError(f"{show(out / name)}: cannot write: {error_reason(exc)}") from None


def _prepare_out(out: Path, folder: Path, names: list[str], force: bool) -> None:
    """Check the output folder before the sweep and create it."""
    if out.exists() and not out.is_dir():
        raise CliError(f"{show(out)}: not a directory")
    if out.is_dir() and os.path.samefile(out, folder):
        raise CliError("--out must not be the images folder")
    if not force:
        for name in names:
            if os.path.lexists(out / name):
                raise CliError(f"{show(out / name)}: already exists (use --force to overwrite)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{show(out)}: cannot create directory: {error_reason(exc)}") from None


def _run_sweep(
    tasks: list[rd.Task], spec: runners.ModelSpec, jobs: int, progress: bool | None
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    total = sum(task.points for task in tasks)
    show_bar = progress if progress is not None else sys.stderr.isatty()
    with tqdm(
        total=total,
        file=sys.stderr,
        disable=not show_bar,
        unit="pt",
        desc="eval human",
        leave=False,
    ) as bar:
        try:
            return rd.sweep(tasks, spec, jobs, lambda task: bar.update(task.points))
        except rd.SweepError as exc:
            raise CliError(str(exc)) from None
        except (OSError, RuntimeError) as exc:  # e.g. a worker process killed (BrokenProcessPool)
            raise CliError(f"the sweep failed: {error_reason(exc)}") from None
