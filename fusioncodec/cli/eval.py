"""``fcodec eval``: the evaluation group; each sub-command lives in its own module."""

from __future__ import annotations

import importlib

import click

SUBCOMMANDS = {
    "human": ("fusioncodec.cli.eval_human", "human", "RD sweep on images: bpp, PSNR, MS-SSIM."),
    "machine": ("fusioncodec.cli.eval_machine", "machine", "Detector mAP against bpp (COCO)."),
}


class _LazyEval(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module, attr, _ = SUBCOMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, _, short) in SUBCOMMANDS.items()])


@click.group("eval", cls=_LazyEval)
def eval_group() -> None:
    """Evaluate fusioncodec and classical codecs: RD curves, BD-rates, detector mAP."""
