"""The ``train`` command: one stage of the codec, resumable. torch and the training modules
load inside the command."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any

import click

from fusioncodec.cli.common import CliError, device_option
from fusioncodec.cli.train_options import (
    MIN_GOOD_CROP,
    data_options,
    model_options,
    recipe_options,
    run_options,
    train_config,
    validation_options,
)
from fusioncodec.messages import error_reason
from fusioncodec.train import recipe

_MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


@click.command()
@click.argument("stage", type=click.Choice(recipe.STAGES))
@click.option(
    "--out", "out_dir", required=True, metavar="DIR", help="Run folder (checkpoint, log)."
)
@data_options
@run_options
@recipe_options
@model_options
@validation_options
@device_option
def train(stage: str, **options: Any) -> None:
    """Train one STAGE of the codec, or resume a run.

    A run folder (--out) that holds a checkpoint is resumed from it.

    machine: SA-ICM loss (MSE on edge pixels); human: machine frozen, additional codec and
    human decoder; joint: both at once (machine latent detached); baseline: single-layer LIC;
    decoder: from --init weights, encoders and entropy models frozen (the bitstream does not
    change), the --decoders trained on the rounded latents the decoder reads.
    With --init, the weights' lambda ranges are kept unless --machine-lambdas or
    --human-lambdas give new ones, which start from the trained gains moved to the new
    lambdas. A resumed run keeps its checkpoint's architecture and lambdas.

    The recipe: training pictures shrunk by a random factor (--scale) so that source JPEG
    artifacts fade; every quality level drawn equally often, each crop's loss weighted so
    that low qualities get their share (--balance); the lr decays along a cosine to 1e-6
    (--schedule); a moving average of the weights (--ema) is validated and exported. Crops
    are cut on the training device. docs/TRAINING.md gives the recipe's measured effect and
    the procedure for a lent GPU (scripts/gpu/gpu_train.sh).
    """
    if os.environ.get("GLIBC_TUNABLES") is None and sys.platform.startswith("linux"):
        # Large malloc thresholds stop page-fault storms in CPU training (35-60% faster here).
        os.environ["GLIBC_TUNABLES"] = _MALLOC_TUNABLES
        os.execv(sys.executable, [sys.executable, "-m", "fusioncodec.cli", *sys.argv[1:]])
    from fusioncodec.train.loop import TrainingDiverged
    from fusioncodec.train.loop import train as run

    try:
        config = train_config(stage, SimpleNamespace(**options))
        if config.crop < MIN_GOOD_CROP:
            click.echo(
                f"warning: --crop {config.crop} gives the hyper-latent a "
                f"{config.crop // 64}x{config.crop // 64} grid, (nearly) all border positions; "
                "models trained so lose rate on full-size images at high quality "
                f"(use {MIN_GOOD_CROP} or more)",
                err=True,
            )
        checkpoint = run(config)
    except TrainingDiverged as exc:
        raise CliError(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise CliError(error_reason(exc)) from None
    click.echo(f"checkpoint: {checkpoint}", err=True)
