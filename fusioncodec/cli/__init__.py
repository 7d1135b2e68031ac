"""The ``fcodec`` command line: encode images to ``.fcb`` files, decode, inspect and strip
them; train, evaluate and benchmark the codec.

Start-up is cheap: torch, the codec, Pillow and tqdm are imported inside the commands that
need them, so ``--help`` and ``--version`` are instant and ``info`` and ``strip`` (which use
only :mod:`fusioncodec.container`) never import torch. The commands of :data:`LAZY_COMMANDS`
(``masks``, ``eval``, ``bench``) are not even imported until they run.

The floor: :mod:`.common` (errors, options, loaders), :mod:`.jobs` (inputs, outputs,
batches), then one module per command family: :mod:`.coding`, :mod:`.train`,
:mod:`.masks`, :mod:`.eval` (with :mod:`.eval_human`, :mod:`.eval_machine`), :mod:`.bench`.

Adding a command: write it with ``@click.command()`` in the module of its family (or a new
one), reuse the option decorators and helpers of :mod:`.common` and :mod:`.jobs`, import heavy
modules inside the function body, and add it below (or to :data:`LAZY_COMMANDS`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from fusioncodec import __version__
from fusioncodec.cli.coding import decode, encode, info, strip
from fusioncodec.cli.common import CliError, FileError, LazyGroup
from fusioncodec.cli.export import export_command, export_graphs_command
from fusioncodec.cli.train import train
from fusioncodec.messages import error_reason, one_line

__all__ = ["CliError", "FileError", "cli", "main"]


LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, attribute, one-line help) -- imported only when the command runs
    "masks": ("fusioncodec.cli.masks", "masks", "Make edge-mask training targets."),
    "eval": ("fusioncodec.cli.eval", "eval_group", "Rate-distortion and detector evaluation."),
    "bench": ("fusioncodec.cli.bench", "bench", "Speed, memory and rate benchmark."),
}


class FcodecGroup(LazyGroup):
    """The ``fcodec`` group: the commands of :data:`LAZY_COMMANDS` are imported only when
    they run (start-up stays instant), stray ``ValueError``/``OSError`` are one-line errors.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """click's main, with one-line usage errors (exit 2) and exit 130 on Ctrl-C, however
        the interrupt surfaces (a library may turn it into an error of its own)."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        with _interrupts_noted() as interrupted:
            try:
                return self._main(interrupted, *args, **kwargs)
            except Exception:
                if not interrupted():
                    raise
                _exit_interrupted()

    def _main(self, interrupted: Callable[[], bool], *args: Any, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
            if isinstance(exc, no_args) and exc.ctx is not None:
                click.echo(exc.ctx.get_help())  # a bare command shows its help
                sys.exit(exc.exit_code)
            where = exc.ctx.command_path if exc.ctx else "fcodec"
            message = one_line(exc.format_message())
            click.echo(f"fcodec: error: {message} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            if not interrupted():  # else what the interrupt broke: reported as the interrupt
                exc.show()
                sys.exit(exc.exit_code)
            _exit_interrupted()
        except click.Abort:  # Ctrl-C (outputs are written atomically: nothing half-written)
            _exit_interrupted()
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)  # ctx.exit(N) returns N here

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # click's main() handles EPIPE quietly
        except (ValueError, OSError) as exc:
            raise CliError(error_reason(exc)) from None
        except ModuleNotFoundError as exc:  # a command of an extra the install lacks
            package = (exc.name or "").partition(".")[0]
            if package not in EXTRA_OF:
                raise
            command = ctx.invoked_subcommand or "this command"
            raise CliError(
                f"'fcodec {command}' needs {package}, which is not installed: "
                f"pip install 'fusioncodec[{EXTRA_OF[package]}]'"
            ) from None


# The packages of the extras, and the extra that installs each (pyproject.toml).
EXTRA_OF = {
    "torch": "torch",
    "compressai": "torch",
    "onnx": "train",
    "scipy": "train",
    "pycocotools": "train",
    "segment_anything": "sam",
    "pytorch_msssim": "eval",
    "matplotlib": "eval",
    "pillow_heif": "eval",
}


def _exit_interrupted() -> None:
    click.echo("fcodec: interrupted", err=True)
    sys.exit(130)


@contextmanager
def _interrupts_noted() -> Iterator[Callable[[], bool]]:
    """Ctrl-C raises KeyboardInterrupt as usual and is also noted, so that it still exits 130
    when torch or safetensors turn it into an error of their own; yields ``interrupted()``."""
    noted: list[int] = []

    def on_interrupt(signum: int, _frame: object) -> None:
        noted.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield lambda: False
        return
    try:
        yield lambda: bool(noted)
    finally:
        signal.signal(signal.SIGINT, previous)


@click.group(
    cls=FcodecGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, "-V", "--version", prog_name="fcodec")
def cli() -> None:
    """Scalable learned image codec: one .fcb file, a layer for machines and one for people.

    Use - for stdin/stdout, e.g.  cat a.png | fcodec encode - -o - | fcodec decode - -o - > b.png
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; exit status 0 ok, 1 error, 2 usage error."""
    try:
        cli.main(args=argv, prog_name="fcodec", standalone_mode=True)
    except Exception as exc:  # last resort: a bug, still no traceback unless asked for
        if os.environ.get("FCODEC_DEBUG"):
            raise
        click.echo(
            f"fcodec: error: internal error ({type(exc).__name__}: {error_reason(exc)}); "
            "set FCODEC_DEBUG=1 for a traceback",
            err=True,
        )
        sys.exit(1)


for _command in (encode, decode, info, strip, train, export_command, export_graphs_command):
    cli.add_command(_command)
