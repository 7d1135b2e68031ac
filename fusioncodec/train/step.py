"""One training step's losses for each stage, and what each stage trains.

- ``machine``: rate + lambda * MSE on edge pixels only (SA-ICM); crops without edge pixels
  are left out of this loss.
- ``human``: machine codec frozen; additional codec + fusion + human decoder,
  rate of the additional layer + lambda * MSE on the whole image.
- ``joint``: both of the above in one step; the machine latent is detached before fusion,
  so the human loss never moves the machine codec.
- ``baseline``: the single-layer LIC, rate + lambda * MSE (the "standard LIC").
- ``decoder``: encoders and entropy models frozen, so the bitstream does not change; the
  human decoder (and, in ``decoders``, the machine layer's synthesis) learns lambda * MSE
  (edge MSE for the machine layer) on the hard-rounded latents the decoder reads.

Under ``precision="bf16"`` the transforms run under bf16 autocast
(:mod:`fusioncodec.train.precision`); latent codecs and losses stay in float32.

Quality is drawn per crop (:func:`~fusioncodec.train.losses.sample_quality`), and each crop's
loss is weighted so that every quality gets a fair share of the update (:class:`Balance`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fusioncodec.nets import MODEL_KINDS, CodecConfig
from fusioncodec.train.losses import (
    bits_per_pixel,
    edge_mse,
    lambda_at,
    mse,
    psnr,
    quality_weight,
    rd_loss,
    sample_quality,
)
from fusioncodec.train.precision import transforms_precision
from fusioncodec.train.recipe import DEFAULT_BALANCE, DEFAULT_DECODERS, Balance


def build_model(stage: str, codec: CodecConfig) -> nn.Module:
    """The model a stage trains: the baseline, or the two-layer codec (every other stage)."""
    return MODEL_KINDS["baseline" if stage == "baseline" else "scalable"](codec)


def decoder_modules(model: nn.Module, decoders: tuple[str, ...]) -> list[nn.Module]:
    """The synthesis transforms the decoder stage trains: ``human`` (fusion and human
    synthesis) and ``machine`` (the machine layer's synthesis)."""
    return [model.human if d == "human" else model.machine.g_s for d in decoders]


def trainable(
    model: nn.Module, stage: str, decoders: tuple[str, ...] = DEFAULT_DECODERS
) -> list[nn.Parameter]:
    """The parameters ``stage`` trains; the rest is frozen (the human stage freezes the
    machine codec, the decoder stage everything but ``decoders``)."""
    if stage == "machine":
        return list(model.machine.parameters())
    if stage == "human":
        model.machine.requires_grad_(False)
        return [p for n, p in model.named_parameters() if not n.startswith("machine.")]
    if stage == "decoder":
        model.requires_grad_(False)
        modules = decoder_modules(model, decoders)
        return [p for m in modules for p in m.requires_grad_(True).parameters()]
    return list(model.parameters())


def train_mode(model: nn.Module, stage: str, decoders: tuple[str, ...] = DEFAULT_DECODERS) -> None:
    """Training mode for what ``stage`` trains, evaluation mode (rounding, no noise) for the
    frozen codecs whose outputs it trains on."""
    model.train()
    if stage == "human":
        model.machine.eval()
    elif stage == "decoder":
        model.eval()
        for module in decoder_modules(model, decoders):
            module.train()


def step_losses(
    model: nn.Module,
    stage: str,
    x: torch.Tensor,
    mask: torch.Tensor,
    codec: CodecConfig,
    balance: Balance = DEFAULT_BALANCE,
    quality: float | None = None,
    precision: str = "fp32",
    decoders: tuple[str, ...] = DEFAULT_DECODERS,
) -> dict[str, torch.Tensor]:
    """The loss to minimise (``loss`` + ``aux``) and per-batch logs, all on ``x``'s device.

    ``quality``: every crop at this quality index instead of drawn ones (for measurements).
    """
    with transforms_precision(x.device, precision):
        return _losses(model, stage, x, mask, codec, balance, quality, decoders)


def _losses(
    model: nn.Module,
    stage: str,
    x: torch.Tensor,
    mask: torch.Tensor,
    codec: CodecConfig,
    balance: Balance,
    quality: float | None,
    decoders: tuple[str, ...],
) -> dict[str, torch.Tensor]:
    b, _, h, w = x.shape

    def draw() -> torch.Tensor:
        if quality is not None:
            return torch.full((b,), float(quality), device=x.device)
        return sample_quality(b, codec.levels, x.device, balance.ends)

    if stage == "baseline":
        q = draw()
        out = model(x, q)
        bpp, dist = bits_per_pixel(out["likelihoods"], h * w), mse(out["x_hat"].float(), x)
        lam = lambda_at(codec.human_lambdas, q)
        total = rd_loss(bpp, dist, lam, quality_weight(lam, codec.human_lambdas, balance.human))
        aux = sum(c.aux_loss() for c in model.latent_codecs())
        return {"loss": total, "aux": aux, "bpp": bpp.mean(), "psnr": psnr(dist).mean()}
    if stage == "decoder":
        return _decoder_losses(model, x, mask, codec, balance, draw, decoders)
    logs: dict[str, torch.Tensor] = {}
    total = x.new_zeros(())
    q_m = draw()
    if stage in ("machine", "joint"):
        m_out = model.machine(x, q_m)
        m_bpp = bits_per_pixel(m_out["likelihoods"], h * w)
        m_dist = edge_mse(m_out["x_hat"].float(), x, mask)
        lam = lambda_at(codec.machine_lambdas, q_m)
        weight, edge_psnr = _edge_weight(lam, m_dist, mask, codec, balance)
        total = total + rd_loss(m_bpp, m_dist, lam, weight)
        logs |= {"machine_bpp": m_bpp.mean(), "machine_edge_psnr": edge_psnr}
        y_machine = m_out["y_hat"].detach()
    else:
        y_machine = _machine_latent(model, x, q_m)
    if stage in ("human", "joint"):
        q_h = draw()
        y_add, lik = model.additional(x, q_h, y_machine)
        x_h = model.human(y_machine, y_add)
        h_bpp, h_dist = bits_per_pixel(lik, h * w), mse(x_h.float(), x)
        lam = lambda_at(codec.human_lambdas, q_h)
        weight = quality_weight(lam, codec.human_lambdas, balance.human)
        total = total + rd_loss(h_bpp, h_dist, lam, weight)
        logs |= {"human_bpp": h_bpp.mean(), "human_psnr": psnr(h_dist).mean()}
    aux = sum(c.aux_loss() for c in model.latent_codecs())
    return {"loss": total, "aux": aux, **logs}


def _decoder_losses(
    model: nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor,
    codec: CodecConfig,
    balance: Balance,
    draw: Callable[[], torch.Tensor],
    decoders: tuple[str, ...],
) -> dict[str, torch.Tensor]:
    """The decoder stage: distortion only (the frozen encoders fix the rate), on the latents
    the decoder reads (rounded; the machine layer's and the fused one)."""
    q_m, q_h = draw(), draw()
    machine = model.machine
    y_machine = _machine_latent(model, x, q_m)
    with torch.no_grad():
        y_add, _ = model.additional(x, q_h, y_machine)
    total = x.new_zeros(())
    logs: dict[str, torch.Tensor] = {}
    no_rate = x.new_zeros(())
    if "human" in decoders:
        h_dist = mse(model.human(y_machine, y_add).float(), x)
        lam = lambda_at(codec.human_lambdas, q_h)
        weight = quality_weight(lam, codec.human_lambdas, balance.human)
        total = total + rd_loss(no_rate, h_dist, lam, weight)
        logs["human_psnr"] = psnr(h_dist).mean()
    if "machine" in decoders:
        m_dist = edge_mse(machine.g_s(y_machine).float(), x, mask)
        lam = lambda_at(codec.machine_lambdas, q_m)
        weight, logs["machine_edge_psnr"] = _edge_weight(lam, m_dist, mask, codec, balance)
        total = total + rd_loss(no_rate, m_dist, lam, weight)
    return {"loss": total, "aux": no_rate, **logs}


@torch.no_grad()
def _machine_latent(model: nn.Module, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The frozen machine codec's decoded latent (rounded in evaluation mode): what a stage
    that does not train it builds on. Its synthesis does not run."""
    return model.machine.latent(model.machine.g_a(x), q)[0]


def _edge_weight(
    lam: torch.Tensor, m_dist: torch.Tensor, mask: torch.Tensor, codec: CodecConfig, b: Balance
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each crop's weight in the machine loss, and the PSNR over the batch's edge pixels.

    A crop without edge pixels (e.g. from an unannotated photo) has no distortion to weigh
    its rate against: it does not enter the machine loss, nor the PSNR (where it would count
    as 100 dB).
    """
    edge_pixels = mask.flatten(1).sum(1)
    weight = quality_weight(lam, codec.machine_lambdas, b.machine) * (edge_pixels > 0)
    edge_dist = (m_dist * edge_pixels).sum() / edge_pixels.sum().clamp(min=1.0)
    return weight, psnr(edge_dist)


def make_optimizer(
    model: nn.Module, params: list[nn.Parameter], lr: float
) -> tuple[torch.optim.Adam, list[nn.Parameter], list[nn.Parameter]]:
    """Fused Adam over ``params``: (optimizer, main weights, entropy-bottleneck quantiles).

    The quantiles learn at 1e-3 whatever ``lr`` is. Fused: one kernel per step, and it leaves
    weights and moments alone on the device when ``found_inf`` is set (see :func:`optimise`).
    """
    quantiles = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    quantiles = [q for q in quantiles if any(q is p for p in params)]
    main = [p for p in params if all(p is not q for q in quantiles)]
    groups = [{"params": main, "lr": lr}, {"params": quantiles, "lr": 1e-3}]
    return torch.optim.Adam(groups, fused=True), main, quantiles


def optimise(
    optimizer: torch.optim.Adam,
    losses: dict[str, torch.Tensor],
    main: list[nn.Parameter],
    quantiles: list[nn.Parameter],
) -> torch.Tensor:
    """Backward, clip the main gradient to norm 1, step; a non-finite step is not applied.

    Returns the step's "skipped" flag as a device tensor: nothing here waits for the device.
    """
    optimizer.zero_grad(set_to_none=True)
    (losses["loss"] + losses["aux"]).backward()
    norm = torch.nn.utils.clip_grad_norm_(main, 1.0)
    bad = ~torch.isfinite(norm)
    if aux_grads := [q.grad for q in quantiles if q.grad is not None]:
        bad = bad | ~torch.isfinite(torch.nn.utils.get_total_norm(aux_grads))
    optimizer.found_inf = bad.float()  # read by the fused step (as torch's GradScaler does)
    optimizer.step()
    return bad
