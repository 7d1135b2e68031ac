"""The ``export`` command: a training checkpoint as shipped weights. torch and the training
modules load inside the command."""

from __future__ import annotations

from pathlib import Path

import click

from fusioncodec.cli.common import CliError, force_option, show
from fusioncodec.messages import error_reason


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(["scalable", "baseline"]), required=True)
@click.option("--name", required=True, help="Model name; writes NAME.safetensors and NAME.json.")
@click.option("--out", "out_dir", default=None, metavar="DIR", help="Default: the models folder.")
@click.option("--results", multiple=True, metavar="JSON", help="Measured results for the card.")
@click.option("--notes", default="", help="Free text for the model card.")
@click.option(
    "--also-reads",
    multiple=True,
    metavar="WEIGHTS",
    help="Decoder or human stage: earlier weights whose files (or machine layer) the export "
    "also decodes (beside --init's and those it reads), each checked to code the same "
    "(repeatable).",
)
@force_option
def export_command(
    checkpoint: str,
    kind: str,
    name: str,
    out_dir: str | None,
    results: tuple[str, ...],
    notes: str,
    also_reads: tuple[str, ...],
    force: bool,
) -> None:
    """Export a training checkpoint as shipped weights.

    Writes NAME.safetensors (fp16 weights, integer entropy networks, CDF tables) and its
    model card NAME.json.

    Given a .safetensors weight file instead, re-export it in the current format (its card
    kept, renamed): this converts weights made before the integer entropy networks.
    """
    from fusioncodec.train.export import convert_weights, export_checkpoint, load_results
    from fusioncodec.weight_file import models_dir

    folder = Path(out_dir) if out_dir else models_dir()
    target = folder / f"{name}.safetensors"
    if target.exists() and not force:
        raise CliError(f"{show(target)} exists (use --force to replace it)")
    if not Path(checkpoint).is_file():
        raise CliError(f"checkpoint not found: {show(checkpoint)}")
    try:
        if checkpoint.endswith(".safetensors"):
            if Path(checkpoint).resolve() == target.resolve():
                raise CliError("the converted weights need another name than the source")
            path, identity = convert_weights(Path(checkpoint), kind, name, folder, notes)
        else:
            path, identity, unread = export_checkpoint(
                Path(checkpoint),
                kind,
                name,
                folder,
                load_results([Path(r) for r in results]),
                notes,
                tuple(Path(w) for w in also_reads),
            )
            for reason in unread:
                click.echo(f"note: does not decode the files of {reason}", err=True)
    except (KeyError, RuntimeError, ValueError, OSError) as exc:
        raise CliError(f"cannot export {show(checkpoint)}: {error_reason(exc)}") from None
    click.echo(f"wrote {path} (identity {identity.hex()})", err=True)
    _report(path)


def _report(path: Path) -> None:
    """Whose files the exported weights also decode, and whether their graphs were written."""
    from fusioncodec.runtime.graphs import graphs_folder
    from fusioncodec.weight_file import read_card

    card = read_card(path)
    if reads := card.get("reads"):
        click.echo(f"it also decodes the files of {', '.join(reads)} (same coding)", err=True)
    if reads := card.get("machine_reads"):
        what = "the machine layer of the files"
        click.echo(f"it also decodes {what} of {', '.join(reads)} (same machine coding)", err=True)
    if not graphs_folder(path).is_dir():
        click.echo(
            "note: no ONNX graphs written (the onnx package is missing); the onnx runtime "
            f"needs them: pip install onnx, then fcodec export-graphs {show(path)}",
            err=True,
        )


@click.command("export-graphs")
@click.argument("weights", type=click.Path(dir_okay=False))
@force_option
def export_graphs_command(weights: str, force: bool) -> None:
    """Write a weight file's ONNX graphs (for --backend onnx).

    Writes WEIGHTS.graphs/ beside the weights: the onnx runtime needs it. 'fcodec export'
    writes it already; this is for weight files made before 0.6. Needs torch and onnx
    (pip install 'fusioncodec[train]')."""
    from fusioncodec.errors import FusionCodecError
    from fusioncodec.runtime.graphs import graphs_folder
    from fusioncodec.weights import write_graphs

    path = Path(weights)
    if not path.is_file():
        raise CliError(f"weights not found: {show(weights)}")
    folder = graphs_folder(path)
    if folder.exists() and not force:
        raise CliError(f"{show(folder)} exists (use --force to replace it)")
    try:
        written = write_graphs(path)
    except ImportError as exc:
        raise CliError(f"exporting graphs needs torch and onnx ({exc.name} is missing)") from None
    except (FusionCodecError, ValueError, RuntimeError, OSError) as exc:
        raise CliError(f"cannot export graphs of {show(weights)}: {error_reason(exc)}") from None
    click.echo(f"wrote {len(written)} files in {show(folder)}", err=True)
