"""``fcodec bench``: speed, memory and rate benchmark (see :mod:`fusioncodec.eval.bench`).

Imported lazily by ``fcodec`` (``LAZY_COMMANDS``); torch and the codec load only when the
command runs, so ``fcodec bench --help`` stays cheap.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from fusioncodec.cli.common import CliError, option_group, weights_option
from fusioncodec.files import write_atomic
from fusioncodec.nets.config import DEFAULT_QUALITY


def _optional_path(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """A path option; empty or absent: None (the default)."""
    return Path(value) if value else None


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    from fusioncodec.eval.bench import BenchError, parse_size

    try:
        return parse_size(value)
    except BenchError as exc:
        raise CliError(str(exc)) from None


picture_options = option_group(
    click.option(
        "--image",
        callback=_optional_path,
        metavar="PATH",
        help="Image to code. Default: $FUSIONCODEC_SHARED/data/kodak/kodim01.png "
        "(shared: ../shared beside the repository).",
    ),
    click.option(
        "--size",
        metavar="WxH",
        callback=_size,
        help="Use a synthetic test image of this size instead (gradients, noise, edges; seeded).",
    ),
    click.option(
        "--seed", type=int, default=0, show_default=True, help="Seed of the --size image."
    ),
    weights_option,
    click.option(
        "-q", "--quality", default=DEFAULT_QUALITY, show_default=True, help="Quality (1-8)."
    ),
)

timing_options = option_group(
    click.option(
        "--device",
        type=click.Choice(["cpu", "cuda", "all"]),
        default="all",
        show_default=True,
        help="all: cpu, and cuda when torch sees one.",
    ),
    click.option(
        "--repeat",
        type=click.IntRange(min=1),
        default=5,
        show_default=True,
        help="Warm runs per measurement (median; one untimed warm-up first).",
    ),
    click.option(
        "--threads",
        type=click.IntRange(min=0),
        default=0,
        help="torch CPU threads, also OMP_NUM_THREADS of the cold runs (0: torch's default).",
    ),
    click.option(
        "--cold/--no-cold",
        default=True,
        show_default=True,
        help="Also time fresh `fcodec encode/decode/info/--help` processes (start-up included).",
    ),
    click.option(
        "--cold-repeat",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Cold runs per measurement (median); --help and info use at least 3.",
    ),
)

compressai_options = option_group(
    click.option(
        "--compressai/--no-compressai",
        default=True,
        show_default=True,
        help="Compare with CompressAI's mbt2018-mean (N=192, M=320) on the same image and device.",
    ),
    click.option(
        "--compressai-weights",
        callback=_optional_path,
        metavar="PATH",
        help="mbt2018-mean state dict (.pth/.pth.tar/.safetensors). Default: random init "
        "(fair transform speed, not entropy-coding speed or size).",
    ),
)

training_speed_options = option_group(
    click.option(
        "--train",
        is_flag=True,
        help="Also measure training speed per stage (crops/s, wall clock) in each "
        "--train-precision.",
    ),
    click.option(
        "--train-steps",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        help="Timed training steps per stage (median; one warm-up step first).",
    ),
    click.option(
        "--train-batch",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="Batch size.",
    ),
    click.option(
        "--train-crop",
        type=click.IntRange(min=64),
        default=256,
        show_default=True,
        help="Side of the square training crops.",
    ),
    click.option(
        "--train-precision",
        "train_precisions",
        default="fp32,bf16",
        show_default=True,
        callback=lambda ctx, param, value: _precisions(value),
        help="Precisions to time training in, comma-separated (fp32, bf16); both: bf16's speed-up.",
    ),
)


@click.command("bench")
@picture_options
@timing_options
@compressai_options
@training_speed_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, not a table.")
@click.option(
    "--out",
    callback=_optional_path,
    metavar="FILE",
    help="Also write the report as JSON to FILE.",
)
def bench(as_json: bool, out: Path | None, **options: Any) -> None:
    """Encode/decode speed (warm and cold), peak memory and rate accuracy.

    Per device: seconds and MP/s of encode (machine layer, both layers) and decode (machine,
    human), peak RSS and CUDA memory per phase, coded bits against the entropy models'
    estimate, and the ratio to CompressAI's mbt2018-mean on the same image and device.
    """
    from fusioncodec.eval.bench import BenchError, BenchOptions, format_report, run_bench, to_json

    if out is not None:
        if out.is_dir():
            raise CliError(f"--out {out}: is a directory")
        if not out.parent.is_dir():
            raise CliError(f"--out {out}: no such directory {out.parent}")
    weights = options.pop("weights")
    opts = BenchOptions(weights=Path(weights) if weights else None, **options)
    progress = sys.stderr.isatty()

    def log(message: str) -> None:
        if progress:
            click.echo(f"bench: {message}", err=True)

    try:
        report = run_bench(opts, log)
    except BenchError as exc:
        raise CliError(str(exc)) from None
    text = to_json(report)
    click.echo(text if as_json else format_report(report))
    if out is not None:
        try:
            write_atomic(out, text + "\n")
        except OSError as exc:
            raise CliError(f"--out {out}: {exc.strerror or exc}") from None


def _precisions(text: str) -> tuple[str, ...]:
    """``--train-precision``: some of fp32, bf16, comma-separated."""
    from fusioncodec.train.recipe import PRECISIONS

    chosen = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not chosen or set(chosen) - set(PRECISIONS):
        raise CliError(f"--train-precision takes some of {','.join(PRECISIONS)}, got {text!r}")
    return chosen
