"""The training levers: bf16 transforms, the decoder-only stage, the rate charged as coded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY
from PIL import Image
from test_train import ENV, _fake_train_root

import fusioncodec
from fusioncodec.cli import cli
from fusioncodec.container import Container
from fusioncodec.errors import FormatError
from fusioncodec.nets import ScalableCodec
from fusioncodec.train import precision
from fusioncodec.train.checkpoint import load_checkpoint
from fusioncodec.train.step import make_optimizer, optimise, step_losses, train_mode, trainable
from fusioncodec.weight_file import identity_of, read_card
from fusioncodec.weights import load

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(n: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.rand(n, 3, size, size).contiguous(memory_format=torch.channels_last)
    return x, (torch.rand(n, 1, size, size) < 0.2).float()


def test_bf16_runs_the_transforms_in_bf16_and_the_entropy_models_in_fp32() -> None:
    torch.manual_seed(0)
    model = ScalableCodec(TINY).to(memory_format=torch.channels_last)
    seen: dict[str, torch.dtype] = {}

    def record(name: str):  # noqa: ANN202
        def hook(_module: torch.nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
            seen.setdefault(name, out.dtype)

        return hook

    watched = {
        "machine analysis": model.machine.g_a[0],
        "machine synthesis": model.machine.g_s[0],
        "human synthesis": model.human.g_s[0],
        "hyper analysis": model.machine.latent.h_a[0],
        "entropy parameters": model.machine.latent.param_nets[0][0],
        "human hyper synthesis": model.additional.latent.h_s[0],
    }
    for name, module in watched.items():
        module.register_forward_hook(record(name))
    x, mask = _batch()
    losses = step_losses(model, "joint", x, mask, TINY, precision="bf16")
    assert seen["machine analysis"] == seen["machine synthesis"] == torch.bfloat16
    assert seen["human synthesis"] == torch.bfloat16
    assert seen["hyper analysis"] == seen["entropy parameters"] == torch.float32
    assert seen["human hyper synthesis"] == torch.float32
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    params = trainable(model, "joint")
    opt, main, quantiles = make_optimizer(model, params, 1e-4)
    assert not optimise(opt, losses, main, quantiles)  # a finite step, applied


def test_precision_default_follows_the_hardware(monkeypatch) -> None:
    cpu = torch.device("cpu")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    assert precision.resolve_precision("auto", cpu) == "fp32"
    assert precision.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.resolve_precision("auto", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be"):
        precision.resolve_precision("fp16", cpu)


def test_rounded_rate_charges_the_coded_rate_with_a_gradient() -> None:
    torch.manual_seed(0)
    codec = ScalableCodec(TINY).machine.latent
    y = (torch.randn(1, codec.channels, 4, 4) * 3).requires_grad_(True)
    q = torch.tensor([3.0])
    codec.eval()
    _, coded = codec(y, q)  # compressai's eval mode: rounded values, no gradient through them
    codec.train()
    torch.manual_seed(1)
    _, noisy = codec(y, q)
    codec.rounded_rate = True
    _, rounded = codec(y, q)
    for k in ("y", "z"):
        assert torch.allclose(rounded[k], coded[k], rtol=1e-5, atol=1e-9)
        assert not torch.allclose(noisy[k], coded[k])
    rounded["y"].log().sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def _frozen_and_trained(before: dict, after: dict, trained: tuple[str, ...]) -> tuple[set, set]:
    changed = {
        k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, before[k])
    }
    return changed, {k for k in changed if not k.startswith(trained)}


@pytest.mark.parametrize(
    ("decoders", "trained"),
    [("human", ("human.g_s.",)), ("human,machine", ("human.g_s.", "machine.g_s."))],
)
def test_decoder_stage_trains_only_decoders_and_keeps_the_bitstream(
    tmp_path: Path, tiny_weights: Path, decoders: str, trained: tuple[str, ...]
) -> None:
    root = _fake_train_root(tmp_path / "data")
    out = tmp_path / "runs" / "decoder"
    args = ["train", "decoder", "--init", str(tiny_weights), "--out", str(out)]
    args += ["--data", str(root), "--steps", "3", "--batch", "2", "--crop", "64"]
    args += ["--decoders", decoders, "--threads", "1", "--ema", "0.5", "--lr", "1e-2"]
    runner = CliRunner()
    result = runner.invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    before = load(tiny_weights).model.state_dict()
    after = load_checkpoint(out / "checkpoint.pt")["model"]
    changed, others = _frozen_and_trained(before, after, trained)
    assert others == set()
    assert {k for k in changed if k.startswith(trained[-1])}, "the decoder did not learn"
    export = ["export", str(out / "checkpoint.pt"), "--kind", "scalable", "--name", "dec"]
    result = runner.invoke(cli, [*export, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    picture = Image.fromarray((np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8))
    weights = (tiny_weights, tmp_path / "dec.safetensors")
    assert load(weights[0]).identity != load(weights[1]).identity
    files = [Container.from_bytes(fusioncodec.load(w).encode(picture)) for w in weights]
    for kind in ("machine", "human"):
        assert files[0].layer(kind).payload == files[1].layer(kind).payload
    # The same coding: the new weights name the old ones and decode their files as their own.
    assert read_card(weights[1])["reads"] == [identity_of(weights[0]).hex()]
    for backend in ("torch", "onnx"):
        new = fusioncodec.load(weights[1], backend=backend)
        for layer in ("machine", "human"):
            theirs, ours = (new.decode(f, layer) for f in files)
            assert np.array_equal(np.asarray(theirs), np.asarray(ours))
    with pytest.raises(FormatError, match="decode it with the matching model"):
        fusioncodec.load(weights[0]).decode(files[1])  # not the other way round
    # a would-be forebear that cannot be read, or codes otherwise, is named, not read
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    again = [
        *export,
        "--out",
        str(tmp_path),
        "-f",
        "--also-reads",
        str(tmp_path / "junk.safetensors"),
    ]
    result = runner.invoke(cli, again)
    assert result.exit_code == 0, result.output
    assert "note: does not decode the files of" in result.output and "junk" in result.output
    assert read_card(weights[1])["reads"] == [identity_of(weights[0]).hex()]


def test_decoder_stage_keeps_frozen_codecs_in_evaluation_mode() -> None:
    model = ScalableCodec(TINY)
    trainable(model, "decoder", ("human",))
    train_mode(model, "decoder", ("human",))
    assert model.human.training and not model.machine.training
    assert not model.additional.latent.entropy_bottleneck.training
    assert all(not p.requires_grad for p in model.machine.parameters())


def test_human_stage_builds_on_the_machine_latent_without_its_synthesis() -> None:
    """The frozen machine codec hands the human stage its decoded latent; its synthesis,
    whose picture no loss of that stage reads, does not run."""
    torch.manual_seed(0)
    model = ScalableCodec(TINY)
    trainable(model, "human")
    train_mode(model, "human")
    latents: list[torch.Tensor] = []
    model.machine.latent.register_forward_hook(lambda _m, _i, out: latents.append(out[0]))
    model.additional.register_forward_hook(lambda _m, inputs, _o: latents.append(inputs[2]))
    synthesis_calls = []
    model.machine.g_s.register_forward_hook(lambda *_: synthesis_calls.append(1))
    x, mask = _batch()
    losses = step_losses(model, "human", x, mask, TINY, quality=3.0)
    assert synthesis_calls == [] and torch.isfinite(losses["loss"])
    machine_latent, handed_on = latents
    assert handed_on is machine_latent and not handed_on.requires_grad
    expected = model.machine(x, torch.full((2,), 3.0))["y_hat"]  # evaluation mode: rounded
    assert torch.equal(handed_on, expected)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ([], "give --init"),
        (["--init", "W", "--human-lambdas", "0.001:0.1"], "keeps the --init weights' rates"),
        (["--init", "W", "--decoders", "human,encoder"], "--decoders takes some of"),
    ],
)
def test_decoder_stage_refuses_what_would_change_the_bitstream(
    tmp_path: Path, tiny_weights: Path, extra: list[str], needle: str
) -> None:
    root = _fake_train_root(tmp_path / "data")
    extra = [str(tiny_weights) if v == "W" else v for v in extra]
    args = ["train", "decoder", "--out", str(tmp_path / "r"), "--data", str(root), *extra]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 1 and needle in result.output, result.output
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
