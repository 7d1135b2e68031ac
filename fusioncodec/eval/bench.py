"""Speed, memory and rate benchmark of the scalable codec (``fcodec bench``).

What is measured, per device (CPU, and CUDA when torch sees one):

- **warm**: the model loaded once; median of ``repeat`` calls (after one untimed warm-up)
  of ``encode`` machine layer only, ``encode`` both layers, ``decode`` machine, ``decode``
  human, in seconds and megapixels per second (pixels of the unpadded image).  CUDA work is
  synchronised before each clock read.
- **cold**: a fresh interpreter running ``fcodec encode`` / ``fcodec decode`` (wall time
  including interpreter start-up, imports, model load, image reading and writing), and, once
  per run, ``fcodec --help`` and ``fcodec info`` (no torch).
- **memory**: see :func:`memory_method`.  Warm phases are measured in this process: on
  Linux the RSS high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs``
  before each phase and read after it, so every phase has its own peak; elsewhere the
  process peak so far (``ru_maxrss``) is reported instead.  Cold phases run in their own
  process, and their peak is that process's ``ru_maxrss`` (``os.wait4`` in a small launcher
  process, since a child forked straight from this one inherits its peak).  On CUDA,
  ``torch.cuda.max_memory_allocated`` is reset before each phase.
- **rate**: coded payload bits of each layer against the bits the entropy models estimate
  (eval-mode likelihoods of the rounded symbols), as an overhead in per cent, plus the
  header bytes of the ``.fcb`` file.
- **compressai**: CompressAI's ``mbt2018-mean`` (``MeanScaleHyperprior``, N=192, M=320: the
  quality 5-8 configuration) on the same padded image and device, and the ratio of
  fusioncodec's seconds to CompressAI's (above 1: fusioncodec is slower).  Pretrained
  weights cannot be downloaded here, so the network is randomly initialised (seeded) unless
  a state-dict file is given; random weights give a representative transform speed but not
  a representative entropy-coding speed or size.
- **train** (optional): training iterations per hour per stage at batch 8 x 256^2, each
  step as in :func:`fusioncodec.train.loop.train` (``step_losses`` and ``optimise`` of
  :mod:`fusioncodec.train.step`: backward, clipping, fused Adam) on random data.

A failing cold run (``fcodec encode`` exiting non-zero) fails the benchmark with the child's
error line: the CLI is broken and its numbers would be meaningless.

The entry point is :func:`run_bench`; :func:`format_report` renders its result as a table.
Expected failures raise :class:`BenchError` with a one-line message.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusioncodec.messages import error_reason

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from fusioncodec.codec import Codec

__all__ = [
    "BenchError",
    "BenchOptions",
    "default_image",
    "format_report",
    "parse_size",
    "run_bench",
    "run_cold",
    "synthetic_image",
    "to_json",
]

COMPRESSAI_MODEL = "mbt2018-mean"
COMPRESSAI_N, COMPRESSAI_M = 192, 320
COMPRESSAI_NOTE = (
    "random-init mbt2018-mean weights: transform speed is representative, "
    "entropy-coding speed and coded size are not"
)
WARM_PHASES = ("encode_machine", "encode_both", "decode_machine", "decode_human")
COLD_PHASES = ("encode", "decode_machine", "decode_human")
STAGES = ("machine", "human", "joint", "baseline")
MB = 1 << 20

Log = Callable[[str], None]


class BenchError(ValueError):
    """An expected failure (missing image, bad size, no CUDA...): a one-line message."""


@dataclass
class BenchOptions:
    """Everything ``fcodec bench`` can be asked for; see the module docstring."""

    image: Path | None = None  # None and size None: default_image()
    size: tuple[int, int] | None = None  # synthetic image (width, height)
    seed: int = 0  # of the synthetic image
    weights: Path | None = None  # None: the shipped weights
    quality: float = 4.0
    device: str = "all"  # cpu, cuda or all (cpu, and cuda when available)
    repeat: int = 5
    threads: int = 0  # 0: torch's default
    cold: bool = True
    cold_repeat: int = 1
    compressai: bool = True
    compressai_weights: Path | None = None
    train: bool = False
    train_steps: int = 3
    train_batch: int = 8
    train_crop: int = 256


# --------------------------------------------------------------------------- inputs


def default_image() -> Path:
    from fusioncodec.files import shared_dir

    return shared_dir() / "data" / "kodak" / "kodim01.png"


_SIZE = re.compile(r"^\s*(\d+)\s*[xX×*]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """``"768x512"`` -> ``(768, 512)``, within the ``.fcb`` size limits."""
    from fusioncodec.container import MAX_PIXELS, MAX_SIDE

    match = _SIZE.match(text)
    if not match:
        raise BenchError(f"bad size {text!r}: use WxH, e.g. 768x512")
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise BenchError(
            f"bad size {text!r}: .fcb allows 1..{MAX_SIDE} pixels per side "
            f"and at most {MAX_PIXELS} pixels"
        )
    return width, height


def synthetic_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A seeded test picture: smooth colour gradients, sensor-like noise and hard edges."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    scale = max(width, height, 1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for _ in range(3):  # smooth gradients: a slow sinusoid per channel
        fx, fy, phase = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
        channels.append(0.5 + 0.35 * np.sin(2 * np.pi * (fx * xx + fy * yy) / scale + phase))
    img = np.stack(channels, axis=-1)
    for _ in range(6):  # flat shapes with hard edges: rectangles and discs
        colour = rng.uniform(0, 1, 3)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.25) * scale
        if rng.random() < 0.5:
            inside = (np.abs(xx - cx) < r) & (np.abs(yy - cy) < 0.6 * r)
        else:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        img[inside] = colour
    img[(xx // 2 % 2 == 0) & (yy > 0.8 * height)] *= 0.3  # a band of thin stripes: texture
    img += rng.normal(0, 0.03, img.shape)  # sensor-like noise
    return Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), "RGB")


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image file, as a :class:`BenchError` on failure."""
    from PIL import Image, UnidentifiedImageError

    from fusioncodec.container import MAX_PIXELS, MAX_SIDE

    if not path.exists():
        raise BenchError(f"{path}: no such file")
    if not path.is_file():
        raise BenchError(f"{path}: not a file")
    try:
        with Image.open(path) as image:
            image.load()
    except UnidentifiedImageError:
        raise BenchError(f"{path}: not an image Pillow can read") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types
        raise BenchError(f"{path}: cannot read image ({error_reason(exc)})") from None
    width, height = image.size
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise BenchError(f"{path}: image is {width}x{height}, too large for .fcb")
    return image


# --------------------------------------------------------------------------- timing, memory


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeat: int, device: torch.device) -> float:
    """Median seconds of ``repeat`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _status_kb(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (VmRSS, VmHWM), None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _maxrss_mb(ru_maxrss: int) -> float:
    """ru_maxrss in MiB (kilobytes on Linux, bytes on macOS)."""
    return ru_maxrss / (MB if sys.platform == "darwin" else 1024)


def _rss_now_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def _process_peak_mb() -> float:
    import resource

    return _maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def memory_method() -> dict[str, str]:
    """How peak memory is measured on this machine (goes into the report)."""
    warm = (
        "per phase: RSS high-water mark (VmHWM), reset via /proc/self/clear_refs before it"
        if _reset_hwm()
        else "ru_maxrss: peak RSS of this process so far (not resettable here), not per phase"
    )
    return {
        "warm": warm,
        "cold": "per phase: ru_maxrss of the fresh fcodec process (os.wait4 in a small launcher)",
        "cuda": "torch.cuda.max_memory_allocated, reset before each phase",
    }


@contextmanager
def peak_memory(device: torch.device, into: dict[str, Any]) -> Iterator[None]:
    """Record the peak RSS (and CUDA allocation) of the enclosed work into ``into``."""
    import torch

    resettable = _reset_hwm()
    before = _rss_now_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if resettable:
        hwm = _status_kb("VmHWM")
        peak = hwm / 1024 if hwm is not None else _process_peak_mb()
    else:
        peak = _process_peak_mb()
    into["peak_rss_mb"] = round(peak, 1)
    if before is not None:
        into["rss_before_mb"] = round(before, 1)
    if device.type == "cuda":
        into["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / MB, 1)


def _finite(value: float, digits: int = 6) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _speed(seconds: float, pixels: int) -> dict[str, Any]:
    return {
        "seconds": _finite(seconds),
        "mp_per_s": _finite(pixels / 1e6 / seconds) if seconds > 0 else None,
    }


# --------------------------------------------------------------------------- rate


def _bits(likelihoods: dict[str, torch.Tensor]) -> float:
    import torch

    return float(sum(-torch.log2(lik).sum() for lik in likelihoods.values()))


def estimated_bits(codec: Codec, image: Image.Image, quality: float) -> dict[str, float]:
    """Bits the entropy models predict (eval mode: likelihoods of the rounded symbols)."""
    import numpy as np
    import torch

    from fusioncodec.image import to_tensor

    model = codec.model
    q = torch.tensor([float(np.float32(quality)) - 1.0], device=codec.device)
    with torch.no_grad():
        x = to_tensor(image, codec.device)
        machine = model.machine(x, q)
        _, additional = model.additional(x, q, machine["y_hat"])
    return {"machine": _bits(machine["likelihoods"]), "human": _bits(additional)}


def rate_report(codec: Codec, image: Image.Image, data: bytes, quality: float) -> dict[str, Any]:
    from fusioncodec.container import Container

    container = Container.from_bytes(data)
    pixels = container.width * container.height
    est = estimated_bits(codec, image, quality)
    out: dict[str, Any] = {}
    for kind in ("machine", "human"):
        coded = 8 * len(container.layer(kind).payload)
        out[kind] = {
            "coded_bits": coded,
            "estimated_bits": _finite(est[kind], 1),
            "overhead_percent": _finite(100 * (coded / est[kind] - 1), 3) if est[kind] else None,
            "bpp": _finite(coded / pixels),
        }
    out["header_bytes"] = container.header_size
    out["file_bytes"] = len(data)
    out["bpp"] = _finite(8 * len(data) / pixels)
    return out


# --------------------------------------------------------------------------- compressai


def load_compressai_state(path: Path) -> dict[str, Any]:
    """A CompressAI state dict from a ``.pth``/``.pth.tar``/``.safetensors`` file."""
    import torch

    if not path.is_file():
        raise BenchError(f"compressai weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load and safetensors raise many types
        raise BenchError(f"{path}: cannot read compressai weights ({error_reason(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "g_a.0.weight" not in state:
        raise BenchError(f"{path}: not a MeanScaleHyperprior state dict (no g_a.0.weight)")
    return state


def _compressai_net(state: dict[str, Any] | None, source: str) -> Any:
    """MeanScaleHyperprior from a state dict, or seeded random init; raises BenchError."""
    import torch

    from fusioncodec._torchvision import ensure_torchvision

    ensure_torchvision()
    from compressai.models import MeanScaleHyperprior

    if state is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return MeanScaleHyperprior(COMPRESSAI_N, COMPRESSAI_M)
    try:
        from compressai.zoo.pretrained import load_pretrained

        return MeanScaleHyperprior.from_state_dict(load_pretrained(dict(state)))
    except Exception as exc:  # noqa: BLE001 - key/shape mismatches
        reason = f"missing key {exc.args[0]}" if isinstance(exc, KeyError) else error_reason(exc)
        raise BenchError(f"{source}: does not fit MeanScaleHyperprior ({reason})") from None


def bench_compressai(
    x: torch.Tensor,
    pixels: int,
    device: torch.device,
    repeat: int,
    state: dict[str, Any] | None,
    source: str | None,
) -> dict[str, Any]:
    """Time ``compress``/``decompress`` of mbt2018-mean on the padded image ``x``.

    Returns ``{"skipped": reason}`` when CompressAI or its C++ rANS coder does not work.
    """
    import torch

    try:
        from fusioncodec._torchvision import ensure_torchvision

        ensure_torchvision()  # compressai imports torchvision, broken on some torch builds
        import compressai

        version = compressai.__version__
        net = _compressai_net(state, source or "compressai weights")
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any import problem means "not available"
        return {"skipped": f"compressai is not importable ({error_reason(exc)})"}
    out: dict[str, Any] = {
        "model": COMPRESSAI_MODEL,
        "class": "MeanScaleHyperprior",
        "version": version,
        "N": int(getattr(net, "N", COMPRESSAI_N)),
        "M": int(getattr(net, "M", COMPRESSAI_M)),
        "weights": str(source) if state is not None else "random-init",
    }
    try:
        net = net.to(device).eval()
        net.update(force=True)
        with torch.no_grad():
            coded = net.compress(x)
            shape = coded["shape"]
            strings = coded["strings"]

            def encode() -> None:
                net.compress(x)

            def decode() -> None:
                net.decompress(strings, shape)

            timings = {}
            for name, fn in (("encode", encode), ("decode", decode)):
                mem: dict[str, Any] = {}
                with peak_memory(device, mem):
                    seconds = timed(fn, repeat, device)
                timings[name] = {**_speed(seconds, pixels), **mem}
    except Exception as exc:  # noqa: BLE001 - the rANS extension may be missing or fail
        return {**out, "skipped": f"compressai coding failed ({error_reason(exc)})"}
    n_bytes = sum(len(s) for group in strings for s in group)
    out.update(timings)
    out["coded_bytes"] = n_bytes
    out["bpp"] = _finite(8 * n_bytes / pixels)
    if state is None:
        out["note"] = COMPRESSAI_NOTE
    return out


def _ratios(warm: dict[str, Any], compressai: dict[str, Any]) -> dict[str, float | None]:
    """fusioncodec seconds / compressai seconds, per warm phase (above 1: fusioncodec slower)."""
    out = {}
    for phase in WARM_PHASES:
        ref = compressai["encode" if phase.startswith("encode") else "decode"]["seconds"]
        ours = warm[phase]["seconds"]
        out[phase] = _finite(ours / ref, 4) if ref and ours is not None else None
    return out


# --------------------------------------------------------------------------- cold runs


def fcodec_command() -> list[str]:
    """How a user starts the CLI: the ``fcodec`` script beside this Python, else ``-m``."""
    script = Path(sys.executable).with_name("fcodec")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "fusioncodec.cli"]


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FCODEC_DEBUG", None)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


# Runs ``argv[2:]`` and reports its wall time and peak RSS as JSON.  A child inherits the
# peak RSS of the process it was forked from (Linux keeps it across exec), so measuring
# ``fcodec`` straight from this large process would report this process's peak; starting
# it from a small launcher keeps the inherited floor at the launcher's ~10 MB.
_LAUNCHER = r"""
import json, os, subprocess, sys, time
try:
    with open(sys.argv[1], "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            peak_kb = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)
        else:
            code = proc.wait()
            seconds, peak_kb = time.perf_counter() - start, None
    print(json.dumps({"seconds": seconds, "peak_kb": peak_kb, "exit": code}))
except OSError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def run_cold(args: list[str], env: dict[str, str], cmd: list[str] | None = None) -> dict[str, Any]:
    """Wall seconds and peak RSS of one fresh ``fcodec ARGS`` process (or of ``cmd``).

    Raises :class:`BenchError` with the child's last stderr line if it fails.
    """
    cmd = cmd or [*fcodec_command(), *args]
    with tempfile.TemporaryDirectory(prefix="fcodec-cold-") as tmp:
        err_path = Path(tmp) / "stderr"
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(err_path), *cmd]
        done = subprocess.run(launcher, env=env, capture_output=True, text=True, check=False)
        try:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            why = error_reason(RuntimeError(done.stderr))
            raise BenchError(f"fcodec {args[0]}: cold-run launcher failed: {why}") from None
        if "error" in result:
            raise BenchError(f"fcodec {args[0]}: cannot start {cmd[0]}: {result['error']}")
        if result["exit"] != 0:
            lines = [x for x in err_path.read_text(errors="replace").splitlines() if x.strip()]
            last = lines[-1].strip() if lines else f"exit status {result['exit']}"
            raise BenchError(f"fcodec {args[0]} failed: {last}")
    peak = result["peak_kb"]
    return {"seconds": result["seconds"], "peak_rss_mb": None if peak is None else peak / 1024}


def cold_median(
    args: list[str], env: dict[str, str], repeat: int, cmd: list[str] | None = None
) -> dict[str, Any]:
    """Median seconds and largest peak RSS of ``repeat`` cold runs."""
    runs = [run_cold(args, env, cmd) for _ in range(repeat)]
    peaks = [r["peak_rss_mb"] for r in runs if r["peak_rss_mb"] is not None]
    return {
        "seconds": _finite(statistics.median(r["seconds"] for r in runs)),
        "peak_rss_mb": round(max(peaks), 1) if peaks else None,
    }


def bench_cold(
    image_path: Path,
    weights: Path,
    quality: float,
    device: str,
    work: Path,
    pixels: int,
    opts: BenchOptions,
) -> dict[str, Any]:
    """Fresh-interpreter ``fcodec encode`` and ``decode`` (both layers) on one device."""
    env = _child_env(opts.threads)
    fcb = work / f"cold-{device}.fcb"
    model = ["--weights", str(weights), "--device", device, "--force"]
    jobs = {
        "encode": ["encode", str(image_path), "-o", str(fcb), "-q", repr(quality), *model],
        "decode_machine": ["decode", str(fcb), "-o", str(work / f"cold-{device}.machine.png")],
        "decode_human": ["decode", str(fcb), "-o", str(work / f"cold-{device}.human.png")],
    }
    jobs["decode_machine"] += ["--layer", "machine", *model]
    jobs["decode_human"] += ["--layer", "human", *model]
    out = {}
    for phase in COLD_PHASES:
        result = cold_median(jobs[phase], env, opts.cold_repeat)
        out[phase] = {**_speed(result["seconds"], pixels), "peak_rss_mb": result["peak_rss_mb"]}
    return out


def bench_cold_cli(fcb: Path, opts: BenchOptions) -> dict[str, Any]:
    """``fcodec --help`` and ``fcodec info`` wall times (median of at least 3)."""
    env = _child_env(opts.threads)
    repeat = max(3, opts.cold_repeat)
    out = {
        "command": " ".join(fcodec_command()),
        "help": cold_median(["--help"], env, repeat),
        "info": cold_median(["info", str(fcb)], env, repeat),
    }
    # The share of a cold encode/decode that is just importing torch and the codec.
    imports = [sys.executable, "-c", "import fusioncodec.codec"]
    out["import_codec"] = cold_median(["import"], env, opts.cold_repeat, imports)
    return out


# --------------------------------------------------------------------------- training


def _train_step(
    model: Any, opt: Any, stage: str, x: Any, mask: Any, params: list, config: Any
) -> None:
    """One optimisation step as in :func:`fusioncodec.train.loop.train`."""
    from fusioncodec.train.step import optimise, step_losses

    main, quantiles = params
    optimise(opt, step_losses(model, stage, x, mask, config), main, quantiles)


def train_speed(config: Any, device: torch.device, opts: BenchOptions) -> dict[str, Any]:
    """Training iterations per hour for each stage, at ``train_batch`` x ``train_crop``^2."""
    import torch

    from fusioncodec.train.step import build_model, make_optimizer, trainable

    out: dict[str, Any] = {
        "batch": opts.train_batch,
        "crop": opts.train_crop,
        "steps": opts.train_steps,
        "iterations_per_hour": {},
        "stages": {},
    }
    b, c = opts.train_batch, opts.train_crop
    for stage in STAGES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            # Built on the CPU, then moved: compressai's GDN does not build under a CUDA
            # default device. The loss makes its own tensors on x.device.
            model = build_model(stage, config).to(device, memory_format=torch.channels_last)
            model.train()
            opt, *params = make_optimizer(model, trainable(model, stage), 1e-4)
            if stage == "human":
                model.machine.eval()
            x = torch.rand(b, 3, c, c).to(device, memory_format=torch.channels_last)
            mask = (torch.rand(b, 1, c, c) < 0.15).float().to(device)

            step = partial(_train_step, model, opt, stage, x, mask, params, config)
            mem: dict[str, Any] = {}
            with peak_memory(device, mem):
                seconds = timed(step, opts.train_steps, device)
        out["iterations_per_hour"][stage] = _finite(3600 / seconds, 1)
        out["stages"][stage] = {"seconds_per_step": _finite(seconds), **mem}
    return out


# --------------------------------------------------------------------------- one device


def bench_device(
    device: torch.device,
    image: Image.Image,
    image_path: Path,
    weights: Path,
    compressai_state: dict[str, Any] | None,
    config: Any,
    work: Path,
    opts: BenchOptions,
    log: Log,
) -> dict[str, Any]:
    """Warm, cold, rate, CompressAI and (optionally) training numbers on one device."""
    import torch

    from fusioncodec.codec import Codec
    from fusioncodec.image import to_tensor
    from fusioncodec.weights import load

    pixels = image.width * image.height
    q = opts.quality
    out: dict[str, Any] = {}
    if device.type == "cuda":
        out["name"] = torch.cuda.get_device_name(device)

    log(f"{device.type}: loading the model")
    load_mem: dict[str, Any] = {}
    with peak_memory(device, load_mem):
        start = time.perf_counter()
        codec = Codec(load(weights), device)
        _sync(device)
        load_seconds = time.perf_counter() - start
    out["load"] = {"seconds": _finite(load_seconds), **load_mem}

    data = codec.encode(image, quality=q)
    jobs: dict[str, Callable[[], Any]] = {
        "encode_machine": lambda: codec.encode(image, ("machine",), q),
        "encode_both": lambda: codec.encode(image, quality=q),
        "decode_machine": lambda: codec.decode(data, "machine"),
        "decode_human": lambda: codec.decode(data, "human"),
    }
    warm: dict[str, Any] = {}
    for phase, fn in jobs.items():
        log(f"{device.type}: warm {phase.replace('_', ' ')} x{opts.repeat}")
        mem: dict[str, Any] = {}
        with peak_memory(device, mem):
            seconds = timed(fn, opts.repeat, device)
        warm[phase] = {**_speed(seconds, pixels), **mem}
    out["warm"] = warm

    log(f"{device.type}: estimated bits")
    out["rate"] = rate_report(codec, image, data, q)
    (work / f"warm-{device.type}.fcb").write_bytes(data)

    if opts.compressai:
        log(f"{device.type}: compressai {COMPRESSAI_MODEL}")
        x = to_tensor(image, device)
        source = str(opts.compressai_weights) if opts.compressai_weights else None
        result = bench_compressai(x, pixels, device, opts.repeat, compressai_state, source)
        del x
        if "skipped" not in result:
            result["ratio"] = _ratios(warm, result)
        out["compressai"] = result
    else:
        out["compressai"] = {"skipped": "--no-compressai"}
    codec = jobs = None  # free the model (and its CUDA memory) before cold runs and training
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if opts.cold:
        log(f"{device.type}: cold fcodec encode/decode")
        out["cold"] = bench_cold(image_path, weights, q, device.type, work, pixels, opts)
    if opts.train:
        log(f"{device.type}: training speed")
        out["train"] = train_speed(config, device, opts)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# --------------------------------------------------------------------------- the run


def _devices(choice: str) -> list[str]:
    import torch

    if choice not in ("cpu", "cuda", "all"):
        raise BenchError(f"unknown device {choice!r} (use cpu, cuda or all)")
    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        raise BenchError("--device cuda asked for, but torch sees no CUDA device")
    if choice == "all":
        return ["cpu", "cuda"] if cuda else ["cpu"]
    return [choice]


def _cpu_model() -> str:
    with suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _check_options(opts: BenchOptions) -> None:
    if opts.image is not None and opts.size is not None:
        raise BenchError("give --image or --size, not both")
    if not (math.isfinite(opts.quality) and opts.quality >= 1):
        raise BenchError(f"quality must be a finite number of at least 1, got {opts.quality}")
    for name in ("repeat", "cold_repeat", "train_steps", "train_batch", "train_crop"):
        if getattr(opts, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1")
    if opts.train and opts.train_crop % 64:
        raise BenchError(f"--train-crop must be a multiple of 64, got {opts.train_crop}")
    if opts.threads < 0:
        raise BenchError("--threads must be 0 (torch's default) or more")


def _load_checked(weights: Path, quality: float) -> Any:
    """Load the weights once up front: a scalable model, and ``quality`` within its levels."""
    from fusioncodec.weights import WeightsError, load

    try:
        loaded = load(weights)
    except WeightsError as exc:
        raise BenchError(str(exc)) from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise BenchError(f"cannot load {weights}: {error_reason(exc)}") from None
    if loaded.kind != "scalable":
        raise BenchError(f"{weights} is a {loaded.kind} model, not a scalable codec")
    levels = loaded.config.levels
    if not 1 <= quality <= levels:
        raise BenchError(f"quality must be between 1 and {levels}, got {quality:g}")
    return loaded


def run_bench(opts: BenchOptions, log: Log | None = None) -> dict[str, Any]:
    """Run the benchmark described by ``opts`` and return the report (JSON-ready).

    Every cheap check (options, device, image, weights, quality, CompressAI weights) runs
    before any timing, so a mistake fails at once with a :class:`BenchError`.
    """
    import torch

    import fusioncodec
    from fusioncodec.image import padded
    from fusioncodec.nets import count_parameters
    from fusioncodec.weights import default_weights

    log = log or (lambda _message: None)
    _check_options(opts)
    devices = _devices(opts.device)
    if opts.size is not None:
        image = synthetic_image(*opts.size, seed=opts.seed)
        image_info: dict[str, Any] = {"source": "synthetic", "seed": opts.seed}
        image_path = None
    else:
        image_path = Path(opts.image) if opts.image is not None else default_image()
        if opts.image is None and not image_path.exists():
            raise BenchError(
                f"default image not found: {image_path} (set FUSIONCODEC_SHARED, or pass "
                "--image PATH or --size WxH)"
            )
        image = load_image(image_path)
        image_info = {"source": str(image_path)}
    weights = (Path(opts.weights) if opts.weights is not None else default_weights()).resolve()
    loaded = _load_checked(weights, opts.quality)
    compressai_state = None
    if opts.compressai and opts.compressai_weights is not None:
        compressai_state = load_compressai_state(Path(opts.compressai_weights))
        try:  # a state dict of another architecture fails now, not after the first device
            _compressai_net(compressai_state, str(opts.compressai_weights))
        except BenchError:
            raise
        except Exception:  # noqa: BLE001, S110 - compressai unusable: reported as skipped later
            pass

    width, height = image.size
    model = loaded.model
    parameters = {
        "machine_codec": count_parameters(model.machine),
        "additional_codec": count_parameters(model.additional),
        "human_decoder": count_parameters(model.human),
        "total": count_parameters(model),
    }
    config, name = loaded.config, loaded.name
    del loaded, model
    threads_before = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "fusioncodec": fusioncodec.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": {
            "model": _cpu_model(),
            "count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()]
            if hasattr(os, "getloadavg")
            else None,
        },
        # The device name is filled in by the CUDA pass: asking for it here would create the
        # CUDA context before the CPU pass and add its host memory to every CPU RSS figure.
        "cuda": {"available": cuda, "device": None},
        "weights": {"path": str(weights), "name": name, "parameters": parameters},
        "image": {
            **image_info,
            "width": width,
            "height": height,
            "padded_width": padded(width),
            "padded_height": padded(height),
            "megapixels": round(width * height / 1e6, 6),
        },
        "quality": opts.quality,
        "repeat": opts.repeat,
        "memory_method": memory_method(),
        "devices": {},
        "notes": [],
    }
    try:
        with tempfile.TemporaryDirectory(prefix="fcodec-bench-") as tmp:
            work = Path(tmp)
            if image_path is None:
                image_path = work / f"synthetic-{width}x{height}.png"
                image.save(image_path)
            for device in devices:
                report["devices"][device] = bench_device(
                    torch.device(device),
                    image,
                    image_path.resolve(),
                    weights,
                    compressai_state,
                    config,
                    work,
                    opts,
                    log,
                )
                if device == "cuda":
                    report["cuda"]["device"] = report["devices"]["cuda"]["name"]
            if opts.cold:
                log("cold fcodec --help / info")
                report["cold_cli"] = bench_cold_cli(work / f"warm-{devices[0]}.fcb", opts)
    except BenchError:
        raise
    except (RuntimeError, MemoryError, OSError, ValueError) as exc:
        raise BenchError(f"benchmark failed: {error_reason(exc)}") from None
    finally:
        torch.set_num_threads(threads_before)
    notes = report["notes"]
    if opts.cold:
        notes.append(
            "cold = wall seconds of a fresh process: interpreter start-up, imports, model load, "
            "image read and write"
        )
    results = [dev.get("compressai", {}) for dev in report["devices"].values()]
    if any(r.get("weights") == "random-init" and "skipped" not in r for r in results):
        notes.append(COMPRESSAI_NOTE)
    for r in results:
        if r.get("skipped") and r["skipped"] != "--no-compressai":
            notes.append(f"compressai skipped: {r['skipped']}")
            break
    return report


# --------------------------------------------------------------------------- output


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _fmt(value: Any, spec: str, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{unit}"


def _row(
    label: str,
    r: dict[str, Any],
    cuda: bool,
    has_cai: bool,
    ref: dict[str, Any] | None = None,
    ratio: float | None = None,
) -> str:
    text = (
        f"{label:<27}{_fmt(r.get('seconds'), '.4f'):>10}{_fmt(r.get('mp_per_s'), '.4g'):>10}"
        f"{_fmt(r.get('peak_rss_mb'), '.0f', ' MB'):>11}"
    )
    if cuda:
        text += f"{_fmt(r.get('cuda_max_allocated_mb'), '.0f', ' MB'):>11}"
    if has_cai and ref is not None:
        text += f"{_fmt(ref.get('seconds'), '.4f', ' s'):>14}{_fmt(ratio, '.2f', 'x'):>9}"
    return text


def format_report(report: dict[str, Any]) -> str:
    """The report as a readable table."""
    img = report["image"]
    lines = [
        f"fcodec bench: {img['source']} {img['width']}x{img['height']} "
        f"({img['megapixels']:.3f} MP, padded {img['padded_width']}x{img['padded_height']}), "
        f"quality {report['quality']:g}, weights {report['weights']['name']}",
        f"torch {report['torch']}, {_plural(report['cpu']['torch_threads'], 'thread')} on "
        f"{report['cpu']['count']} CPUs ({report['cpu']['model']}), "
        f"load average {report['cpu']['load_average']}; warm = median of {report['repeat']}",
    ]
    params = report["weights"].get("parameters")
    if params:
        lines.append(
            f"parameters: machine {params['machine_codec']:,}, additional "
            f"{params['additional_codec']:,}, human decoder {params['human_decoder']:,}, "
            f"total {params['total']:,}"
        )
    for name, dev in report["devices"].items():
        cuda = name == "cuda"
        title = f"{name} ({dev['name']})" if cuda else name
        lines += ["", f"== {title} =="]
        cai = dev.get("compressai", {})
        has_cai = "skipped" not in cai
        head = f"{'phase':<27}{'seconds':>10}{'MP/s':>10}{'peak RSS':>11}"
        if cuda:
            head += f"{'CUDA max':>11}"
        if has_cai:
            head += f"{'mbt2018-mean':>14}{'ratio':>9}"
        lines.append(head)

        lines.append(_row("model load", dev["load"], cuda, has_cai))
        for phase in WARM_PHASES:
            ref = cai.get("encode" if phase.startswith("encode") else "decode") if has_cai else None
            ratio = cai.get("ratio", {}).get(phase) if has_cai else None
            label = f"warm {phase.replace('_', ' ')}"
            lines.append(_row(label, dev["warm"][phase], cuda, has_cai, ref, ratio))
        for phase, r in (dev.get("cold") or {}).items():
            lines.append(_row(f"cold {phase.replace('_', ' ')} (CLI)", r, cuda, has_cai))

        rate = dev["rate"]
        lines += ["", f"{'rate':<10}{'coded bits':>12}{'estimated':>14}{'overhead':>10}{'bpp':>9}"]
        for kind in ("machine", "human"):
            r = rate[kind]
            lines.append(
                f"{kind:<10}{r['coded_bits']:>12}{_fmt(r['estimated_bits'], '.0f'):>14}"
                f"{_fmt(r['overhead_percent'], '+.2f', '%'):>10}{_fmt(r['bpp'], '.4f'):>9}"
            )
        lines.append(
            f"header {rate['header_bytes']} bytes, file {rate['file_bytes']} bytes "
            f"({rate['bpp']:.4f} bpp)"
        )
        if has_cai:
            lines.append(
                f"compressai {cai['model']} (N={cai['N']}, M={cai['M']}, {cai['weights']}): "
                f"{cai['coded_bytes']} bytes ({cai['bpp']:.4f} bpp); ratio = fusioncodec "
                "seconds / compressai seconds (above 1: fusioncodec slower)"
            )
        else:
            lines.append(f"compressai skipped: {cai.get('skipped')}")
        train = dev.get("train")
        if train:
            its = ", ".join(f"{k} {v:,.0f}" for k, v in train["iterations_per_hour"].items())
            lines.append(
                f"training iterations/hour (batch {train['batch']} x {train['crop']}^2): {its}"
            )
    cold_cli = report.get("cold_cli")
    if cold_cli:
        lines += [
            "",
            f"cold CLI ({cold_cli['command']}): --help {cold_cli['help']['seconds']:.3f} s, "
            f"info {cold_cli['info']['seconds']:.3f} s; python -c 'import fusioncodec.codec' "
            f"{cold_cli['import_codec']['seconds']:.3f} s",
        ]
    lines.append(f"memory: warm {report['memory_method']['warm']}; cold per child process")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, allow_nan=False)
