"""What every ``fcodec`` command shares: the error contract, the option decorators, report
lines and the model loaders.

Error contract: every expected failure is ONE line ``fcodec: error: ...`` on stderr and a
non-zero exit (1; click usage errors exit 2), never a traceback. Raise :class:`CliError` for
fatal problems and :class:`FileError` for problems with one input of a batch; wrap work on
one input in :func:`errors`. Paths in messages go through :func:`show`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from fusioncodec import BACKENDS
from fusioncodec.container import LAYER_KINDS
from fusioncodec.file_jobs import EXPECTED, FileFailure, show
from fusioncodec.messages import error_reason, one_line

if TYPE_CHECKING:
    from fusioncodec.scalable import TwoLayerCodec as Codec

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound="Codec")


# --------------------------------------------------------------------------- errors


class CliError(click.ClickException):
    """A fatal, expected failure: printed as one ``fcodec: error: ...`` line, exit code 1."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"fcodec: error: {self.format_message()}", file=file, err=True)


class FileError(CliError):
    """A failure confined to one input: a batch reports it and goes on with the others."""


@contextmanager
def errors(name: str) -> Iterator[None]:
    """Turn the expected exceptions of work on ``name`` into a :class:`FileError`."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
        raise
    except FileFailure as exc:
        raise FileError(str(exc)) from None
    except EXPECTED as exc:
        raise FileError(f"{name}: {error_reason(exc)}") from None


# --------------------------------------------------------------------------- groups


class LazyGroup(click.Group):
    """A group whose commands in ``lazy`` (name: (module, attribute, one-line help)) are
    imported only when they run or show their own help; one whose module cannot be imported
    runs as a one-line error saying so."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            import importlib

            module, attr, short = self.lazy[cmd_name]
            try:
                return getattr(importlib.import_module(module), attr)
            except ImportError as exc:
                where = " ".join(["fcodec", *ctx.command_path.split()[1:], cmd_name])
                reason = f"{where} is not available here"
                reason += f" ({error_reason(exc)})"

                def unavailable() -> None:
                    raise CliError(reason)

                return click.Command(cmd_name, callback=unavailable, help=f"{short} (unavailable)")
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, cmd.get_short_help_str(60)) for name, cmd in self.commands.items()]
        rows += [(name, short) for name, (_, _, short) in self.lazy.items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


# --------------------------------------------------------------------------- options


def weights_option(f: F) -> F:
    return click.option(
        "--weights",
        metavar="PATH",
        envvar="FUSIONCODEC_WEIGHTS",
        show_envvar=True,
        help="Model weights (.safetensors). Default: the shipped model.",
    )(f)


_GPU_DRIVERS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def _no_gpu_driver() -> bool:
    """Whether this Linux machine shows no GPU driver (NVIDIA, ROCm, WSL); elsewhere False:
    torch decides once it is loaded."""
    return sys.platform.startswith("linux") and not any(map(os.path.exists, _GPU_DRIVERS))


def _checked_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value == "cuda" and _no_gpu_driver():  # before torch and the model load
        raise CliError("device 'cuda' asked for, but this machine has no CUDA device (no driver)")
    return value


BACKEND = "fusioncodec.backend"  # where --backend keeps its value for codec_loader


def _keep_backend(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.meta[BACKEND] = value
    return value


def _device_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        callback=_checked_device,
        help=help_text,
    )


def coding_device_option(f: F) -> F:
    """``--device`` and ``--backend`` (the latter read by :func:`codec_loader`): where
    ``encode`` and ``decode`` run."""
    f = click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default="auto",
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=_keep_backend,
        help="The runtime that codes: onnx (onnxruntime, CPU) or torch (CPU or CUDA); auto: "
        "torch for --device cuda or weights without ONNX graphs, else onnx.",
    )(f)
    where = "auto: the CPU with the onnx runtime, else cuda if torch sees it"
    return _device_option(f"Where to run the model ({where}).")(f)


device_option = _device_option("Where to run the model (auto: cuda if available).")


def option_group(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Click options that belong together as one decorator (they show in --help in the order
    given), so that a command lists its concerns, not a page of options."""

    def apply(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def force_option(f: F) -> F:
    return click.option(
        "--force", "-f", is_flag=True, help="Overwrite existing outputs (never an input)."
    )(f)


def verbosity_options(f: F) -> F:
    """``--quiet`` (errors only) and ``-v/--verbose`` (each file's result and time)."""

    def level(value: int) -> Callable[[click.Context, click.Parameter, bool], None]:
        def remember(ctx: click.Context, param: click.Parameter, given: bool) -> None:
            if given:
                ctx.meta["fcodec.verbosity"] = value

        return remember

    for names, value, text in (
        (("-v", "--verbose"), 2, "Also print each file's result and time."),
        (("--quiet",), 0, "Print errors only (no summary, no progress bar)."),
    ):
        f = click.option(
            *names, is_flag=True, expose_value=False, callback=level(value), help=text
        )(f)
    return f


def verbosity() -> int:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("fcodec.verbosity", 1) if ctx is not None else 1


def note(message: str) -> None:
    """A report line on stderr, unless --quiet."""
    if verbosity() >= 1:
        click.echo(message, err=True)


def json_option(f: F = None, *, with_output: bool = True) -> Any:  # type: ignore[assignment]
    """``--json``; commands that write data to ``-o -`` refuse the two together."""
    note = " (refused with -o -)" if with_output else ""

    def add(g: F) -> F:
        return click.option(
            "--json", "as_json", is_flag=True, help=f"Print results as JSON lines on stdout{note}."
        )(g)

    return add(f) if f is not None else add


def progress_option(f: F) -> F:
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bar on stderr for several inputs. Default: when stderr is a terminal.",
    )(f)


def output_option(f: F) -> F:
    return click.option(
        "-o",
        "--output",
        metavar="PATH",
        help="Output file, - for stdout, or a directory (DIR/ or an existing one). Default: "
        "beside each input.",
    )(f)


class LayersType(click.ParamType):
    """``machine``, ``both`` or a comma list such as ``machine,human``."""

    name = "machine|both"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        kinds = {part.strip().lower() for part in str(value).split(",") if part.strip()}
        if "both" in kinds:
            kinds = (kinds - {"both"}) | set(LAYER_KINDS)
        if not kinds or not kinds <= set(LAYER_KINDS):
            self.fail(f"{value!r}: use machine, both or machine,human", param, ctx)
        if "machine" not in kinds:
            self.fail("the human layer needs the machine layer (use both)", param, ctx)
        return tuple(kind for kind in LAYER_KINDS if kind in kinds)


# --------------------------------------------------------------------------- input / output


# --------------------------------------------------------------------------- report lines


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} KB"
    return f"{n / 1_000_000:.1f} MB"


def finish(failed: int) -> None:
    if failed:
        click.get_current_context().exit(1)


# --------------------------------------------------------------------------- model and images


# --------------------------------------------------------------------------- models


def codec_loader(weights: str | None, device: str) -> Callable[[], Codec]:
    """A function that loads the codec on first call (fatal CliError on failure), on the
    runtime ``--backend`` chose. Check the weights' card and the qualities first, once,
    with :func:`check_qualities_early`."""
    context = click.get_current_context(silent=True)
    backend = context.meta.get(BACKEND, "auto") if context else "auto"

    def load() -> Codec:
        import fusioncodec

        return fusioncodec.load(weights, device, backend)

    return _checked_loader(load, weights)


def check_qualities_early(weights: str | None, kind: str, qualities: Sequence[float]) -> None:
    """Read the weights' model card (its header only, no torch) before the model loads: a
    missing or invalid weight file, or a quality outside 1..its levels (NaN too), fails at
    once. The one check of a command's qualities (the model is built from this card)."""
    from fusioncodec.errors import ArgumentError, WeightsError
    from fusioncodec.weight_file import check_qualities

    try:
        check_qualities(weights, kind, qualities)
    except WeightsError as exc:
        raise CliError(f"{exc}{_weights_source()}") from None
    except ArgumentError as exc:
        raise CliError(str(exc)) from None


def _weights_source() -> str:
    """`` (from $FUSIONCODEC_WEIGHTS)`` when the weights path came from the environment."""
    ctx = click.get_current_context(silent=True)
    source = ctx.get_parameter_source("weights") if ctx is not None else None
    return " (from $FUSIONCODEC_WEIGHTS)" if source == ParameterSource.ENVIRONMENT else ""


def _checked_loader(load: Callable[[], M], weights: str | None) -> Callable[[], M]:
    @cache
    def get() -> M:
        try:
            model = load()
        except (ValueError, OSError, KeyError, RuntimeError) as exc:
            from fusioncodec.errors import ArgumentError, WeightsError

            if isinstance(exc, WeightsError):
                raise CliError(f"{exc}{_weights_source()}") from None
            if isinstance(exc, ArgumentError):  # e.g. a runtime this install lacks
                raise CliError(str(exc)) from None
            source = show(weights) if weights else "the default weights"
            raise CliError(f"cannot load {source}: {error_reason(exc)}") from None
        return model

    return get
