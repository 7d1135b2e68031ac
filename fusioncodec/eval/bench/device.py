"""Everything measured on one device: warm coding, rate, CompressAI, cold runs, training."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusioncodec.eval.bench.cold import bench_cold
from fusioncodec.eval.bench.compare import bench_compressai, rate_report, ratios
from fusioncodec.eval.bench.options import COMPRESSAI_MODEL, STAGES, BenchOptions, Log
from fusioncodec.eval.bench.probes import finite, peak_memory, speed, sync, timed

if TYPE_CHECKING:
    import torch
    from PIL import Image


def _train_step(
    model: Any, opt: Any, stage: str, x: Any, mask: Any, params: list, config: Any
) -> None:
    """One optimisation step as in :func:`fusioncodec.train.loop.train`."""
    from fusioncodec.train.step import optimise, step_losses

    main, quantiles = params
    optimise(opt, step_losses(model, stage, x, mask, config), main, quantiles)


def trainspeed(config: Any, device: torch.device, opts: BenchOptions) -> dict[str, Any]:
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
        out["iterations_per_hour"][stage] = finite(3600 / seconds, 1)
        out["stages"][stage] = {"seconds_per_step": finite(seconds), **mem}
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

    pixels = image.width * image.height
    q = opts.quality
    out: dict[str, Any] = {}
    if device.type == "cuda":
        out["name"] = torch.cuda.get_device_name(device)

    log(f"{device.type}: loading the model")
    load_mem: dict[str, Any] = {}
    with peak_memory(device, load_mem):
        start = time.perf_counter()
        codec = Codec.from_file(weights, device)  # a fresh load, not a cached model
        sync(device)
        load_seconds = time.perf_counter() - start
    out["load"] = {"seconds": finite(load_seconds), **load_mem}

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
        warm[phase] = {**speed(seconds, pixels), **mem}
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
            result["ratio"] = ratios(warm, result)
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
        out["train"] = trainspeed(config, device, opts)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out
