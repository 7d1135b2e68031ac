"""The coding commands: ``encode``, ``decode``, ``info`` and ``strip``.

``info`` and ``strip`` use only :mod:`fusioncodec.container` (no torch); ``encode`` and
``decode`` load the codec on their first input.
"""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path
from typing import Any

import click

from fusioncodec.cli.common import (
    CliError,
    FileError,
    LayersType,
    check_qualities_early,
    codec_loader,
    coding_device_option,
    errors,
    finish,
    force_option,
    json_option,
    note,
    option_group,
    output_option,
    plural,
    progress_option,
    show,
    size,
    verbosity_options,
    weights_option,
)
from fusioncodec.cli.engines import chosen_engine, engine_options, planned_jobs, run_on_ray
from fusioncodec.cli.jobs import image_format, plan_outputs, run_jobs
from fusioncodec.container import LAYER_KINDS, MAX_HEADER_SIZE, peek_header
from fusioncodec.file_jobs import (
    FileFailure,
    Job,
    check_writable,
    container_stats,
    decode_job,
    encode_job,
    read_coded,
    write_output,
)
from fusioncodec.messages import printable
from fusioncodec.metrics import bpp
from fusioncodec.nets.config import DEFAULT_QUALITY
from fusioncodec.sources import default_layer, regular_file


def failed_text(failed: int) -> str:
    return f", {failed} failed" if failed else ""


def ray_task(
    kind: str,
    inputs: tuple[str, ...],
    output: str | None,
    weights: str | None,
    device: str,
    engine: Any,
    force: bool,
    options: dict[str, Any],
) -> Any:
    """The Ray workers' task for these inputs (URIs name their file systems)."""
    from fusioncodec.distributed import task_for
    from fusioncodec.errors import FusionCodecError

    try:
        return task_for(kind, inputs[0], output, weights, [], device, engine, force, options)
    except FusionCodecError as exc:
        raise CliError(str(exc)) from None


def _named_layer(source: str, layer: str) -> str:
    """The layer an output of ``source`` is named after: ``layer``, or with ``auto`` the best
    one its header lists (a header that cannot be read is reported when decoding)."""
    if layer != "auto":
        return layer
    with suppress(OSError, ValueError):
        with regular_file(source).open("rb") as f:
            return default_layer(peek_header(f.read(MAX_HEADER_SIZE)).kinds)
    return "human"


# --------------------------------------------------------------------------- commands


batch_options = option_group(
    # What codes a batch, where it runs, and what it says.
    weights_option,
    coding_device_option,
    engine_options,
    force_option,
    json_option,
    progress_option,
    verbosity_options,
)


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE...")
@output_option
@click.option(
    "--layers",
    type=LayersType(),
    metavar="machine|both",
    default="both",
    show_default=True,
    help="Layers to code: machine, or both (= machine,human).",
)
@click.option(
    "-q",
    "--quality",
    type=float,
    default=DEFAULT_QUALITY,
    show_default=True,
    help="Quality from 1 to the model's levels (8).",
)
@click.option(
    "--human-quality", type=float, default=None, help="Human-layer quality [default: --quality]."
)
@batch_options
def encode(
    inputs: tuple[str, ...],
    output: str | None,
    layers: tuple[str, ...],
    quality: float,
    human_quality: float | None,
    weights: str | None,
    device: str,
    force: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Encode images (or - for stdin) into .fcb files.

    Without -o, IMAGE's output is <stem>.fcb beside it; with -o DIR, DIR/<stem>.fcb. A
    folder stands for the pictures in it (with --engine ray, also a URI such as s3://...).
    """
    if human_quality is not None and "human" not in layers:
        raise CliError("--human-quality sets the human layer, which --layers machine leaves out")
    human_quality = quality if human_quality is None else human_quality
    checked = [quality, human_quality] if "human" in layers else [quality]
    engine = chosen_engine()
    jobs = planned_jobs(
        inputs, output, lambda src: f"{Path(src).stem}.fcb", kind="encode", layer="machine",
        engine=engine, as_json=as_json,
    )  # fmt: skip
    check_qualities_early(weights, "scalable", checked)
    options = {"layers": layers, "quality": quality, "human_quality": human_quality}
    if engine is not None:
        task = ray_task("encode", inputs, output, weights, device, engine, force, options)
        results = run_on_ray(jobs, task, engine, desc="encode", as_json=as_json, progress=progress)
    else:
        get_codec = codec_loader(weights, device)

        def work(job: Job) -> dict[str, Any]:
            return encode_job(job, get_codec, layers, quality, human_quality, force)

        results = run_jobs(jobs, work, desc="encode", as_json=as_json, progress=progress)
    _encode_summary(results, single=len(jobs) == 1, as_json=as_json)


def _encode_summary(results: list[dict[str, Any]], single: bool, as_json: bool) -> None:
    """The closing line (or JSON object) of an encode batch, and its exit status."""
    skipped = sum(bool(r.get("skipped")) for r in results)
    done = [r for r in results if r["ok"] and not r.get("skipped")]
    failed = sum(not r["ok"] for r in results)
    n_bytes = sum(r["bytes"] for r in done)
    pixels = sum(r["width"] * r["height"] for r in done)
    mean_bpp = bpp(n_bytes, pixels) if pixels else 0.0
    if as_json:
        summary = {"summary": "encode", "files": len(done), "failed": failed, "bytes": n_bytes}
        extra = {"skipped": skipped} if skipped else {}
        click.echo(json.dumps({**summary, "bpp": mean_bpp, **extra}))
    elif single and done:
        r = done[0]
        per_layer = ", ".join(f"{x['kind']} {x['bpp']:.3f} bpp" for x in r["layers"])
        note(
            f"{r['input']} -> {r['output']}: {r['width']}x{r['height']}, {size(r['bytes'])}, "
            f"{r['bpp']:.3f} bpp ({per_layer})"
        )
    else:
        line = f"encoded {plural(len(done), 'file')}"
        if done:
            line += f", {size(n_bytes)}, {mean_bpp:.2f} bpp avg"
        note(line + (f", {skipped} skipped (exist)" if skipped else "") + failed_text(failed))
    finish(failed)


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="FILE.fcb...")
@output_option
@click.option(
    "--layer",
    type=click.Choice(["auto", *LAYER_KINDS]),
    default="auto",
    show_default=True,
    help="Which reconstruction to decode; auto: the human layer when the file has one, "
    "else the machine layer.",
)
@batch_options
def decode(
    inputs: tuple[str, ...],
    output: str | None,
    layer: str,
    weights: str | None,
    device: str,
    force: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Decode .fcb files (or - for stdin) into images.

    The output extension picks the format (PNG for -, or no extension). Without -o the
    output is <stem>.<layer>.png beside the input; with -o DIR, DIR/<stem>.<layer>.png
    (with --layer auto, the layer the file's header names as its best). A folder stands
    for the .fcb files in it (with --engine ray, also a URI such as s3://...).
    """

    def name_for(source: str) -> str:
        return f"{Path(source).stem}.{_named_layer(source, layer)}.png"

    engine = chosen_engine()
    jobs = planned_jobs(
        inputs, output, name_for, kind="decode", layer=layer, engine=engine, as_json=as_json
    )
    formats = [image_format(None if job.output is None else Path(job.output)) for job in jobs]
    check_qualities_early(weights, "scalable", [])
    if engine is not None:
        task = ray_task("decode", inputs, output, weights, device, engine, force, {"layer": layer})
        results = run_on_ray(
            jobs, task, engine, formats=formats, desc="decode", as_json=as_json, progress=progress
        )
    else:
        get_codec = codec_loader(weights, device)
        format_of = dict(zip(jobs, formats, strict=True))

        def work(job: Job) -> dict[str, Any]:
            return decode_job(job, get_codec, layer, format_of[job], force)

        results = run_jobs(jobs, work, desc="decode", as_json=as_json, progress=progress)
    skipped = sum(bool(r.get("skipped")) for r in results)
    done = sum(r["ok"] and not r.get("skipped") for r in results)
    failed = sum(not r["ok"] for r in results)
    if as_json:
        extra = {"skipped": skipped} if skipped else {}
        click.echo(json.dumps({"summary": "decode", "files": done, "failed": failed, **extra}))
    elif len(jobs) == 1 and done:
        r = results[0]
        note(f"{r['input']} -> {r['output']}: {r['layer']} layer, {r['width']}x{r['height']}")
    else:
        layers = sorted({r["layer"] for r in results if "layer" in r}) or [layer]
        line = f"decoded {plural(done, 'file')} ({' and '.join(layers)} layer)"
        note(line + (f", {skipped} skipped (exist)" if skipped else "") + failed_text(failed))
    finish(failed)


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="FILE.fcb...")
@json_option(with_output=False)
def info(inputs: tuple[str, ...], as_json: bool) -> None:
    """Show the size, layers, rate and model of .fcb files.

    Reads only the files (no torch, no model): bytes and bits per pixel of each layer,
    qualities, the model's name and identity.
    """
    failed = 0
    for source in inputs:
        name = show(source)
        try:
            stats = container_stats(read_coded(Job(source, None)))
        except FileFailure as exc:
            if len(inputs) == 1 and not as_json:
                raise FileError(str(exc)) from None
            click.echo(f"fcodec: error: {exc}", err=True)
            if as_json:
                click.echo(json.dumps({"path": name, "ok": False, "error": str(exc)}))
            failed += 1
            continue
        if as_json:
            click.echo(json.dumps({"path": name, "ok": True, **stats}))
            continue
        click.echo(
            f"{name}: {stats['width']}x{stats['height']}, {stats['bytes']} bytes, "
            f"{stats['bpp']:.4f} bpp"
        )
        click.echo(f"  model    {printable(stats['model'])} (hash {stats['model_hash']})")
        click.echo(f"  m        {stats['m']}")
        click.echo(f"  header   {stats['header_bytes']} bytes")
        for layer in stats["layers"]:
            click.echo(
                f"  {layer['kind']:<8} quality {layer['quality']:g}, {layer['bytes']} bytes, "
                f"{layer['bpp']:.4f} bpp"
            )
    finish(failed)


@click.command()
@click.argument("source", metavar="FILE.fcb")
@click.option(
    "-o", "--output", required=True, metavar="PATH", help="Output file (or - for stdout)."
)
@force_option
@json_option
@verbosity_options
def strip(source: str, output: str, force: bool, as_json: bool) -> None:
    """Drop the human layer, keeping the machine layer's bytes.

    No re-encoding and no model: the file is rewritten without its human layer.
    """
    (job,) = plan_outputs([source], output, lambda src: f"{Path(src).stem}.fcb", as_json=as_json)
    with errors(job.name):
        check_writable(job, force)
        container = read_coded(job)
    size_before = container_stats(container)["bytes"]
    with errors(job.name):
        stripped = container.without_human().to_bytes()
    write_output(job, stripped, force)
    pixels = container.width * container.height
    had_human = "human" in container.kinds
    if as_json:
        result = {
            "input": job.name,
            "output": job.out_name,
            "ok": True,
            "removed_human": had_human,
            "bytes_before": size_before,
            "bytes": len(stripped),
            "bpp": bpp(len(stripped), pixels),
        }
        click.echo(json.dumps(result))
    elif had_human:
        note(
            f"{job.name} -> {job.out_name}: dropped the human layer, "
            f"{size_before} -> {len(stripped)} bytes ({bpp(len(stripped), pixels):.3f} bpp)"
        )
    else:
        note(f"fcodec: {job.name} has no human layer; written unchanged to {job.out_name}")


# --------------------------------------------------------------------------- training
