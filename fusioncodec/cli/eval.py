"""``fcodec eval``: the evaluation group; each sub-command lives in its own module."""

from __future__ import annotations

import click

from fusioncodec.cli.common import LazyGroup

SUBCOMMANDS = {
    "human": ("fusioncodec.cli.eval_human", "human", "RD sweep on images: bpp, PSNR, MS-SSIM."),
    "machine": ("fusioncodec.cli.eval_machine", "machine", "Detector mAP against bpp (COCO)."),
}


@click.group("eval", cls=LazyGroup, lazy=SUBCOMMANDS)
def eval_group() -> None:
    """Evaluate fusioncodec and classical codecs: RD curves, BD-rates, detector mAP."""
