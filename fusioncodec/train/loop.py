"""The training loop for every stage: machine (SA-ICM), human, joint, baseline.

- ``machine``: rate + lambda * MSE on edge pixels only (SA-ICM).
- ``human``: machine codec frozen; additional codec + fusion + human decoder,
  rate of the additional layer + lambda * MSE on the whole image.
- ``joint``: both of the above in one step; the machine latent is detached before fusion,
  so the human loss never moves the machine codec (a fast way to a first weight set).
- ``baseline``: the single-layer LIC, rate + lambda * MSE (the "standard LIC").

Quality is sampled continuously per image, so one model covers the whole lambda range.
Checkpoints (model + optimizer) are written every few minutes and on exit; ``resume``
continues from the latest one. With ``ema`` > 0 an exponential moving average of the weights
is kept beside them; it is checkpointed, validated and exported instead of the raw weights.
Logs are JSON lines. A non-finite step is skipped; if they keep coming, the run goes back to
its last saved state with fresh batches (a few times at most).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from fusioncodec.layers import lambda_positions
from fusioncodec.nets import CodecConfig, ScalableCodec, SingleLayerCodec
from fusioncodec.train.checkpoint import load_checkpoint, plain
from fusioncodec.train.data import CropSampler, load_or_build
from fusioncodec.train.losses import bits_per_pixel, edge_mse, lambda_at, mse, psnr, rd_loss

STAGES = ("machine", "human", "joint", "baseline")


class TrainingDiverged(RuntimeError):
    """Training kept producing non-finite steps, even from its last good state."""


@dataclass
class TrainConfig:
    stage: str
    out: Path
    train_root: Path
    shared: Path | None = None
    codec: CodecConfig = field(default_factory=CodecConfig)
    init: Path | None = None  # weights (safetensors) to start from, e.g. a trained machine codec
    mask_dirs: list[Path] = field(default_factory=list)  # 'fcodec masks' folders; else built-in
    batch: int = 8
    crop: int = 128
    lr: float = 2e-4
    max_steps: int = 1_000_000
    max_minutes: float = 60.0
    decay_at: float = 0.8  # fraction of the run after which lr drops 10x
    checkpoint_minutes: float = 5.0
    log_every: int = 50
    threads: int = 0
    seed: int = 0
    device: str = "auto"  # cpu, cuda or auto
    val_images: list[Path] = field(default_factory=list)  # held-out images coded for real
    validate_minutes: float = 15.0
    rollback_after: int = 20  # consecutive non-finite steps before returning to the last good state
    max_rollbacks: int = 5
    ema: float = 0.0  # decay of the weights' moving average (0: none; 0.999 ~ last 1,000 steps)


def build_model(stage: str, codec: CodecConfig) -> nn.Module:
    if stage == "baseline":
        return SingleLayerCodec(codec, codec.human_lambdas)
    return ScalableCodec(codec)


def _trainable(model: nn.Module, stage: str) -> list[nn.Parameter]:
    if stage == "machine":
        return list(model.machine.parameters())
    if stage == "human":
        model.machine.requires_grad_(False)
        return [p for n, p in model.named_parameters() if not n.startswith("machine.")]
    return list(model.parameters())


def _reseat_levels(model: nn.Module, stage: str, trained: dict, codec: CodecConfig) -> None:
    """Warm-start new lambda ranges: move each gain unit's levels to the new lambdas."""
    old = CodecConfig.from_dict(trained)
    units = (
        [(model.latent.gain, old.human_lambdas, codec.human_lambdas)]
        if stage == "baseline"
        else [
            (model.machine.latent.gain, old.machine_lambdas, codec.machine_lambdas),
            (model.additional.latent.gain, old.human_lambdas, codec.human_lambdas),
        ]
    )
    for unit, before, after in units:
        if before != after:
            unit.resample(lambda_positions(before, after))


class WeightAverage:
    """Exponential moving average of a model's parameters (buffers are copied once).

    ``update`` after each optimizer step: ``avg <- decay * avg + (1 - decay) * weights``.
    It starts from the weights it is given (or from a checkpoint's average on resume).
    """

    def __init__(self, model: nn.Module, decay: float, state: dict | None = None) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the moving average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)
        if state is not None:
            from fusioncodec.weights import load_state

            load_state(self.model, state, strict=True)
        self._source = list(model.parameters())
        self._target = list(self.model.parameters())

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._target, self._source, 1.0 - self.decay)


def _step_losses(
    model: nn.Module, stage: str, x: torch.Tensor, mask: torch.Tensor, codec: CodecConfig
) -> dict:
    b, _, h, w = x.shape
    levels = codec.levels - 1
    logs: dict[str, torch.Tensor] = {}
    total = x.new_zeros(())
    if stage == "baseline":
        q = torch.rand(b, device=x.device) * levels
        out = model(x, q)
        bpp, dist = bits_per_pixel(out["likelihoods"], h * w), mse(out["x_hat"], x)
        total = rd_loss(bpp, dist, lambda_at(codec.human_lambdas, q))
        aux = sum(c.entropy_bottleneck.loss() for c in model.latent_codecs())
        return {"loss": total, "aux": aux, "bpp": bpp.mean(), "psnr": psnr(dist).mean()}
    q_m = torch.rand(b, device=x.device) * levels
    if stage in ("machine", "joint"):
        m_out = model.machine(x, q_m)
        m_bpp = bits_per_pixel(m_out["likelihoods"], h * w)
        m_dist = edge_mse(m_out["x_hat"], x, mask)
        total = total + rd_loss(m_bpp, m_dist, lambda_at(codec.machine_lambdas, q_m))
        # PSNR over the batch's edge pixels: a crop without edges would otherwise count as 100 dB
        edge_pixels = mask.flatten(1).sum(1)
        edge_dist = (m_dist * edge_pixels).sum() / edge_pixels.sum().clamp(min=1.0)
        logs |= {"machine_bpp": m_bpp.mean(), "machine_edge_psnr": psnr(edge_dist)}
        y_machine = m_out["y_hat"].detach()
    else:
        with torch.no_grad():
            y_machine = model.machine(x, q_m)["y_hat"]
    if stage in ("human", "joint"):
        q_h = torch.rand(b, device=x.device) * levels
        y_add, lik = model.additional(x, q_h, y_machine)
        x_h = model.human(y_machine, y_add)
        h_bpp, h_dist = bits_per_pixel(lik, h * w), mse(x_h, x)
        total = total + rd_loss(h_bpp, h_dist, lambda_at(codec.human_lambdas, q_h))
        logs |= {"human_bpp": h_bpp.mean(), "human_psnr": psnr(h_dist).mean()}
    aux = sum(c.entropy_bottleneck.loss() for c in model.latent_codecs())
    return {"loss": total, "aux": aux, **logs}


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) one stage; returns the checkpoint path."""
    if cfg.stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = cfg.out / "checkpoint.pt"
    state = None
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        saved = CodecConfig.from_dict(state["config"]["codec"])
        if saved != cfg.codec:  # a run keeps its architecture and lambdas when resumed
            tqdm.write(f"resuming with the checkpoint's codec settings: {saved.to_dict()}")
            cfg.codec = saved
    model = build_model(cfg.stage, cfg.codec)
    if cfg.init is not None and state is None:
        from fusioncodec.weights import load_weights_into, read_card

        load_weights_into(model, cfg.init, strict=False)
        _reseat_levels(model, cfg.stage, read_card(cfg.init)["config"], cfg.codec)
    params = _trainable(model, cfg.stage)
    quantiles = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    main = [p for p in params if all(p is not q for q in quantiles)]
    optimizer = torch.optim.Adam(
        [{"params": main, "lr": cfg.lr}, {"params": quantiles, "lr": 1e-3}]
    )
    step, elapsed = 0, 0.0
    if state is not None:
        from fusioncodec.weights import load_state

        load_state(model, state["model"], strict=True)  # CDF tables of any size
        if state.get("optimizer") is not None:  # weights-only checkpoints restart Adam
            optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: autotune the convolutions
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    model = model.to(device, memory_format=torch.channels_last).train()
    if cfg.stage == "human":
        model.machine.eval()
    average = None
    if cfg.ema:
        saved_average = state.get("ema") if state is not None else None
        average = WeightAverage(model, cfg.ema, saved_average)
        if saved_average is None:
            tqdm.write(f"moving average of the weights (decay {cfg.ema}) starts at step {step}")
    sources = json.dumps([str(cfg.train_root.resolve()), *map(str, cfg.mask_dirs)])
    cache = cfg.out.parent / f"edges-{hashlib.sha1(sources.encode()).hexdigest()[:10]}.npz"
    packed = load_or_build(cache, cfg.train_root, cfg.shared, cfg.mask_dirs)
    sampler = CropSampler(packed, cfg.crop, seed=cfg.seed + step)
    log = (cfg.out / "log.jsonl").open("a")
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))

    def snapshot() -> dict[str, Any]:
        """Model and optimizer state to return to if training stops producing finite steps."""
        return copy.deepcopy(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "ema": average.model.state_dict() if average else None,
            }
        )

    def save() -> None:
        nonlocal good
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            bar.write("not saving: the weights are no longer finite (last checkpoint kept)")
            return
        good = snapshot()
        tmp = ckpt_path.with_suffix(".tmp")
        config = plain({**asdict(cfg), "codec": cfg.codec.to_dict()})
        torch.save({**good, "elapsed": elapsed, "config": config}, tmp)
        tmp.replace(ckpt_path)

    def validation(step: int) -> None:
        if not cfg.val_images:
            return
        from fusioncodec.train.validate import validate

        kind = "baseline" if cfg.stage == "baseline" else "scalable"
        levels = cfg.codec.levels
        shown = average.model if average else model  # the weights an export would ship
        row = validate(shown, kind, cfg.codec.to_dict(), cfg.val_images, [1.0, levels / 2, levels])
        row = {"step": step, "minutes": round(elapsed / 60, 2), **row}
        if average:
            row["ema"] = cfg.ema
        log.write(json.dumps(row) + "\n")
        log.flush()
        bar.write(f"validation at step {step}: {row}")

    start, last_save, last_val = time.time() - elapsed, time.time(), time.time()
    sums: dict[str, torch.Tensor] = {}
    count = skipped = rollbacks = 0
    good = snapshot()
    bar = tqdm(
        total=cfg.max_steps if cfg.max_steps < 1_000_000 else None,
        initial=step,
        desc=cfg.stage,
        unit="it",
        mininterval=10,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    while not stop["now"]:
        elapsed = time.time() - start
        progress = max(step / cfg.max_steps, elapsed / 60 / cfg.max_minutes)
        if progress >= 1:
            break
        lr_scale = 0.1 if progress >= cfg.decay_at else 1.0
        optimizer.param_groups[0]["lr"] = cfg.lr * lr_scale
        x, mask = (_to(t, device) for t in sampler.batch(cfg.batch))
        losses = _step_losses(model, cfg.stage, x, mask, cfg.codec)
        optimizer.zero_grad(set_to_none=True)
        (losses["loss"] + losses["aux"]).backward()
        norm = torch.nn.utils.clip_grad_norm_(main, 1.0)
        aux_finite = all(torch.isfinite(q.grad).all() for q in quantiles if q.grad is not None)
        if not (torch.isfinite(norm) and aux_finite):  # a bad batch must not poison the weights
            skipped += 1
            if skipped >= cfg.rollback_after:  # the state itself is bad: go back and reshuffle
                if rollbacks >= cfg.max_rollbacks:
                    raise TrainingDiverged(
                        f"training diverged {rollbacks + 1} times (last at step {step}); "
                        f"{ckpt_path} keeps the last finite state: resume with a lower --lr"
                    )
                rollbacks += 1
                bar.write(f"step {step}: {skipped} non-finite steps; back to step {good['step']}")
                model.load_state_dict(good["model"])
                optimizer.load_state_dict(good["optimizer"])
                if average:
                    average.model.load_state_dict(good["ema"])
                step, skipped, sums, count = good["step"], 0, {}, 0
                sampler = CropSampler(packed, cfg.crop, seed=cfg.seed + step + 7919 * rollbacks)
                row = {"step": step, "minutes": round(elapsed / 60, 2), "rollback": rollbacks}
                log.write(json.dumps(row) + "\n")
            continue
        skipped = 0
        optimizer.step()
        if average:
            average.update()
        step += 1
        bar.update()
        for k, v in losses.items():  # summed on the device: no host sync per step
            sums[k] = sums[k] + v.detach() if k in sums else v.detach().clone()
        count += 1
        if step % cfg.log_every == 0:
            row = {"step": step, "minutes": round(elapsed / 60, 2), "lr": cfg.lr * lr_scale}
            row |= {k: round(float(v) / count, 4) for k, v in sums.items()}
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.set_postfix({k: row[k] for k in list(row)[3:6]}, refresh=False)
            sums, count = {}, 0
        if time.time() - last_save > cfg.checkpoint_minutes * 60:
            save()
            last_save = time.time()
        if time.time() - last_val > cfg.validate_minutes * 60:
            validation(step)
            last_val = time.time()
    elapsed = time.time() - start
    bar.close()
    save()
    validation(step)
    log.close()
    if math.isfinite(elapsed):
        (cfg.out / "done").write_text(json.dumps({"step": step, "minutes": elapsed / 60}))
    os.sync()
    return ckpt_path
