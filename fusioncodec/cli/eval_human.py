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
from typing import Any

import click

from fusioncodec.cli.common import (
    CliError,
    device_option,
    force_option,
    progress_option,
    show,
    weights_option,
)
from fusioncodec.eval import rd
from fusioncodec.files import IMAGE_SUFFIXES, list_images, shared_dir, write_atomic
from fusioncodec.messages import error_reason

DEFAULT_CODECS = ("fusioncodec", "baseline", "jpeg", "webp", "avif", "hevc")
FIXED_OUTPUTS = ("results.csv", "rd-psnr.png", "rd-msssim.png", "bd-rate.md", "bd-rate.json")


class _Notes(list):
    """Notes collected while checking the arguments, shown once every check has passed."""

    def show(self) -> None:
        for message in self:
            click.echo(f"fcodec: note: {message}", err=True)


def _parse_list(text: str, what: str) -> list[float]:
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise CliError(f"{what}: {part!r} is not a number") from None
        if not math.isfinite(value):
            raise CliError(f"{what}: qualities must be finite numbers, got {part!r}")
        if value not in values:
            values.append(value)
    if not values:
        raise CliError(f"{what}: no qualities given")
    return values


def _parse_codecs(text: str | None) -> tuple[list[str], bool]:
    """Requested codecs in order and whether they were given explicitly."""
    if text is None:
        return list(DEFAULT_CODECS) + ["vvc"], False
    names: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in rd.CODECS:
            raise CliError(f"unknown codec {name!r} (choose from {', '.join(rd.CODECS)})")
        if name not in names:
            names.append(name)
    if not names:
        raise CliError("--codecs: no codec given")
    return names, True


def _qualities(
    codecs: list[str], fc_qualities: str | None, specs: tuple[str, ...]
) -> dict[str, list[float]]:
    from fusioncodec.eval import classical

    chosen: dict[str, list[float]] = {}
    for codec in codecs:
        if codec in rd.LEARNED:
            chosen[codec] = list(rd.LEARNED_QUALITIES)
        else:
            chosen[codec] = list(classical.get(codec).qualities)
    if fc_qualities is not None:
        values = _parse_list(fc_qualities, "--fc-qualities")
        for codec in rd.LEARNED:
            chosen[codec] = values
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().lower()
        if not sep:
            raise CliError(f"--qualities {spec!r}: use CODEC=LIST, e.g. jpeg=10,50,90")
        if name not in rd.CODECS:
            raise CliError(
                f"--qualities {spec!r}: unknown codec {name!r} (choose from {', '.join(rd.CODECS)})"
            )
        chosen[name] = _parse_list(values, f"--qualities {name}")
    for codec, values in chosen.items():
        if codec in rd.LEARNED:
            bad = [q for q in values if q < 1]
            if bad:
                raise CliError(f"{codec} qualities must be at least 1, got {bad[0]:g}")
            continue
        info = classical.get(codec)
        lo, hi = info.quality_range
        for q in values:
            if q != int(q) or not lo <= q <= hi:
                raise CliError(
                    f"{codec} {info.quality_name} must be a whole number from {lo} to {hi}, "
                    f"got {q:g}"
                )
        chosen[codec] = [int(q) for q in values]
    return {codec: chosen[codec] for codec in codecs}


def _model_card(path: Path, kind: str, explicit: bool, what: str) -> dict[str, Any] | None:
    """The card of a weight file, None (skip with a note) if a default file is absent."""
    from fusioncodec.weights import WeightsError, read_card

    if not path.exists():
        if explicit:
            raise CliError(f"{what}: weights not found: {show(path)}")
        return None
    try:
        card = read_card(path)
    except WeightsError as exc:
        raise CliError(str(exc)) from None
    if card.get("kind") != kind:
        raise CliError(f"{show(path)} is a {card.get('kind')} model, not a {kind} one ({what})")
    return card


def _levels(card: dict[str, Any]) -> int:
    from fusioncodec.nets import CodecConfig

    try:
        return CodecConfig.from_dict(card["config"]).levels
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(
            f"unreadable model config in {card.get('name')}: {error_reason(exc)}"
        ) from None


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _check_images(images: list[tuple[str, Path]], scalable: bool) -> int:
    """Open every image's header (cheap); the number of images too small for MS-SSIM."""
    from PIL import Image, UnidentifiedImageError

    from fusioncodec.container import MAX_PIXELS, MAX_SIDE
    from fusioncodec.metrics import MSSSIM_MIN_SIDE

    small = 0
    for _, path in images:
        try:
            with Image.open(path) as im:
                width, height = im.size
        except UnidentifiedImageError:
            raise CliError(f"{show(path)}: not an image Pillow can read") from None
        except (OSError, ValueError) as exc:
            raise CliError(f"{show(path)}: cannot read image ({error_reason(exc)})") from None
        if min(width, height) < MSSSIM_MIN_SIDE:
            small += 1
        if scalable and not (
            1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE and width * height <= MAX_PIXELS
        ):
            raise CliError(f"{show(path)}: {width}x{height} is too large for a .fcb file")
    return small


def _curve_file(value: str, shared: Path | None) -> Path | None:
    path = Path(value)
    if path.is_file():
        return path
    if shared is not None and os.sep not in value and "/" not in value:
        base = shared / "anchors" / "kodak"
        for name in (value, f"{value}.json"):
            if (base / name).is_file():
                return base / name
    return None


def _load_external(path: Path, taken: set[str]) -> rd.Curve:
    try:
        curve = rd.load_curve(path)
    except (OSError, ValueError) as exc:
        why = error_reason(exc) if isinstance(exc, ValueError) else f"{path}: {error_reason(exc)}"
        raise CliError(why) from None
    key, n = curve.key, 2
    while key in taken:
        key, n = f"{curve.key}-{n}", n + 1
    curve.key = key
    if curve.label.lower() != key.lower():
        curve.label = f"{curve.label} [{key}]"
    taken.add(key)
    return curve


@click.command("human")
@click.option(
    "--images", required=True, metavar="DIR", help="Folder of images (png, jpg, ...; sorted)."
)
@click.option(
    "--codecs",
    metavar="LIST",
    default=None,
    help="Comma list from fusioncodec, fusioncodec-machine, baseline, jpeg, webp, avif, hevc, "
    "vvc. Default: fusioncodec,baseline,jpeg,webp,avif,hevc (+vvc when vvencapp is on PATH).",
)
@click.option(
    "--qualities",
    "quality_specs",
    multiple=True,
    metavar="CODEC=LIST",
    help="Qualities of one codec, e.g. jpeg=10,50,90 or vvc=37,32,27 (QPs). Repeatable.",
)
@click.option(
    "--fc-qualities",
    metavar="LIST",
    help="Qualities of fusioncodec, fusioncodec-machine and baseline; continuous in "
    "[1, levels], e.g. 1,2.5,4. [default: 1,2,...,8]",
)
@click.option(
    "--machine-quality",
    type=float,
    default=None,
    help="Fixed machine-layer quality of the fusioncodec files [default: = human quality]; "
    "fusioncodec-machine still sweeps its own qualities.",
)
@weights_option
@click.option(
    "--baseline-weights",
    metavar="PATH",
    help="Single-layer baseline weights. Default: the shipped baseline (skipped if absent).",
)
@click.option(
    "--anchor",
    "anchor_args",
    multiple=True,
    metavar="PATH|CODEC",
    help="BD-rate anchor: a results JSON (e.g. vtm.json, looked up in "
    "$FUSIONCODEC_SHARED/anchors/kodak too) or a codec of this run. Repeatable. Default: "
    "baseline if run, VTM for a folder named kodak, else the first codec.",
)
@click.option(
    "--overlay",
    "overlay_args",
    multiple=True,
    metavar="PATH",
    help="Extra results JSON drawn (dashed) on the plots and listed in the table. Repeatable.",
)
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Output folder.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker processes, each with one torch thread (0: one per core; 1: in-process).",
)
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Use only the first N images.")
@device_option
@force_option
@progress_option
def human(
    images: str,
    codecs: str | None,
    quality_specs: tuple[str, ...],
    fc_qualities: str | None,
    machine_quality: float | None,
    weights: str | None,
    baseline_weights: str | None,
    anchor_args: tuple[str, ...],
    overlay_args: tuple[str, ...],
    out_dir: str,
    jobs: int,
    limit: int,
    device: str,
    force: bool,
    progress: bool | None,
) -> None:
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
    from fusioncodec.eval import classical

    folder = Path(images)
    if not folder.is_dir():
        raise CliError(
            f"{show(images)}: {'not a directory' if folder.exists() else 'no such directory'}"
        )
    missing = [m for m in ("pytorch_msssim", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(f"{' and '.join(missing)} not installed; pip install 'fusioncodec[eval]'")

    # ---- codecs, their qualities, and which of them can run here
    requested, explicit = _parse_codecs(codecs)
    if machine_quality is not None and not (
        math.isfinite(machine_quality) and machine_quality >= 1
    ):
        raise CliError(
            f"--machine-quality must be a finite number of at least 1, got {machine_quality}"
        )
    qualities = _qualities(requested, fc_qualities, quality_specs)
    notes = _Notes()
    run: list[str] = []
    skipped: set[str] = set()
    for codec in requested:
        if codec in rd.LEARNED:
            run.append(codec)
            continue
        why = classical.get(codec).missing()
        if why is None:
            run.append(codec)
        else:
            skipped.add(codec)
            if explicit or codec != "vvc":
                notes.append(f"{codec} skipped: {why}")

    spec_kw: dict[str, Any] = {"device": device, "machine_quality": machine_quality}
    descriptions: dict[str, str] = {}
    if any(c in run for c in rd.SCALABLE):
        from fusioncodec.weights import default_weights

        path = Path(weights) if weights else default_weights("scalable")
        card = _model_card(path, "scalable", weights is not None, "fusioncodec")
        if card is None:
            for codec in rd.SCALABLE:
                if codec in run:
                    run.remove(codec)
                    skipped.add(codec)
                    notes.append(f"{codec} skipped: no weights at {show(path)} (pass --weights)")
        else:
            levels = _levels(card)
            checks = [(c, q) for c in rd.SCALABLE if c in run for q in qualities[c]]
            if machine_quality is not None:
                checks.append(("--machine-quality", machine_quality))
            for codec, q in checks:
                if q > levels:
                    raise CliError(f"{codec} quality must be between 1 and {levels}, got {q:g}")
            spec_kw["weights"] = str(path)
            mq = "= human quality" if machine_quality is None else f"{machine_quality:g}"
            descriptions["fusioncodec"] = (
                f"fusioncodec human layer, weights {card['name']}; rate: whole .fcb file "
                f"(header + machine + human layers); machine quality {mq}"
            )
            descriptions["fusioncodec-machine"] = (
                f"fusioncodec machine layer, weights {card['name']}; rate: the .fcb file "
                "without its human layer"
            )
    if "baseline" in run:
        from fusioncodec.weights import default_weights

        path = Path(baseline_weights) if baseline_weights else default_weights("baseline")
        card = _model_card(path, "baseline", baseline_weights is not None, "baseline")
        if card is None:
            run.remove("baseline")
            skipped.add("baseline")
            notes.append(f"baseline skipped: no weights at {show(path)} (pass --baseline-weights)")
        else:
            levels = _levels(card)
            for q in qualities["baseline"]:
                if q > levels:
                    raise CliError(f"baseline quality must be between 1 and {levels}, got {q:g}")
            spec_kw["baseline"] = str(path)
            descriptions["baseline"] = (
                f"single-layer learned codec, weights {card['name']}; rate: payload bytes"
            )
    for codec in run:
        if codec not in rd.LEARNED:
            descriptions[codec] = classical.get(codec).description
    if "avif" in run:
        descriptions["avif"] += f" (backend: {classical.avif_backend()})"
    if not run:
        raise CliError(f"no codec left to run: {'; '.join(notes)}")

    # ---- images
    image_list = list_images(folder, limit)
    if not image_list:
        raise CliError(f"{show(images)}: no images ({', '.join(IMAGE_SUFFIXES)})")
    small = _check_images(image_list, any(c in run for c in rd.SCALABLE))
    if small:
        notes.append(
            f"{small} of {len(image_list)} images are 160 px or less on the short side: "
            "no MS-SSIM for them"
        )

    # ---- anchors and overlays (read now: fail before the sweep, not after)
    shared = shared_dir() if shared_dir().is_dir() else None
    taken = set(run)
    anchor_keys: list[str] = []
    externals: dict[str, rd.Curve] = {}
    args = list(anchor_args)
    if not args:
        if "baseline" in run:
            args.append("baseline")
        if folder.resolve().name.lower() == "kodak" and _curve_file("vtm.json", shared):
            args.append("vtm.json")
        if not args:
            args.append(run[0])
    for value in args:
        name = value.strip().lower()
        if name in run:
            if name not in anchor_keys:
                anchor_keys.append(name)
            continue
        if name in skipped:
            notes.append(f"anchor {name} dropped: the codec was skipped")
            continue
        path = _curve_file(value, shared)
        if path is None:
            raise CliError(
                f"--anchor {value}: neither a codec of this run ({', '.join(run)}) "
                "nor a results JSON file"
            )
        curve = _load_external(path, taken)
        externals[curve.key] = curve
        anchor_keys.append(curve.key)
    for value in overlay_args:
        path = _curve_file(value, shared)
        if path is None:
            raise CliError(f"--overlay {value}: no such results JSON file")
        curve = _load_external(path, taken)
        externals[curve.key] = curve

    # ---- output folder (checked before the sweep)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CliError(f"{show(out)}: not a directory")
    if out.is_dir() and os.path.samefile(out, folder):
        raise CliError("--out must not be the images folder")
    names = [f"{codec}.json" for codec in run] + list(FIXED_OUTPUTS)
    if not force:
        for name in names:
            if os.path.lexists(out / name):
                raise CliError(f"{show(out / name)}: already exists (use --force to overwrite)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{show(out)}: cannot create directory: {error_reason(exc)}") from None

    # ---- the sweep
    notes.show()
    spec = rd.ModelSpec(**spec_kw)
    plan = {codec: qualities[codec] for codec in run}
    tasks = rd.make_tasks(image_list, plan)
    records = _run_sweep(tasks, spec, jobs or _cores(), progress)

    # ---- results
    keys = [key for key, _ in image_list]
    set_name = folder.resolve().name or str(folder)
    files: dict[str, bytes] = {}
    curves: list[rd.Curve] = []
    for codec in run:
        label = rd.LABELS.get(codec) or classical.get(codec).label
        if codec == "fusioncodec" and machine_quality is not None:
            label = f"{label[:-1]}, machine q {machine_quality:g})"
        own = [r for r in records if r["codec"] == codec]
        data = rd.results_json(
            codec, label, descriptions[codec], plan[codec], own, keys, str(folder)
        )
        files[f"{codec}.json"] = rd.dumps(data).encode()
        curves.append(rd.Curve.from_results(codec, data))
    order = {codec: i for i, codec in enumerate(run)}
    records.sort(key=lambda r: (order[r["codec"]], keys.index(r["image"])))
    files["results.csv"] = rd.results_csv(records).encode()

    all_curves = curves + list(externals.values())
    by_key = {c.key: c for c in all_curves}
    anchors = [by_key[k] for k in anchor_keys]
    title = f"{set_name} ({len(keys)} image{'s' if len(keys) != 1 else ''})"
    rows = rd.bd_table(all_curves, anchors)
    markdown = rd.bd_markdown(rows, all_curves, anchors, f"BD-rates: {title}")
    files["bd-rate.md"] = markdown.encode()
    report = {
        "images": str(folder),
        "n_images": len(keys),
        "anchors": anchor_keys,
        "curves": [
            {"key": c.key, "name": c.label, "source": c.source or f"{c.key}.json"}
            for c in all_curves
        ],
        "rows": rows,
    }
    files["bd-rate.json"] = rd.dumps(report).encode()

    from fusioncodec.eval.plots import rd_plot

    files["rd-psnr.png"] = rd_plot(all_curves, "psnr", title)
    files["rd-msssim.png"] = rd_plot(all_curves, "msssim", title)

    for name in names:  # everything is computed: now replace the files one by one
        try:
            write_atomic(out / name, files[name])
        except OSError as exc:
            raise CliError(f"{show(out / name)}: cannot write: {error_reason(exc)}") from None

    click.echo(_summary(curves), nl=False)
    click.echo()
    click.echo(markdown, nl=False)
    click.echo(
        f"fcodec: {len(keys)} images x {len(run)} codecs, {len(records)} coded points; "
        f"wrote {len(names)} files to {show(out)}",
        err=True,
    )


def _run_sweep(
    tasks: list[rd.Task], spec: rd.ModelSpec, jobs: int, progress: bool | None
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


def _summary(curves: list[rd.Curve]) -> str:
    lines = [f"{'codec':<22} {'points':>6}  {'bpp':>15}  {'PSNR-RGB (dB)':>15}"]
    for c in curves:
        xs, ys = c.points("psnr")
        if xs:
            lines.append(
                f"{c.key:<22} {len(xs):>6}  {min(xs):>6.3f} - {max(xs):<6.3f}  "
                f"{min(ys):>6.2f} - {max(ys):<6.2f}"
            )
        else:
            lines.append(f"{c.key:<22} {0:>6}")
    return "\n".join(lines) + "\n"
