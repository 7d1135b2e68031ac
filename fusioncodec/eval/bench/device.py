"""Everything measured on one device: warm coding, rate, CompressAI, cold runs, training."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusioncodec.eval.bench.cold import bench_cold
from fusioncodec.eval.bench.compare import bench_compressai, rate_report, ratios
from fusioncodec.eval.bench.options import COMPRESSAI_MODEL, BenchOptions, Log
from fusioncodec.eval.bench.probes import finite, peak_memory, speed, sync, timed
from fusioncodec.eval.bench.training import trainspeed

if TYPE_CHECKING:
    import torch
    from PIL import Image


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
