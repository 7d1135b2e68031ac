"""The benchmark run: checks everything cheap first, then measures each device."""

from __future__ import annotations

import os
import platform
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any

from fusioncodec.errors import ArgumentError
from fusioncodec.eval.bench.cold import bench_cold_cli
from fusioncodec.eval.bench.compare import compressai_net, load_compressai_state
from fusioncodec.eval.bench.device import bench_device
from fusioncodec.eval.bench.options import (
    COMPRESSAI_NOTE,
    BenchError,
    BenchOptions,
    Log,
    default_image,
    load_image,
    synthetic_image,
)
from fusioncodec.eval.bench.probes import memory_method
from fusioncodec.messages import error_reason
from fusioncodec.nets.config import checked_quality


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
    try:
        checked_quality(quality, loaded.config.levels)
    except ArgumentError as exc:
        raise BenchError(str(exc)) from None
    return loaded


def run_bench(opts: BenchOptions, log: Log | None = None) -> dict[str, Any]:
    """Run the benchmark described by ``opts`` and return the report (JSON-ready).

    Every cheap check (options, device, image, weights, quality, CompressAI weights) runs
    before any timing, so a mistake fails at once with a :class:`BenchError`.
    """
    import torch

    from fusioncodec.weight_file import default_weights

    log = log or (lambda _message: None)
    _check_options(opts)
    devices = _devices(opts.device)
    image, image_info, image_path = _picture(opts)
    weights = (Path(opts.weights) if opts.weights is not None else default_weights()).resolve()
    loaded = _load_checked(weights, opts.quality)
    compressai_state = _compressai_state(opts)
    report = _report_head(opts, image, image_info, weights, loaded)
    config = loaded.config
    del loaded
    threads_before = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    report["cpu"]["torch_threads"] = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="fcodec-bench-") as tmp:
            work = Path(tmp)
            if image_path is None:
                image_path = work / f"synthetic-{image.width}x{image.height}.png"
                image.save(image_path)
            for device in devices:
                report["devices"][device] = bench_device(
                    torch.device(device), image, image_path.resolve(), weights,
                    compressai_state, config, work, opts, log,
                )  # fmt: skip
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
    report["notes"] = _notes(report, opts)
    return report


def _picture(opts: BenchOptions) -> tuple[Any, dict[str, Any], Path | None]:
    """The picture to code, what it is, and its file (None: synthetic, written later)."""
    if opts.size is not None:
        image = synthetic_image(*opts.size, seed=opts.seed)
        return image, {"source": "synthetic", "seed": opts.seed}, None
    image_path = Path(opts.image) if opts.image is not None else default_image()
    if opts.image is None and not image_path.exists():
        raise BenchError(
            f"default image not found: {image_path} (set FUSIONCODEC_SHARED, or pass "
            "--image PATH or --size WxH)"
        )
    return load_image(image_path), {"source": str(image_path)}, image_path


def _compressai_state(opts: BenchOptions) -> dict[str, Any] | None:
    """The CompressAI weights asked for; a state dict of another architecture fails now,
    not after the first device."""
    if not (opts.compressai and opts.compressai_weights is not None):
        return None
    state = load_compressai_state(Path(opts.compressai_weights))
    try:
        compressai_net(state, str(opts.compressai_weights))
    except BenchError:
        raise
    except Exception:  # noqa: BLE001, S110 - compressai unusable: reported as skipped later
        pass
    return state


def _report_head(
    opts: BenchOptions, image: Any, image_info: dict[str, Any], weights: Path, loaded: Any
) -> dict[str, Any]:
    """The report's description of the software, machine, weights and picture."""
    import torch

    import fusioncodec
    from fusioncodec.image import padded
    from fusioncodec.nets import count_parameters

    width, height = image.size
    model = loaded.model
    parameters = {
        "machine_codec": count_parameters(model.machine),
        "additional_codec": count_parameters(model.additional),
        "human_decoder": count_parameters(model.human),
        "total": count_parameters(model),
    }
    return {
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
        "cuda": {"available": torch.cuda.is_available(), "device": None},
        "weights": {"path": str(weights), "name": loaded.name, "parameters": parameters},
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


def _notes(report: dict[str, Any], opts: BenchOptions) -> list[str]:
    notes = []
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
    return notes
