"""The ``fcodec`` command line: encode images to ``.fcb`` files, decode, inspect and strip them.

Start-up is cheap: torch, the codec, Pillow and tqdm are imported inside the commands that
need them, so ``--help`` and ``--version`` are instant and ``info`` and ``strip`` (which use
only :mod:`fusioncodec.container`) never import torch.

Error contract: every expected failure is ONE line ``fcodec: error: ...`` on stderr and a
non-zero exit (1; click usage errors exit 2), never a traceback; outputs are written
atomically (temporary file in the target directory, then ``os.replace``), existing files are
kept unless ``--force`` is given, and an input file is never overwritten.

Adding a command: decorate a function with ``@cli.command()``, reuse the option decorators
below (``weights_option``, ``device_option``, ``force_option``, ``json_option``) and the
helpers (``plan_outputs``, ``run_jobs``, ``read_input``, ``write_output``, ``codec_loader``),
and import heavy modules inside the function body.  Raise :class:`CliError` for fatal
problems and :class:`FileError` for problems with one input of a batch.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TypeVar

import click

from fusioncodec import __version__
from fusioncodec.container import LAYER_KINDS, MAX_PIXELS, MAX_SIDE, Container
from fusioncodec.messages import error_reason, one_line
from fusioncodec.train.recipe import SOURCES, Balance
from fusioncodec.train.schedule import SCHEDULES

if TYPE_CHECKING:
    from PIL import Image

    from fusioncodec.codec import Codec, SingleLayerRunner

__all__ = ["CliError", "FileError", "cli", "main"]

STDIO = "-"
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", "Codec", "SingleLayerRunner")


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
def _errors(name: str) -> Iterator[None]:
    """Turn the expected exceptions of work on ``name`` into a :class:`FileError`."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, BrokenPipeError):
        raise
    # FormatError and WeightsError are ValueErrors; RuntimeError/MemoryError come from torch.
    except (ValueError, OSError, EOFError, RuntimeError, MemoryError) as exc:
        raise FileError(f"{name}: {error_reason(exc)}") from None


def _show(path: str | Path | None) -> str:
    """A path as shown in messages (``None`` is stdout, ``-`` stdin); never spans lines."""
    if path is None:
        return "<stdout>"
    text = str(path)
    if text == STDIO:
        return "<stdin>"
    return text if text.isprintable() else ascii(text)


# --------------------------------------------------------------------------- the group


LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, attribute, one-line help) -- imported only when the command runs
    "masks": ("fusioncodec.train.masks_cli", "masks", "Make edge-mask training targets."),
    "eval": ("fusioncodec.eval.cli", "eval_group", "Rate-distortion and detector evaluation."),
    "bench": ("fusioncodec.eval.bench_cli", "bench", "Speed, memory and rate benchmark."),
}


class FcodecGroup(click.Group):
    """Command group that reports stray ``ValueError``/``OSError`` as one-line errors.

    Commands in :data:`LAZY_COMMANDS` live in their own modules and are imported only when
    invoked (or when their own ``--help`` is shown), so start-up stays instant.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            import importlib

            module, attr, short = LAZY_COMMANDS[cmd_name]
            try:
                return getattr(importlib.import_module(module), attr)
            except ImportError as exc:
                reason = f"fcodec {cmd_name} is not available here ({error_reason(exc)})"

                def unavailable() -> None:
                    raise CliError(reason)

                return click.Command(cmd_name, callback=unavailable, help=f"{short} (unavailable)")
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, cmd.get_short_help_str(60)) for name, cmd in self.commands.items()]
        rows += [(name, short) for name, (_, _, short) in LAZY_COMMANDS.items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """click's main, with one-line usage errors (exit 2) and exit 130 on Ctrl-C."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
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
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C (outputs are written atomically: nothing half-written)
            click.echo("fcodec: interrupted", err=True)
            sys.exit(130)
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


@click.group(cls=FcodecGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


# --------------------------------------------------------------------------- shared options


def weights_option(f: F) -> F:
    return click.option(
        "--weights",
        metavar="PATH",
        envvar="FUSIONCODEC_WEIGHTS",
        show_envvar=True,
        help="Model weights (.safetensors). Default: the shipped model.",
    )(f)


def device_option(f: F) -> F:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where to run the model (auto: cuda if available).",
    )(f)


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


def _verbosity() -> int:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("fcodec.verbosity", 1) if ctx is not None else 1


def _note(message: str) -> None:
    """A report line on stderr, unless --quiet."""
    if _verbosity() >= 1:
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


@dataclass(frozen=True)
class Job:
    """One input and where its result goes (``output`` None: stdout)."""

    source: str
    output: Path | None

    @property
    def name(self) -> str:
        return _show(self.source)

    @property
    def out_name(self) -> str:
        return _show(self.output)


def _same_file(a: Path, b: Path) -> bool:
    with suppress(OSError):
        return os.path.samefile(a, b)
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def plan_outputs(
    inputs: Sequence[str], output: str | None, name_for: Callable[[str], str], *, as_json: bool
) -> list[Job]:
    """Pair inputs with outputs and check every path rule before any work is done.

    ``name_for(stem)`` names the output of an input with that stem, used beside the input
    (no ``-o``) or inside the ``-o`` directory.  Several inputs need a directory.
    """
    batch = len(inputs) > 1
    if STDIO in inputs and batch:
        raise CliError("- (stdin) cannot be combined with other inputs")
    if output == STDIO:
        if batch:
            raise CliError("-o - (stdout) takes a single input; use -o DIR for several")
        if as_json:
            raise CliError("--json cannot be used with -o - (stdout carries the data)")
        if _binary_stream("stdout").isatty():
            raise CliError("refusing to write binary data to a terminal; use -o FILE or redirect")
        return [Job(inputs[0], None)]
    if STDIO in inputs and output is None:
        raise CliError("reading stdin needs -o FILE (or -o - for stdout)")

    directory: Path | None = None
    if output is not None and (batch or output.endswith(("/", os.sep)) or Path(output).is_dir()):
        directory = Path(output)
        if directory.exists() and not directory.is_dir():
            raise CliError(f"{_show(output)}: not a directory (several inputs need -o DIR)")
        if not directory.exists() and directory.suffix and not output.endswith(("/", os.sep)):
            raise CliError(
                f"{_show(output)} names a file, but several inputs need -o DIR "
                f"(write {_show(output)}/ to make a directory of that name)"
            )
        if STDIO in inputs:
            raise CliError("reading stdin needs -o FILE (or -o - for stdout), not a directory")

    jobs = []
    for source in inputs:
        if output is None:
            target = Path(source).parent / name_for(Path(source).stem)
        elif directory is not None:
            target = directory / name_for(Path(source).stem)
        else:
            target = Path(output)
            if not target.parent.is_dir():
                raise CliError(f"{_show(target.parent)}: no such directory")
        jobs.append(Job(source, target))

    seen: dict[str, Job] = {}
    for job in jobs:
        assert job.output is not None
        key = os.path.normcase(os.path.abspath(job.output))
        if key in seen:
            raise CliError(
                f"{seen[key].name} and {job.name} would both write {job.out_name}; nothing written"
            )
        seen[key] = job
        for source in inputs:
            if source != STDIO and _same_file(job.output, Path(source)):
                raise CliError(f"{job.out_name}: refusing to overwrite input file {_show(source)}")
    if directory is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(
                f"{_show(directory)}: cannot create directory: {error_reason(exc)}"
            ) from None
    return jobs


def _binary_stream(name: str) -> BinaryIO:
    """The binary layer of ``sys.stdin`` / ``sys.stdout`` (as replaced by click's test runner)."""
    stream = getattr(sys, name)
    return getattr(stream, "buffer", stream)


def read_input(source: str) -> bytes:
    """All bytes of a file or of stdin (``-``); FileError if unreadable or empty."""
    name = _show(source)
    with _errors(name):
        if source == STDIO:
            stream = _binary_stream("stdin")
            if stream.isatty():
                raise FileError("refusing to read binary data from a terminal; pipe a file in")
            data = stream.read()
        else:
            data = Path(source).read_bytes()
    if not data:
        raise FileError(f"{name}: empty {'input' if source == STDIO else 'file'}")
    return data


def check_writable(job: Job, force: bool) -> None:
    """FileError if the output exists and ``--force`` was not given."""
    if job.output is not None and not force and os.path.lexists(job.output):
        raise FileError(f"{job.out_name}: already exists (use --force to overwrite)")


_UMASK: list[int] = []


def _umask() -> int:
    if not _UMASK:
        _UMASK.append(os.umask(0o022))
        os.umask(_UMASK[0])
    return _UMASK[0]


def write_output(job: Job, data: bytes, force: bool) -> None:
    """Write ``data`` to stdout or, atomically, to the job's output file."""
    if job.output is None:
        stream = _binary_stream("stdout")
        stream.write(data)
        stream.flush()
        return
    check_writable(job, force)
    path = job.output
    with _errors(job.out_name):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise


# --------------------------------------------------------------------------- batch runner


def _echo_err(message: str, bar: Any) -> None:
    if bar is not None and not bar.disable:
        bar.write(message, file=sys.stderr)
    else:
        click.echo(message, err=True)


def run_jobs(
    jobs: Sequence[Job],
    work: Callable[[Job], dict[str, Any]],
    *,
    desc: str,
    as_json: bool,
    progress: bool | None,
) -> list[dict[str, Any]]:
    """Run ``work`` on every job; one error line per failed job, the rest go on.

    A single job without ``--json`` lets its :class:`FileError` through (one error line).
    Each result (``ok`` true or false) is printed as a JSON line when ``as_json``.
    """
    from tqdm import tqdm

    show = progress if progress is not None else len(jobs) > 1 and sys.stderr.isatty()
    show = show and _verbosity() >= 1
    results: list[dict[str, Any]] = []
    with tqdm(
        total=len(jobs), file=sys.stderr, disable=not show, unit="file", desc=desc, leave=False
    ) as bar:
        for job in jobs:
            start = time.perf_counter()
            try:
                result = {"input": job.name, "output": job.out_name, "ok": True, **work(job)}
                if _verbosity() >= 2:
                    seconds = time.perf_counter() - start
                    _echo_err(f"{job.name} -> {job.out_name}: done in {seconds:.2f} s", bar)
            except FileError as exc:
                if len(jobs) == 1 and not as_json:
                    raise
                _echo_err(f"fcodec: error: {exc.format_message()}", bar)
                result = {
                    "input": job.name,
                    "output": job.out_name,
                    "ok": False,
                    "error": exc.format_message(),
                }
            results.append(result)
            if as_json:
                click.echo(json.dumps(result))
            bar.update()
    return results


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} KB"
    return f"{n / 1_000_000:.1f} MB"


def _bpp(n_bytes: int, pixels: int) -> float:
    return 8.0 * n_bytes / pixels


def _quality(q: float) -> float:
    """A float32 quality as the short decimal it was written as (4.3, not 4.300000190734863)."""
    return float(f"{q:.7g}")


def _finish(failed: int) -> None:
    if failed:
        click.get_current_context().exit(1)


# --------------------------------------------------------------------------- model and images


def codec_loader(
    weights: str | None, device: str, qualities: Sequence[float] = ()
) -> Callable[[], Codec]:
    """A function that loads the codec on first call (fatal CliError on failure).

    ``qualities`` are checked against the model's level count once it is loaded.
    """

    def load() -> Codec:
        import fusioncodec

        return fusioncodec.load(weights, device)

    _check_qualities_early(weights, "scalable", qualities)
    return _checked_loader(load, weights, qualities)


def baseline_loader(
    weights: str | None, device: str, qualities: Sequence[float] = ()
) -> Callable[[], SingleLayerRunner]:
    """Like :func:`codec_loader`, for the single-layer baseline (default: the shipped one)."""

    def load() -> SingleLayerRunner:
        from fusioncodec.codec import SingleLayerRunner
        from fusioncodec.weights import load

        return SingleLayerRunner(load(weights, "baseline"), device)

    _check_qualities_early(weights, "baseline", qualities)
    return _checked_loader(load, weights, qualities)


def _check_qualities_early(weights: str | None, kind: str, qualities: Sequence[float]) -> None:
    """Check qualities against the model card's level count (its header only), so a bad
    quality fails before the model is loaded."""
    if not qualities:
        return
    from fusioncodec.weights import WeightsError, default_weights, read_card

    try:
        card = read_card(Path(weights) if weights else default_weights(kind))
    except WeightsError:
        return  # the loader reports it, with the same message
    _check_qualities(qualities, card["config"].get("levels", 8))


def _check_qualities(qualities: Sequence[float], levels: int) -> None:
    for q in qualities:
        if not 1 <= q <= levels:
            raise CliError(f"quality must be between 1 and {levels}, got {q}")


def _checked_loader(
    load: Callable[[], M], weights: str | None, qualities: Sequence[float]
) -> Callable[[], M]:
    @cache
    def get() -> M:
        try:
            model = load()
        except (ValueError, OSError, KeyError, RuntimeError) as exc:
            from fusioncodec.weights import WeightsError

            if isinstance(exc, WeightsError):
                raise CliError(str(exc)) from None
            source = _show(weights) if weights else "the default weights"
            raise CliError(f"cannot load {source}: {error_reason(exc)}") from None
        _check_qualities(qualities, model.levels)
        return model

    return get


def open_image(data: bytes, name: str) -> Image.Image:
    """Decode image bytes with Pillow, fully (truncated files fail here), as a FileError."""
    from PIL import Image, UnidentifiedImageError

    from fusioncodec.codec import MAX_CODEC_PIXELS
    from fusioncodec.image import enable_optional_formats

    enable_optional_formats()
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_CODEC_PIXELS  # what the codec takes, not Pillow's 89 MP
            image = Image.open(io.BytesIO(data))
            image.load()
    except UnidentifiedImageError:
        raise FileError(f"{name}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FileError(f"{name}: image too large ({error_reason(exc)})") from None
    except Exception as exc:  # Pillow's plugins raise many types on corrupt data
        raise FileError(f"{name}: cannot read image ({error_reason(exc)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    width, height = image.size
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise FileError(
            f"{name}: image is {width}x{height}; .fcb allows 1..{MAX_SIDE} pixels per side "
            f"and at most {MAX_PIXELS} pixels"
        )
    return image


def _image_format(path: Path | None) -> str:
    """Pillow format for an output path from its extension (PNG for stdout / no extension)."""
    from PIL import Image

    if path is None or not path.suffix:
        return "PNG"
    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise CliError(
            f"{_show(path)}: cannot write images with extension {ext!r} (use .png, .jpg, .webp…)"
        )
    return fmt


def container_stats(container: Container) -> dict[str, Any]:
    """Sizes and rates of a parsed file, as reported by ``info`` and ``encode --json``."""
    pixels = container.width * container.height
    total = container.header_size + sum(len(layer.payload) for layer in container.layers)
    return {
        "width": container.width,
        "height": container.height,
        "bytes": total,
        "header_bytes": container.header_size,
        "bpp": _bpp(total, pixels),
        "model": container.model_name,
        "model_hash": container.model_hash.hex(),
        "m": container.m,
        "layers": [
            {
                "kind": layer.kind,
                "quality": _quality(layer.quality),
                "bytes": len(layer.payload),
                "bpp": _bpp(len(layer.payload), pixels),
            }
            for layer in container.layers
        ],
    }


# --------------------------------------------------------------------------- commands


@cli.command()
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
    default=4.0,
    show_default=True,
    help="Quality from 1 to the model's levels (8).",
)
@click.option(
    "--human-quality", type=float, default=None, help="Human-layer quality [default: --quality]."
)
@weights_option
@device_option
@force_option
@json_option
@progress_option
@verbosity_options
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

    Without -o, IMAGE's output is <stem>.fcb beside it; with -o DIR, DIR/<stem>.fcb.
    """
    if human_quality is not None and "human" not in layers:
        raise CliError("--human-quality sets the human layer, which --layers machine leaves out")
    human_quality = quality if human_quality is None else human_quality
    checked = [quality, human_quality] if "human" in layers else [quality]
    for q in checked:
        if not (math.isfinite(q) and q >= 1):  # the upper bound depends on the model
            raise CliError(f"quality must be a finite number of at least 1, got {q}")
    jobs = plan_outputs(inputs, output, lambda stem: f"{stem}.fcb", as_json=as_json)
    get_codec = codec_loader(weights, device, checked)

    def work(job: Job) -> dict[str, Any]:
        check_writable(job, force)
        image = open_image(read_input(job.source), job.name)
        codec = get_codec()
        with _errors(job.name):
            data = codec.encode(image, layers, quality, human_quality)
        write_output(job, data, force)
        return container_stats(Container.from_bytes(data))

    results = run_jobs(jobs, work, desc="encode", as_json=as_json, progress=progress)
    done = [r for r in results if r["ok"]]
    failed = len(results) - len(done)
    n_bytes = sum(r["bytes"] for r in done)
    pixels = sum(r["width"] * r["height"] for r in done)
    bpp = _bpp(n_bytes, pixels) if pixels else 0.0
    if as_json:
        summary = {"summary": "encode", "files": len(done), "failed": failed, "bytes": n_bytes}
        click.echo(json.dumps({**summary, "bpp": bpp}))
    elif len(jobs) == 1:
        r = done[0]
        per_layer = ", ".join(f"{x['kind']} {x['bpp']:.3f} bpp" for x in r["layers"])
        _note(
            f"{r['input']} -> {r['output']}: {r['width']}x{r['height']}, {_size(r['bytes'])}, "
            f"{r['bpp']:.3f} bpp ({per_layer})"
        )
    else:
        line = f"encoded {_plural(len(done), 'file')}"
        if done:
            line += f", {_size(n_bytes)}, {bpp:.2f} bpp avg"
        _note(line + (f", {failed} failed" if failed else ""))
    _finish(failed)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="FILE.fcb...")
@output_option
@click.option(
    "--layer",
    type=click.Choice(LAYER_KINDS),
    default="human",
    show_default=True,
    help="Which reconstruction to decode.",
)
@weights_option
@device_option
@force_option
@json_option
@progress_option
@verbosity_options
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
    output is <stem>.<layer>.png beside the input; with -o DIR, DIR/<stem>.<layer>.png.
    """
    jobs = plan_outputs(inputs, output, lambda stem: f"{stem}.{layer}.png", as_json=as_json)
    formats = {job.output: _image_format(job.output) for job in jobs}
    get_codec = codec_loader(weights, device)

    def work(job: Job) -> dict[str, Any]:
        check_writable(job, force)
        data = read_input(job.source)
        with _errors(job.name):
            container = Container.from_bytes(data)
        if layer not in container.kinds:
            raise FileError(
                f"{job.name}: has no {layer} layer (machine-only file); use --layer machine"
            )
        codec = get_codec()
        with _errors(job.name):
            image = codec.decode(data, layer)
        buffer = io.BytesIO()
        with _errors(job.out_name):
            image.save(buffer, format=formats[job.output])
        write_output(job, buffer.getvalue(), force)
        return {"layer": layer, "width": image.width, "height": image.height}

    results = run_jobs(jobs, work, desc="decode", as_json=as_json, progress=progress)
    done = sum(r["ok"] for r in results)
    failed = len(results) - done
    if as_json:
        click.echo(json.dumps({"summary": "decode", "files": done, "failed": failed}))
    elif len(jobs) == 1:
        r = results[0]
        _note(f"{r['input']} -> {r['output']}: {layer} layer, {r['width']}x{r['height']}")
    else:
        line = f"decoded {_plural(done, 'file')} ({layer} layer)"
        _note(line + (f", {failed} failed" if failed else ""))
    _finish(failed)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="FILE.fcb...")
@json_option(with_output=False)
def info(inputs: tuple[str, ...], as_json: bool) -> None:
    """Show size, layers, bytes and bits per pixel, and model of .fcb files (no torch)."""
    failed = 0
    for source in inputs:
        name = _show(source)
        try:
            data = read_input(source)
            with _errors(name):
                stats = container_stats(Container.from_bytes(data))
        except FileError as exc:
            if len(inputs) == 1 and not as_json:
                raise
            click.echo(f"fcodec: error: {exc.format_message()}", err=True)
            if as_json:
                click.echo(json.dumps({"path": name, "ok": False, "error": exc.format_message()}))
            failed += 1
            continue
        if as_json:
            click.echo(json.dumps({"path": name, "ok": True, **stats}))
            continue
        click.echo(
            f"{name}: {stats['width']}x{stats['height']}, {stats['bytes']} bytes, "
            f"{stats['bpp']:.4f} bpp"
        )
        click.echo(f"  model    {stats['model']} (hash {stats['model_hash']})")
        click.echo(f"  m        {stats['m']}")
        click.echo(f"  header   {stats['header_bytes']} bytes")
        for layer in stats["layers"]:
            click.echo(
                f"  {layer['kind']:<8} quality {layer['quality']:g}, {layer['bytes']} bytes, "
                f"{layer['bpp']:.4f} bpp"
            )
    _finish(failed)


@cli.command()
@click.argument("source", metavar="FILE.fcb")
@click.option(
    "-o", "--output", required=True, metavar="PATH", help="Output file (or - for stdout)."
)
@force_option
@json_option
@verbosity_options
def strip(source: str, output: str, force: bool, as_json: bool) -> None:
    """Drop the human layer without re-encoding; machine-layer bytes stay identical (no torch)."""
    (job,) = plan_outputs([source], output, lambda stem: f"{stem}.fcb", as_json=as_json)
    check_writable(job, force)
    data = read_input(source)
    with _errors(job.name):
        container = Container.from_bytes(data)
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
            "bytes_before": len(data),
            "bytes": len(stripped),
            "bpp": _bpp(len(stripped), pixels),
        }
        click.echo(json.dumps(result))
    elif had_human:
        _note(
            f"{job.name} -> {job.out_name}: dropped the human layer, "
            f"{len(data)} -> {len(stripped)} bytes ({_bpp(len(stripped), pixels):.3f} bpp)"
        )
    else:
        _note(f"fcodec: {job.name} has no human layer; written unchanged to {job.out_name}")


# --------------------------------------------------------------------------- training

# The hyperprior works at stride 64: smaller crops train it on border positions only.
MIN_GOOD_CROP = 256
_MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


@cli.command()
@click.argument("stage", type=click.Choice(["machine", "human", "joint", "baseline"]))
@click.option(
    "--out", "out_dir", required=True, metavar="DIR", help="Run folder (checkpoint, log)."
)
@click.option(
    "--data",
    "train_root",
    metavar="DIR",
    default=None,
    help="Training images (bsds500/, coco_*/). Default: $FUSIONCODEC_SHARED/data/train.",
)
@click.option(
    "--masks",
    "mask_dirs",
    multiple=True,
    metavar="DIR",
    help="Edge-mask folder from 'fcodec masks' (repeatable). Default: built-in sources.",
)
@click.option(
    "--sources",
    default=",".join(SOURCES),
    show_default=True,
    help="Built-in sources to train on, comma-separated (sun80: every 10th photo held out).",
)
@click.option(
    "--scale",
    metavar="LO:HI",
    default="0.5:0.9",
    show_default=True,
    help="Shrink each training picture by a random factor in this range (antialiased), so "
    "source JPEG artifacts fade; 1:1 trains on the pictures as they are.",
)
@click.option("--init", metavar="PATH", help="Start from these weights (e.g. a machine codec).")
@click.option(
    "--minutes", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True
)
@click.option("--steps", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--crop",
    type=click.IntRange(min=64),
    default=MIN_GOOD_CROP,
    show_default=True,
    help=f"Multiple of 64; below {MIN_GOOD_CROP} the hyperprior sees only border positions.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Peak learning rate [default: 2e-4; 1e-4 with --init].",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default="cosine",
    show_default=True,
    help="cosine: lr decays smoothly to 1e-6 over the run (minutes or steps); step: lr drops "
    "10x at --decay-at.",
)
@click.option(
    "--decay-at",
    type=click.FloatRange(min=0, max=1),
    default=0.8,
    show_default=True,
    help="With --schedule step: fraction of the run after which the lr drops 10x.",
)
@click.option(
    "--balance",
    metavar="H[:M]|off",
    default=None,
    help="Quality balance: each crop's loss is weighted by lambda^-H (human layer, baseline) "
    "or lambda^-M (machine layer) and every quality level is drawn equally often; off: "
    f"unweighted, end levels drawn half as often [default: {Balance().human:g}:"
    f"{Balance().machine:g}].",
)
@click.option(
    "--ema",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=0.999,
    show_default=True,
    help="Keep a moving average of the weights with this decay (warming up over the first "
    "steps); validation and export use it. 0: none. Give it again when resuming.",
)
@click.option(
    "--threads", type=click.IntRange(min=0), default=0, help="torch threads (0: torch's default)."
)
@click.option(
    "--checkpoint-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Minutes between checkpoints (also written when the run ends or is stopped).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the crops, flips, qualities and shrink factors (a resumed run keeps its own).",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=96,
    show_default=True,
    help="Transform channels.",
)
@click.option(
    "--slices", type=click.IntRange(min=1), default=5, show_default=True, help="S, machine slices."
)
@click.option(
    "--m", "m", type=click.IntRange(min=1), default=4, show_default=True, help="m, human slices."
)
@click.option(
    "--machine-lambdas",
    metavar="LO:HI",
    help="Machine lambda range, geometric over the quality levels (default: the --init "
    "weights' range, else 0.0005:0.03).",
)
@click.option(
    "--human-lambdas",
    metavar="LO:HI",
    help="Human-layer / baseline lambda range (default: the --init weights' range, else "
    "0.0013:0.1).",
)
@click.option(
    "--val",
    "val_dir",
    metavar="DIR|held-out",
    help="Images coded for real during training; held-out: the sun80 photos never trained on.",
)
@click.option("--val-count", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--validate-minutes",
    type=click.FloatRange(min=0),
    default=15.0,
    show_default=True,
    help="Minutes between validations (0: after every step).",
)
@device_option
def train(
    stage: str,
    out_dir: str,
    train_root: str | None,
    mask_dirs: tuple[str, ...],
    sources: str,
    scale: str,
    init: str | None,
    minutes: float,
    steps: int,
    batch: int,
    crop: int,
    lr: float | None,
    schedule: str,
    decay_at: float,
    balance: str | None,
    ema: float,
    threads: int,
    checkpoint_minutes: float,
    seed: int,
    n: int,
    slices: int,
    m: int,
    machine_lambdas: str | None,
    human_lambdas: str | None,
    val_dir: str | None,
    val_count: int,
    validate_minutes: float,
    device: str,
) -> None:
    """Train (or resume, if DIR has a checkpoint) one STAGE of the codec.

    machine: SA-ICM loss (MSE on edge pixels); human: machine frozen, additional codec and
    human decoder; joint: both at once (machine latent detached); baseline: single-layer LIC.
    With --init, the weights' lambda ranges are kept unless --machine-lambdas or
    --human-lambdas give new ones, which start from the trained gains moved to the new
    lambdas. A resumed run keeps its checkpoint's architecture and lambdas.

    The recipe: training pictures shrunk by a random factor (--scale) so that source JPEG
    artifacts fade; every quality level drawn equally often, each crop's loss weighted so
    that low qualities get their share (--balance); the lr decays along a cosine to 1e-6
    (--schedule); a moving average of the weights (--ema) is validated and exported. Crops
    are cut on the training device. docs/TRAINING.md gives the recipe's measured effect and
    the procedure for a lent GPU (scripts/gpu_train.sh).
    """
    if os.environ.get("GLIBC_TUNABLES") is None and sys.platform.startswith("linux"):
        # Large malloc thresholds stop page-fault storms in CPU training (35-60% faster here).
        os.environ["GLIBC_TUNABLES"] = _MALLOC_TUNABLES
        os.execv(sys.executable, [sys.executable, "-m", "fusioncodec.cli", *sys.argv[1:]])
    from fusioncodec.nets import CodecConfig
    from fusioncodec.train.loop import TrainConfig, TrainingDiverged
    from fusioncodec.train.loop import train as run

    if crop % 64:
        raise CliError(f"--crop must be a multiple of 64 (the codec's stride), got {crop}")
    shared = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))
    root = Path(train_root) if train_root else shared / "data" / "train"
    if not root.is_dir():
        raise CliError(f"training data not found: {root}")
    val_images: list[Path] = []
    if val_dir == "held-out":
        from fusioncodec.train.data import held_out_images

        val_images = held_out_images(root)[:val_count]
        if not val_images:
            raise CliError(f"no held-out photos: {_show(root / 'sun80')} has no images")
    elif val_dir:
        from fusioncodec.train.data import FORBIDDEN, image_files

        if any(part.lower() in FORBIDDEN for part in Path(val_dir).resolve().parts):
            raise CliError(f"refusing to select models on a test set: {_show(val_dir)}")
        val_images = image_files(Path(val_dir))[:val_count]
        if not val_images:
            raise CliError(f"no validation images in {_show(val_dir)}")
    chosen = tuple(s.strip() for s in sources.split(",") if s.strip())
    if not chosen or set(chosen) - set(SOURCES):
        raise CliError(f"--sources takes some of {','.join(SOURCES)}, got {sources!r}")
    shrink = _scale_range(scale)
    weighting = _balance(balance)
    try:
        ranges = {
            name: _lambda_range(text, option)
            for name, text, option in (
                ("machine_lambdas", machine_lambdas, "--machine-lambdas"),
                ("human_lambdas", human_lambdas, "--human-lambdas"),
            )
            if text is not None
        }
        if init:  # a range not given keeps the one the --init weights were trained with
            from fusioncodec.weights import read_card

            trained = read_card(Path(init))["config"]
            for name in ("machine_lambdas", "human_lambdas"):
                if name not in ranges and name in trained:
                    ranges[name] = trained[name]
        codec = CodecConfig(n=n, slices=slices, m=m, **ranges)
        config = TrainConfig(
            stage=stage,
            out=Path(out_dir),
            train_root=root,
            shared=shared if shared.is_dir() else None,
            codec=codec,
            init=Path(init) if init else None,
            mask_dirs=[Path(d) for d in mask_dirs],
            sources=chosen,
            scale=shrink,
            device=device,
            val_images=val_images,
            validate_minutes=validate_minutes,
            batch=batch,
            crop=crop,
            lr=lr if lr is not None else (1e-4 if init else 2e-4),
            schedule=schedule,
            decay_at=decay_at,
            balance=weighting,
            ema=ema,
            max_steps=steps,
            max_minutes=minutes,
            threads=threads,
            checkpoint_minutes=checkpoint_minutes,
            seed=seed,
        )
        if crop < MIN_GOOD_CROP:
            click.echo(
                f"warning: --crop {crop} gives the hyper-latent a {crop // 64}x{crop // 64} grid, "
                "(nearly) all border positions; models trained so lose rate on full-size images at "
                f"high quality (use {MIN_GOOD_CROP} or more)",
                err=True,
            )
        checkpoint = run(config)
    except TrainingDiverged as exc:
        raise CliError(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise CliError(error_reason(exc)) from None
    click.echo(f"checkpoint: {checkpoint}", err=True)


def _scale_range(text: str) -> tuple[float, float]:
    """``LO:HI`` (or one factor) -> the range training pictures are shrunk by."""
    try:
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0.1 <= parts[0] <= parts[1] <= 1:
        raise CliError(f"--scale takes LO:HI with 0.1 <= LO <= HI <= 1, got {text!r}")
    return parts[0], parts[1]


def _balance(text: str | None) -> Balance:
    """``--balance``: ``off``, ``H`` (both layers) or ``H:M``; None: the default."""
    if text is None:
        return Balance()
    if text == "off":
        return Balance.none()
    try:
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(0 <= v <= 2 for v in parts):
        raise CliError(f"--balance takes H[:M] (exponents in [0, 2]) or off, got {text!r}")
    return Balance(parts[0], parts[1])


def _lambda_range(text: str, option: str, levels: int = 8) -> list[float]:
    """``LO:HI`` -> ``levels`` lambdas spaced geometrically from LO to HI."""
    from fusioncodec.nets.config import geometric

    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise CliError(f"{option} takes LO:HI (two numbers), got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise CliError(f"{option} needs 0 < LO < HI, got {text!r}")
    return geometric(lo, hi, levels)


@cli.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(["scalable", "baseline"]), required=True)
@click.option("--name", required=True, help="Model name; writes NAME.safetensors and NAME.json.")
@click.option("--out", "out_dir", default=None, metavar="DIR", help="Default: the models folder.")
@click.option("--results", multiple=True, metavar="JSON", help="Measured results for the card.")
@click.option("--notes", default="", help="Free text for the model card.")
@force_option
def export_command(
    checkpoint: str,
    kind: str,
    name: str,
    out_dir: str | None,
    results: tuple[str, ...],
    notes: str,
    force: bool,
) -> None:
    """Export a training CHECKPOINT as shipped weights (fp16 safetensors + model card).

    Given a .safetensors weight file instead, re-export it in the current format (its card
    kept, renamed): this converts weights made before the integer entropy networks.
    """
    from fusioncodec.train.export import convert_weights, export_checkpoint, load_results
    from fusioncodec.weights import models_dir

    folder = Path(out_dir) if out_dir else models_dir()
    target = folder / f"{name}.safetensors"
    if target.exists() and not force:
        raise CliError(f"{_show(target)} exists (use --force to replace it)")
    if not Path(checkpoint).is_file():
        raise CliError(f"checkpoint not found: {_show(checkpoint)}")
    try:
        if checkpoint.endswith(".safetensors"):
            if Path(checkpoint).resolve() == target.resolve():
                raise CliError("the converted weights need another name than the source")
            path, identity = convert_weights(Path(checkpoint), kind, name, folder, notes)
        else:
            path, identity = export_checkpoint(
                Path(checkpoint),
                kind,
                name,
                folder,
                load_results([Path(r) for r in results]),
                notes,
            )
    except (KeyError, RuntimeError, ValueError, OSError) as exc:
        raise CliError(f"cannot export {_show(checkpoint)}: {error_reason(exc)}") from None
    click.echo(f"wrote {path} (identity {identity.hex()})", err=True)


if __name__ == "__main__":
    main()
