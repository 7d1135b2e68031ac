"""The training loop for every stage (see :mod:`fusioncodec.train.step` for the losses).

The recipe (0.3): training pictures shrunk by a random factor (antialiased) so that source
JPEG artifacts fade; every quality drawn equally often and weighted to a fair share of the
update; a cosine learning-rate decay; an exponential moving average of the weights, which is
checkpointed, validated and exported instead of the raw weights. Each can be switched back
to the recipe before it (``scale=(1, 1)``, ``Balance.none()``, ``schedule="step"``, ``ema=0``).

Crops are cut on the training device and the loop never waits for it: a non-finite step is
skipped on the device (the fused optimizer's ``found_inf``), and the host looks at the count of
consecutive skipped steps only every ``rollback_after`` steps; if the state itself has gone
bad, the run goes back to its last saved state with fresh batches (a few times at most).
Checkpoints (model + optimizer) are written every few minutes and on exit; a run in a folder
with a checkpoint resumes it. Logs are JSON lines.
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

from fusioncodec.files import atomic_file
from fusioncodec.nets import CodecConfig
from fusioncodec.nets.layers import lambda_positions
from fusioncodec.train.checkpoint import load_checkpoint, plain
from fusioncodec.train.data import CropSampler, load_or_build, pictures
from fusioncodec.train.precision import resolve_precision
from fusioncodec.train.recipe import DEFAULT_DECODERS, DEFAULT_SCALE, SOURCES, STAGES, Balance
from fusioncodec.train.schedule import average_decay, learning_rate
from fusioncodec.train.step import (
    build_model,
    make_optimizer,
    optimise,
    step_losses,
    train_mode,
    trainable,
)


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
    schedule: str = "cosine"  # or "step": lr drops 10x at decay_at
    decay_at: float = 0.8  # fraction of the run after which the step schedule drops lr 10x
    balance: Balance = field(default_factory=Balance)
    scale: tuple[float, float] = DEFAULT_SCALE  # pictures shrunk by a factor in this range
    versions: int = 4  # shrunk copies of each picture
    sources: tuple[str, ...] = SOURCES
    checkpoint_minutes: float = 5.0
    log_every: int = 50
    threads: int = 0
    seed: int = 0
    device: str = "auto"  # cpu, cuda or auto
    val_images: list[Path] = field(default_factory=list)  # held-out images coded for real
    validate_minutes: float = 15.0
    rollback_after: int = 20  # consecutive non-finite steps before returning to the last good state
    max_rollbacks: int = 5
    ema: float = 0.999  # decay of the weights' moving average (0: none; 0.999 ~ last 1,000 steps)
    precision: str = "auto"  # fp32, bf16 (transforms under autocast) or auto (by the hardware)
    decoders: tuple[str, ...] = DEFAULT_DECODERS  # what the decoder stage trains
    rounded_rate_from: float | None = None  # progress from which the rate is charged as coded


def _reseat_levels(model: nn.Module, stage: str, trained: dict, codec: CodecConfig) -> None:
    """Warm-start new lambda ranges: move each gain unit's levels to the new lambdas."""
    old = CodecConfig.from_dict(trained)
    units = (
        [(model.latent, old.human_lambdas, codec.human_lambdas)]
        if stage == "baseline"
        else [
            (model.machine.latent, old.machine_lambdas, codec.machine_lambdas),
            (model.additional.latent, old.human_lambdas, codec.human_lambdas),
        ]
    )
    for latent, before, after in units:
        if before != after:
            latent.resample_levels(lambda_positions(before, after))


class WeightAverage:
    """Exponential moving average of a model's trained parameters (frozen ones and buffers
    are copied once and stay bit for bit what they were: averaging a value with itself can
    still flip the sign of a zero).

    ``update`` after each optimizer step: ``avg <- d * avg + (1 - d) * weights`` with
    ``d = average_decay(decay, updates)`` (``warmup``) or ``decay``. It starts from the
    weights it is given (or from a checkpoint's average on resume).
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float,
        state: dict | None = None,
        updates: int = 0,
        warmup: bool = True,
    ) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the moving average's decay must be in (0, 1), got {decay}")
        self.decay, self.updates, self.warmup = decay, updates, warmup
        self.model = copy.deepcopy(model).requires_grad_(False)
        if state is not None:
            from fusioncodec.weights import load_state

            load_state(self.model, state, strict=True)
        pairs = zip(model.parameters(), self.model.parameters(), strict=True)
        trained = [(source, target) for source, target in pairs if source.requires_grad]
        self._source = [source for source, _ in trained]
        self._target = [target for _, target in trained]

    @torch.no_grad()
    def update(self) -> None:
        decay = average_decay(self.decay, self.updates) if self.warmup else self.decay
        torch._foreach_lerp_(self._target, self._source, 1.0 - decay)
        self.updates += 1


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) one stage; returns the checkpoint path."""
    if cfg.stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}")
    if cfg.stage == "decoder" and cfg.init is None:
        raise ValueError("the decoder stage trains the decoders of trained weights: give --init")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    return _Run(cfg).run()


def _resumed(cfg: TrainConfig, ckpt_path: Path) -> dict[str, Any] | None:
    """The checkpoint of a run to resume (None: a new run); the run keeps its architecture,
    lambdas and seed."""
    if not ckpt_path.exists():
        return None
    state = load_checkpoint(ckpt_path)
    saved = CodecConfig.from_dict(state["config"]["codec"])
    if saved != cfg.codec:
        tqdm.write(f"resuming with the checkpoint's codec settings: {saved.to_dict()}")
        cfg.codec = saved
    cfg.seed = state["config"].get("seed", cfg.seed)  # the same shrunk copies as before
    return state


def _device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


class _Run:
    """One training run: its model, optimizer, average, crops and log, and the loop."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.ckpt_path = cfg.out / "checkpoint.pt"
        state = _resumed(cfg, self.ckpt_path)
        self.model = build_model(cfg.stage, cfg.codec)
        self.step, self.elapsed = 0, 0.0
        if cfg.init is not None and state is None:
            from fusioncodec.weight_file import read_card
            from fusioncodec.weights import load_weights_into

            # the decoder stage keeps every trained weight: all of them must be there
            load_weights_into(self.model, cfg.init, strict=cfg.stage == "decoder")
            _reseat_levels(self.model, cfg.stage, read_card(cfg.init)["config"], cfg.codec)
        if state is not None:
            from fusioncodec.weights import load_state

            load_state(self.model, state["model"], strict=True)  # CDF tables of any size
            self.step, self.elapsed = state["step"], state["elapsed"]
        self.device = device = _device(cfg.device)
        self.precision = resolve_precision(cfg.precision, device)
        self.model = self.model.to(device, memory_format=torch.channels_last)
        params = trainable(self.model, cfg.stage, cfg.decoders)
        self.optimizer, self.main, self.quantiles = make_optimizer(self.model, params, cfg.lr)
        if state is not None and state.get("optimizer") is not None:  # weights-only: fresh Adam
            self.optimizer.load_state_dict(state["optimizer"])
        torch.manual_seed(cfg.seed + self.step)  # qualities: a resumed run does not repeat
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: autotune the convolutions
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        train_mode(self.model, cfg.stage, cfg.decoders)
        self.average = self._average(state)
        self.sampler = self._sampler()
        self.log = (cfg.out / "log.jsonl").open("a")
        self.stop = False
        self.good = self.snapshot()

    def _average(self, state: dict[str, Any] | None) -> WeightAverage | None:
        cfg = self.cfg
        if not cfg.ema:
            return None
        saved = state.get("ema") if state is not None else None
        # a checkpoint from before the warm-up count: its average is past any warm-up
        updates = state.get("ema_updates", 10**9) if saved is not None else 0
        if saved is None:
            tqdm.write(
                f"moving average of the weights (decay {cfg.ema}) starts at step {self.step}"
            )
        return WeightAverage(self.model, cfg.ema, saved, updates)

    def _sampler(self) -> CropSampler:
        cfg = self.cfg
        sources = json.dumps(
            [str(cfg.train_root.resolve()), *map(str, cfg.mask_dirs), *sorted(cfg.sources)]
        )
        cache = cfg.out.parent / f"edges-{hashlib.sha1(sources.encode()).hexdigest()[:10]}.npz"
        packed = load_or_build(cache, cfg.train_root, cfg.shared, cfg.mask_dirs, cfg.sources)
        # the same shrunk copies on resume: drawn from the run's seed, not its step
        items = pictures(packed, cfg.crop, cfg.scale, cfg.versions, cfg.seed, self.device)
        del packed
        edges_only = cfg.stage == "machine"  # unannotated photos teach the machine layer nothing
        sampler = CropSampler(items, cfg.crop, cfg.seed + self.step, self.device, edges_only)
        tqdm.write(f"{len(sampler)} training pictures on {self.device}, {self.precision}")
        return sampler

    def snapshot(self) -> dict[str, Any]:
        """Model and optimizer state to return to if training stops producing finite steps."""
        average = self.average
        return copy.deepcopy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "step": self.step,
                "ema": average.model.state_dict() if average else None,
                "ema_updates": average.updates if average else 0,
            }
        )

    def save(self) -> None:
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self.bar.write("not saving: the weights are no longer finite (last checkpoint kept)")
            return
        self.good = self.snapshot()
        config = plain({**asdict(self.cfg), "codec": self.cfg.codec.to_dict()})
        with atomic_file(self.ckpt_path) as tmp:
            torch.save({**self.good, "elapsed": self.elapsed, "config": config}, tmp)

    def write(self, row: dict[str, Any]) -> None:
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()

    def validation(self) -> None:
        cfg = self.cfg
        if not cfg.val_images:
            return
        from fusioncodec.train.validate import validate

        kind = "baseline" if cfg.stage == "baseline" else "scalable"
        levels = cfg.codec.levels
        shown = self.average.model if self.average else self.model  # what an export ships
        row = validate(shown, kind, cfg.codec.to_dict(), cfg.val_images, [1.0, levels / 2, levels])
        row = {"step": self.step, "minutes": round(self.elapsed / 60, 2), **row}
        if self.average:
            row["ema"] = cfg.ema
        self.write(row)
        self.bar.write(f"validation at step {self.step}: {row}")

    def rollback(self, streak: int, rollbacks: int) -> None:
        """Go back to the last good state with fresh batches (the state itself went bad)."""
        cfg, good = self.cfg, self.good
        if rollbacks > cfg.max_rollbacks:
            raise TrainingDiverged(
                f"training diverged {rollbacks} times (last at step {self.step}); "
                f"{self.ckpt_path} keeps the last finite state: resume with a lower --lr"
            )
        self.bar.write(f"step {self.step}: {streak} non-finite steps; back to step {good['step']}")
        self.model.load_state_dict(good["model"])
        self.optimizer.load_state_dict(good["optimizer"])
        if self.average:
            self.average.model.load_state_dict(good["ema"])
            self.average.updates = good["ema_updates"]
        self.step = good["step"]
        self.sampler.reseed(cfg.seed + self.step + 7919 * rollbacks)
        row = {"step": self.step, "minutes": round(self.elapsed / 60, 2), "rollback": rollbacks}
        self.log.write(json.dumps(row) + "\n")

    def run(self) -> Path:
        cfg = self.cfg
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "stop", True))
        start, last_save, last_val = time.time() - self.elapsed, time.time(), time.time()
        sums: dict[str, torch.Tensor] = {}
        count = rollbacks = 0
        streak = torch.zeros((), device=self.device)  # consecutive skipped (non-finite) steps
        skipped = torch.zeros((), device=self.device)  # skipped steps since the last log row
        total = cfg.max_steps if cfg.max_steps < 1_000_000 else None
        self.bar = bar = tqdm(
            total=total, initial=self.step, desc=cfg.stage, unit="it", mininterval=10,
            file=sys.stderr, dynamic_ncols=True,
        )  # fmt: skip
        while not self.stop:
            self.elapsed = time.time() - start
            progress = max(self.step / cfg.max_steps, self.elapsed / 60 / cfg.max_minutes)
            if progress >= 1:
                break
            lr = learning_rate(cfg.lr, progress, cfg.schedule, cfg.decay_at)
            self.charge_rate_as_coded(progress)
            losses, bad = self.train_step(lr)
            streak = (streak + 1) * bad
            skipped = skipped + bad
            for k, v in losses.items():  # summed on the device: no host sync per step
                sums[k] = sums[k] + v.detach() if k in sums else v.detach().clone()
            count += 1
            if self.step % cfg.rollback_after == 0 and streak.item() >= cfg.rollback_after:
                rollbacks += 1
                self.rollback(int(streak), rollbacks)
                sums, count = {}, 0
                streak.zero_()
                continue
            if self.step % cfg.log_every == 0:
                row = {"step": self.step, "minutes": round(self.elapsed / 60, 2), "lr": lr}
                row |= {k: round(float(v) / count, 4) for k, v in sums.items()}
                if skipped_now := int(skipped):
                    row["skipped"] = skipped_now
                skipped.zero_()
                self.write(row)
                bar.set_postfix({k: row[k] for k in list(row)[3:6]}, refresh=False)
                sums, count = {}, 0
            if time.time() - last_save > cfg.checkpoint_minutes * 60:
                self.save()
                last_save = time.time()
            if time.time() - last_val > cfg.validate_minutes * 60:
                self.validation()
                last_val = time.time()
        return self.finish(start)

    def train_step(self, lr: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One optimisation step; ``bad`` (on the device) is 1 when it was skipped."""
        cfg = self.cfg
        self.optimizer.param_groups[0]["lr"] = lr
        x, mask = self.sampler.batch(cfg.batch)
        losses = step_losses(
            self.model, cfg.stage, x, mask, cfg.codec, cfg.balance,
            precision=self.precision, decoders=cfg.decoders,
        )  # fmt: skip
        bad = optimise(self.optimizer, losses, self.main, self.quantiles)  # not applied if bad
        if self.average:
            self.average.update()
        self.step += 1
        self.bar.update()
        return losses, bad

    def charge_rate_as_coded(self, progress: float) -> None:
        """From ``rounded_rate_from`` on, the rate is charged on rounded latents (STE)."""
        start = self.cfg.rounded_rate_from
        rounded = start is not None and progress >= start
        for codec in self.model.latent_codecs():
            if codec.rounded_rate != rounded:
                codec.rounded_rate = rounded
                self.bar.write(f"step {self.step}: rate charged on rounded latents: {rounded}")

    def finish(self, start: float) -> Path:
        self.elapsed = time.time() - start
        self.bar.close()
        self.save()
        self.validation()
        self.log.close()
        if math.isfinite(self.elapsed):
            done = {"step": self.step, "minutes": self.elapsed / 60}
            (self.cfg.out / "done").write_text(json.dumps(done))
        os.sync()
        return self.ckpt_path
