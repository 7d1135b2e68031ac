"""Training speed: wall-clock seconds per step and crops/s of every stage, in every asked
precision (fp32 against bf16 in one run), at ``train_batch`` x ``train_crop``^2."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from fusioncodec.eval.bench.options import BenchOptions
from fusioncodec.eval.bench.probes import finite, peak_memory, timed

if TYPE_CHECKING:
    import torch


def _step(model: Any, opt: Any, stage: str, x: Any, mask: Any, params: list, **kw: Any) -> None:
    """One optimisation step as in :func:`fusioncodec.train.loop.train`."""
    from fusioncodec.train.step import optimise, step_losses

    main, quantiles = params
    optimise(opt, step_losses(model, stage, x, mask, **kw), main, quantiles)


def stage_speed(
    config: Any, device: torch.device, opts: BenchOptions, stage: str, precision: str
) -> dict[str, Any]:
    """One stage in one precision: seconds per step (median), crops/s, iterations/hour."""
    import torch

    from fusioncodec.train.recipe import DECODERS
    from fusioncodec.train.step import build_model, make_optimizer, train_mode, trainable

    b, c = opts.train_batch, opts.train_crop
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # Built on the CPU, then moved: compressai's GDN does not build under a CUDA
        # default device. The loss makes its own tensors on x.device.
        model = build_model(stage, config).to(device, memory_format=torch.channels_last)
        decoders = DECODERS  # the decoder stage at its most expensive: both decoders
        opt, *params = make_optimizer(model, trainable(model, stage, decoders), 1e-4)
        train_mode(model, stage, decoders)
        x = torch.rand(b, 3, c, c).to(device, memory_format=torch.channels_last)
        mask = (torch.rand(b, 1, c, c) < 0.15).float().to(device)
        kw = {"codec": config, "precision": precision, "decoders": decoders}
        step = partial(_step, model, opt, stage, x, mask, params, **kw)
        mem: dict[str, Any] = {}
        with peak_memory(device, mem):
            seconds = timed(step, opts.train_steps, device)
    return {
        "seconds_per_step": finite(seconds),
        "crops_per_s": finite(b / seconds, 3),
        "iterations_per_hour": finite(3600 / seconds, 1),
        **mem,
    }


def trainspeed(config: Any, device: torch.device, opts: BenchOptions) -> dict[str, Any]:
    """Every stage in every precision of ``opts.train_precisions``; with fp32 and bf16 both,
    the speed-up of bf16 (fp32 seconds / bf16 seconds) per stage."""
    import torch

    from fusioncodec.train.precision import default_precision, native_bf16
    from fusioncodec.train.recipe import STAGES

    out: dict[str, Any] = {
        "batch": opts.train_batch,
        "crop": opts.train_crop,
        "steps": opts.train_steps,
        "threads": torch.get_num_threads(),
        "native_bf16": native_bf16(device),
        "default_precision": default_precision(device),
        "precisions": {},
    }
    for precision in opts.train_precisions:
        out["precisions"][precision] = {
            stage: stage_speed(config, device, opts, stage, precision) for stage in STAGES
        }
    if {"fp32", "bf16"} <= out["precisions"].keys():
        fp32, bf16 = out["precisions"]["fp32"], out["precisions"]["bf16"]
        out["bf16_speedup"] = {
            stage: finite(fp32[stage]["seconds_per_step"] / bf16[stage]["seconds_per_step"], 3)
            for stage in STAGES
        }
    return out
