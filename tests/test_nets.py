"""The networks: the conditioned additional codec and configurations of older weight files."""

from __future__ import annotations

import torch
from conftest import TINY

from fusioncodec.nets import CodecConfig, ScalableCodec
from fusioncodec.nets.codecs import AdditionalCodec
from fusioncodec.nets.config import LATENT_CODECS
from fusioncodec.nets.latent import SliceLatentCodec
from fusioncodec.nets.latent_codec import registered


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64)
    y_machine = torch.randn(1, TINY.slices * 64, 4, 4)
    return x, y_machine


def test_conditioning_starts_as_the_plain_encoder() -> None:
    codec = AdditionalCodec(TINY).eval()
    x, y_machine = _inputs()
    with torch.no_grad():
        assert torch.equal(codec.analyze(x, y_machine), codec.g_a(x))


def test_conditioned_encoder_uses_the_machine_latent() -> None:
    codec = AdditionalCodec(TINY).eval()
    torch.nn.init.normal_(codec.condition[-1].weight, std=0.1)
    x, y_machine = _inputs()
    with torch.no_grad():
        a = codec.analyze(x, y_machine)
        b = codec.analyze(x, torch.zeros_like(y_machine))
    assert a.shape == (1, TINY.m * 64, 4, 4)
    assert not torch.allclose(a, b)


def test_entropy_model_is_conditioned_on_the_machine_latent() -> None:
    codec = AdditionalCodec(TINY).eval()
    torch.nn.init.normal_(codec.latent.context[-1].weight, std=0.1)
    x, y_machine = _inputs()
    q = torch.zeros(1)
    with torch.no_grad():
        y = codec.g_a(x)
        _, with_context = codec.latent(y, q, y_machine)
        _, other_context = codec.latent(y, q, torch.zeros_like(y_machine))
    assert not torch.allclose(with_context["y"], other_context["y"])
    assert torch.equal(with_context["z"], other_context["z"])  # z is coded first, alone
    try:
        codec.latent(y, q)
    except ValueError as exc:
        assert "context" in str(exc)
    else:
        raise AssertionError("a conditioned latent codec must refuse a missing context")


def test_condition_gets_gradients_through_the_training_forward() -> None:
    model = ScalableCodec(TINY).train()
    torch.nn.init.normal_(model.additional.condition[-1].weight, std=0.1)
    x, _ = _inputs()
    q = torch.zeros(1)
    out = model(x, q, q)
    (out["x_human"] - x).square().mean().backward()
    first = model.additional.condition[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert all(p.grad is None for p in model.machine.g_a.parameters())  # machine detached


def test_cards_from_before_conditioning_build_the_unconditioned_codec() -> None:
    old = {k: v for k, v in TINY.to_dict().items() if k != "conditioned"}
    config = CodecConfig.from_dict(old)
    assert config.conditioned is False
    assert AdditionalCodec(config).condition is None
    assert CodecConfig.from_dict(TINY.to_dict()).conditioned is True
    names = set(ScalableCodec(config).state_dict())
    assert not any(".condition." in n or ".context." in n for n in names)


def test_the_card_names_the_latent_codec_and_the_registry_builds_it() -> None:
    """Every name a card may give has a class; cards from before the key build "slices"."""
    assert registered() == LATENT_CODECS
    old = {k: v for k, v in TINY.to_dict().items() if k != "latent_codec"}
    assert CodecConfig.from_dict(old).latent_codec == "slices"
    model = ScalableCodec(TINY)
    assert all(isinstance(c, SliceLatentCodec) for c in model.latent_codecs())
    assert len(model.latent_codecs()) == 2


def test_training_reaches_the_latent_codec_only_through_its_contract() -> None:
    """aux_loss is the bottleneck's quantile loss; resample_levels moves the gain levels."""
    latent = ScalableCodec(TINY).machine.latent
    assert torch.equal(latent.aux_loss(), latent.entropy_bottleneck.loss())
    before = latent.gain.log_gain.detach().clone()
    latent.resample_levels(torch.arange(TINY.levels, dtype=torch.float32).flip(0))
    assert torch.equal(latent.gain.log_gain, before.flip(0))
