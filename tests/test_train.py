"""Training runs end to end on a tiny model: edge targets, losses, checkpoints, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import fusioncodec
from fusioncodec.cli import cli
from fusioncodec.container import Container
from fusioncodec.errors import FormatError
from fusioncodec.train.edges import EDGE_WIDTH, edge_band, label_boundaries, mask_boundaries
from fusioncodec.train.losses import edge_mse, lambda_at
from fusioncodec.weight_file import identity_of, read_card
from fusioncodec.weights import LIKELIHOOD_BOUND

ENV = {"GLIBC_TUNABLES": "set"}  # set: `fcodec train` must not re-exec itself in-process


def train_args(stage: str, out: Path, data: Path, steps: int, *extra: str) -> list[str]:
    """``fcodec train STAGE`` arguments for a tiny model on tiny crops, then ``extra``."""
    where = ["--out", str(out), "--data", str(data), "--steps", str(steps)]
    tiny = ["--batch", "2", "--crop", "64", "--n", "8", "--slices", "2", "--m", "1"]
    return ["train", stage, *where, *tiny, *extra]


def test_label_boundaries_mark_both_sides_of_a_change() -> None:
    labels = np.zeros((6, 6), np.uint16)
    labels[:, 3:] = 1
    edges = label_boundaries(labels)
    assert edges[:, 2].all() and edges[:, 3].all()
    assert not edges[:, [0, 1, 4, 5]].any()


def test_edge_band_has_the_documented_width() -> None:
    thin = np.zeros((21, 21), bool)
    thin[:, 10] = True
    band = edge_band(thin)
    assert band[10].sum() == EDGE_WIDTH
    assert band.dtype == np.uint8


def test_mask_boundaries_union_of_instances() -> None:
    a = np.zeros((10, 10), np.uint8)
    a[2:5, 2:5] = 1
    b = np.zeros((10, 10), np.uint8)
    b[6:9, 6:9] = 1
    edges = mask_boundaries([a, b], (10, 10))
    assert edges[2, 2] and edges[6, 6] and not edges[0, 0] and not edges[3, 3]


def test_edge_mse_ignores_pixels_off_the_mask() -> None:
    x = torch.zeros(1, 3, 4, 4)
    x_hat = x.clone()
    x_hat[..., 0, :] = 1.0  # error only on the first row
    mask = torch.zeros(1, 1, 4, 4)
    assert edge_mse(x_hat, x, mask + 0).item() == 0.0  # empty mask: nothing counted
    mask[..., 1:, :] = 1
    assert edge_mse(x_hat, x, mask).item() == 0.0  # error lies off the edges
    mask[..., 0, :] = 1
    assert edge_mse(x_hat, x, mask).item() == pytest.approx(0.25)


def test_logged_edge_psnr_counts_only_edge_pixels(monkeypatch) -> None:
    """A crop without edges must not enter the logged edge PSNR (it once counted as 100 dB)."""
    from fusioncodec.nets import CodecConfig
    from fusioncodec.train.step import build_model, step_losses

    codec = CodecConfig(n=8, slices=2, m=1)
    model = build_model("machine", codec)
    x = torch.rand(2, 3, 64, 64)
    x_hat = x + 0.1  # MSE 0.01 everywhere: 20 dB on any set of pixels
    fake = {"x_hat": x_hat, "likelihoods": {"y": torch.ones(2, 4)}, "y_hat": torch.zeros(2, 1)}
    monkeypatch.setattr(model.machine, "forward", lambda *_: fake)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 10:20] = 1  # the second crop has no edge pixels
    logs = step_losses(model, "machine", x, mask, codec)
    assert logs["machine_edge_psnr"].item() == pytest.approx(20.0, abs=1e-3)


def test_lambda_interpolates_geometrically() -> None:
    lams = [0.001, 0.01, 0.1]
    got = lambda_at(lams, torch.tensor([0.0, 0.5, 1.0, 2.0, 5.0]))
    assert torch.allclose(got, torch.tensor([0.001, 0.01**0.5 * 0.001**0.5, 0.01, 0.1, 0.1]))


def _fake_train_root(root: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "bsds500" / "train"
    folder.mkdir(parents=True)
    for i in range(3):
        img = (rng.random((70, 90, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.jpg")
        edges = np.zeros((70, 90), np.uint8)
        edges[:, 40] = 255
        Image.fromarray(edges).save(folder / f"{i}_boundaries.png")
    return root


@pytest.mark.parametrize("stage", ["joint", "baseline"])
def test_train_command_runs_checkpoints_and_resumes(tmp_path: Path, stage: str) -> None:
    root = _fake_train_root(tmp_path / "data")
    out = tmp_path / "runs" / stage
    args = train_args(stage, out, root, 2, "--threads", "1")
    runner = CliRunner()
    result = runner.invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    assert "warning: --crop 64 gives the hyper-latent a 1x1 grid" in result.output
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 2
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == [] or all(np.isfinite(row["loss"]) for row in log)
    args[args.index("--steps") + 1] = "3"
    result = runner.invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 3


def test_train_refuses_test_sets(tmp_path: Path) -> None:
    root = _fake_train_root(tmp_path / "kodak")
    result = CliRunner().invoke(
        cli,
        ["train", "machine", "--out", str(tmp_path / "r"), "--data", str(root)],
        env=ENV,
    )
    assert result.exit_code != 0
    assert "test set" in result.output


def test_train_reads_mask_folders_from_fcodec_masks(tmp_path: Path) -> None:
    root = _fake_train_root(tmp_path / "data")
    masks = tmp_path / "masks"
    runner = CliRunner()
    made = runner.invoke(
        cli,
        ["masks", "--source", "boundaries", "--images", str(root / "bsds500"), "--out", str(masks)],
    )
    assert made.exit_code == 0, made.output
    out = tmp_path / "runs" / "machine"
    args = train_args("machine", out, root, 1, "--masks", str(masks))
    result = runner.invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    caches = list(out.parent.glob("edges-*.npz"))
    assert len(caches) == 1
    with np.load(caches[0]) as packed:
        assert len(packed["shapes"]) == 3
        assert packed["masks"].max() == 1 and 0 < packed["masks"].mean() < 0.5


def test_validation_with_the_real_coder_and_export(tmp_path: Path) -> None:
    from fusioncodec.codec import Codec
    from fusioncodec.weights import load

    root = _fake_train_root(tmp_path / "data")
    val = tmp_path / "val"
    val.mkdir()
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(val / "a.png")
    out = tmp_path / "runs" / "joint"
    runner = CliRunner()
    args = train_args("joint", out, root, 2, "--val", str(val), "--validate-minutes", "0")
    result = runner.invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    val_rows = [r for r in rows if "val_q1_bpp" in r]
    assert val_rows and all(r["val_q1_bpp"] > 0 and r["val_q8_psnr"] > 0 for r in val_rows)

    models = tmp_path / "models"
    export = ["export", str(out / "checkpoint.pt"), "--kind", "scalable", "--name", "t1"]
    result = runner.invoke(cli, [*export, "--out", str(models)])
    assert result.exit_code == 0, result.output
    card = json.loads((models / "t1.json").read_text())
    assert card["training"]["steps"] == 2 and card["config"]["m"] == 1
    codec = Codec(load(models / "t1.safetensors"), "cpu")
    image = Image.open(val / "a.png")
    assert codec.decode(codec.encode(image), "human").size == image.size
    again = runner.invoke(cli, [*export, "--out", str(models)])
    assert again.exit_code == 1 and "exists" in again.output


def test_validation_refuses_test_sets(tmp_path: Path) -> None:
    root = _fake_train_root(tmp_path / "data")
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    result = CliRunner().invoke(
        cli,
        ["train", "joint", "--out", str(tmp_path / "r"), "--data", str(root), "--val", str(kodak)],
        env=ENV,
    )
    assert result.exit_code == 1 and "test set" in result.output


def test_weights_only_checkpoint_through_shards_resumes(tmp_path: Path) -> None:
    """scripts/gpu/checkpoint_shards.py: split (fp16, no optimizer), join, then resume training."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu" / "checkpoint_shards.py"
    spec = importlib.util.spec_from_file_location("checkpoint_shards", script)
    shards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shards)

    root = _fake_train_root(tmp_path / "data")
    out = tmp_path / "runs" / "joint"
    runner = CliRunner()
    result = runner.invoke(cli, train_args("joint", out, root, 2, "--threads", "1"), env=ENV)
    assert result.exit_code == 0, result.output
    original = torch.load(out / "checkpoint.pt", weights_only=False)
    shards.split(out / "checkpoint.pt", tmp_path / "moved", "joint")
    resumed = tmp_path / "runs" / "resumed"
    shards.join(tmp_path / "moved", "joint", resumed / "checkpoint.pt")
    joined = torch.load(resumed / "checkpoint.pt", weights_only=False)
    assert joined["optimizer"] is None and joined["step"] == 2
    assert original["ema"] is not None  # the moving average (on by default) is what travels
    for name, tensor in original["ema"].items():
        small = tensor.numel() <= 16  # bounds and other constants travel exactly
        exact = name.endswith("quantiles") or not tensor.is_floating_point() or small
        want = tensor if exact else tensor.half().float()
        if name.endswith(LIKELIHOOD_BOUND):
            assert joined["model"][name].item() == pytest.approx(1e-9), name
        assert torch.equal(joined["model"][name], want.to(joined["model"][name].dtype)), name
    assert all(torch.equal(joined["ema"][k], v) for k, v in joined["model"].items())
    args = train_args("joint", resumed, root, 3, "--threads", "1")
    result = runner.invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    assert torch.load(resumed / "checkpoint.pt", weights_only=False)["step"] == 3


def test_non_finite_steps_are_skipped_not_applied(tmp_path: Path, monkeypatch) -> None:
    from fusioncodec.train import loop

    real, real_train = loop.step_losses, loop.train
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] in (2, 3):  # two poisoned batches
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    def logged_every_step(cfg: loop.TrainConfig) -> Path:
        cfg.log_every = 1
        return real_train(cfg)

    monkeypatch.setattr(loop, "step_losses", sometimes_nan)
    monkeypatch.setattr(loop, "train", logged_every_step)
    root = _fake_train_root(tmp_path / "data")
    out = tmp_path / "runs" / "joint"
    result = CliRunner().invoke(cli, train_args("joint", out, root, 4, "--threads", "1"), env=ENV)
    assert result.exit_code == 0, result.output
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4 and calls["n"] == 4
    # the fused optimizer applied only the two finite steps (its step count is per update)
    assert {float(v["step"]) for v in state["optimizer"]["state"].values()} == {2.0}
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r.get("skipped", 0) for r in rows if "loss" in r] == [0, 1, 1, 0]


def _export_stage1(runner: CliRunner, root: Path, tmp_path: Path) -> None:
    """One machine step exported as ``tmp_path/stage1.safetensors`` (shipped-style weights)."""
    first = tmp_path / "runs" / "machine"
    result = runner.invoke(cli, train_args("machine", first, root, 1, "--threads", "1"), env=ENV)
    assert result.exit_code == 0, result.output
    export = ["export", str(first / "checkpoint.pt"), "--kind", "scalable", "--name", "stage1"]
    assert runner.invoke(cli, [*export, "--out", str(tmp_path)]).exit_code == 0


def test_stage_two_from_exported_weights_resumes_and_exports(tmp_path: Path) -> None:
    """--init from shipped-style weights (which hold CDF tables): resume and export work."""
    root = _fake_train_root(tmp_path / "data")
    runner = CliRunner()
    _export_stage1(runner, root, tmp_path)
    human = tmp_path / "runs" / "human"
    init = ["--init", str(tmp_path / "stage1.safetensors"), "--threads", "1"]
    for steps in (1, 2):  # the second run resumes from a checkpoint that holds CDF tables
        result = runner.invoke(cli, train_args("human", human, root, steps, *init), env=ENV)
        assert result.exit_code == 0, result.output
    assert torch.load(human / "checkpoint.pt", weights_only=False)["step"] == 2
    export = ["export", str(human / "checkpoint.pt"), "--kind", "scalable", "--name", "stage2"]
    result = runner.invoke(cli, [*export, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    # a stage that trains coding tensors codes other files: it reads no forebear's whole
    # files, but the human stage leaves the machine coding as it was: it reads that layer
    weights = (tmp_path / "stage1.safetensors", tmp_path / "stage2.safetensors")
    card = read_card(weights[1])
    assert "reads" not in card and card["machine_reads"] == [identity_of(weights[0]).hex()]
    assert "decodes the machine layer of the files of" in result.output
    picture = Image.fromarray((np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8))
    old = fusioncodec.load(weights[0]).encode(picture)
    for backend in ("torch", "onnx"):
        new = fusioncodec.load(weights[1], backend=backend)
        ours = np.asarray(fusioncodec.load(weights[0]).decode(old, "machine"))
        assert np.array_equal(np.asarray(new.decode(old, "machine")), ours)
        for layer in ("human", None):  # the best the file holds is refused, not downgraded
            with pytest.raises(FormatError, match="only its machine layer: --layer machine"):
                new.decode(old, layer)
    with pytest.raises(FormatError, match="only its machine layer"):
        new.decode_latent(Container.from_bytes(old), "human")
    with pytest.raises(FormatError, match="decode it with the matching model"):
        fusioncodec.load(weights[0]).decode(fusioncodec.load(weights[1]).encode(picture), "machine")
    # the command line: one line, exit 1, no output; the machine layer decodes
    (tmp_path / "old.fcb").write_bytes(old)
    decode = ["decode", str(tmp_path / "old.fcb"), "--weights", str(weights[1]), "-o"]
    result = runner.invoke(cli, [*decode, str(tmp_path / "best.png")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "--layer machine" in result.output and not (tmp_path / "best.png").exists()
    result = runner.invoke(cli, [*decode, str(tmp_path / "m.png"), "--layer", "machine"])
    assert result.exit_code == 0 and (tmp_path / "m.png").is_file(), result.output
    # a decoder update of this update reads its files and, still, the machine layer of stage1's
    decoder = tmp_path / "runs" / "decoder"
    args = train_args("decoder", decoder, root, 1, "--init", str(weights[1]), "--threads", "1")
    assert runner.invoke(cli, args, env=ENV).exit_code == 0
    export = ["export", str(decoder / "checkpoint.pt"), "--kind", "scalable", "--name", "stage3"]
    assert runner.invoke(cli, [*export, "--out", str(tmp_path)]).exit_code == 0
    card = read_card(tmp_path / "stage3.safetensors")
    assert card["reads"] == [identity_of(weights[1]).hex()]
    assert card["machine_reads"] == [identity_of(weights[0]).hex()]
    # converting weights remakes the integer networks: no claim to read anything is kept
    convert = ["export", str(tmp_path / "stage3.safetensors"), "--kind", "scalable"]
    assert runner.invoke(cli, [*convert, "--name", "conv", "--out", str(tmp_path)]).exit_code == 0
    assert not {"reads", "machine_reads"} & read_card(tmp_path / "conv.safetensors").keys()


def test_lambda_positions_interpolate_and_extrapolate_in_log_lambda() -> None:
    from fusioncodec.nets.layers import lambda_positions

    trained = [0.001, 0.01, 0.1]
    got = lambda_positions(trained, [0.001, 0.01**0.5 * 0.1**0.5, 0.1, 0.0001, 1.0])
    assert torch.allclose(got, torch.tensor([0.0, 1.5, 2.0, -1.0, 3.0]), atol=1e-6)


def test_gain_unit_resample_moves_levels_to_new_positions() -> None:
    from fusioncodec.nets.layers import GainUnit

    unit = GainUnit(2, 3, torch.tensor([-1.0, 0.0, 2.0]))
    before = unit.gain(torch.tensor([0.5, 1.5])).flatten()
    unit.resample(torch.tensor([-1.0, 0.5, 1.5]))
    assert torch.allclose(unit.log_gain[:, 0], torch.tensor([-2.0, -0.5, 1.0]))
    assert torch.allclose(unit.log_inverse[:, 0], torch.tensor([2.0, 0.5, -1.0]))
    assert torch.allclose(unit.gain(torch.tensor([1.0, 2.0])).flatten(), before)


def test_new_machine_lambda_range_warm_starts_from_init_and_survives_resume(
    tmp_path: Path,
) -> None:
    from safetensors.torch import load_file

    from fusioncodec.nets.config import geometric
    from fusioncodec.nets.layers import lambda_positions

    root = _fake_train_root(tmp_path / "data")
    runner = CliRunner()
    _export_stage1(runner, root, tmp_path)
    trained = load_file(str(tmp_path / "stage1.safetensors"))["machine.latent.gain.log_gain"]
    run = tmp_path / "runs" / "low"
    low = ["--init", str(tmp_path / "stage1.safetensors"), "--machine-lambdas", "0.0001:0.03"]
    args = train_args("joint", run, root, 1, *low, "--threads", "1")
    result = runner.invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    wanted = geometric(0.0001, 0.03, 8)
    assert state["config"]["codec"]["machine_lambdas"] == wanted
    assert state["config"]["codec"]["human_lambdas"] == geometric(0.0013, 0.1, 8)
    # Level i now holds the trained gain at the new lambda's place in the old table.
    where = lambda_positions(geometric(0.0005, 0.03, 8), wanted)
    assert where[0] < 0 and abs(float(where[-1]) - 7) < 1e-5
    lo = where.floor().clamp(0, 6).long()
    t = (where - lo)[:, None]
    expect = trained.float()[lo] * (1 - t) + trained.float()[lo + 1] * t
    got = state["model"]["machine.latent.gain.log_gain"]
    assert torch.allclose(got, expect, atol=2e-3)  # one Adam step (lr 2e-4) from the start
    assert not torch.allclose(got, trained.float(), atol=0.05)
    # Resumed without the option, the run keeps the lambdas it was started with.
    args = train_args("joint", run, root, 2, "--threads", "1")
    result = runner.invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and state["config"]["codec"]["machine_lambdas"] == wanted
    # A new run from weights with that range keeps it (and its gains) without the option.
    export = ["export", str(run / "checkpoint.pt"), "--kind", "scalable", "--name", "low"]
    assert runner.invoke(cli, [*export, "--out", str(tmp_path)]).exit_code == 0
    low_gains = load_file(str(tmp_path / "low.safetensors"))["machine.latent.gain.log_gain"]
    again = tmp_path / "runs" / "again"
    args = train_args("human", again, root, 1, "--init", str(tmp_path / "low.safetensors"))
    result = runner.invoke(cli, [*args, "--threads", "1"], env=ENV)
    assert result.exit_code == 0, result.output
    state = torch.load(again / "checkpoint.pt", weights_only=False)
    assert state["config"]["codec"]["machine_lambdas"] == wanted
    assert torch.equal(state["model"]["machine.latent.gain.log_gain"], low_gains.float())


@pytest.mark.parametrize("value", ["0.1", "0.03:0.0001", "a:b", "0:0.1", "nan:1"])
def test_bad_lambda_range_is_a_one_line_error(tmp_path: Path, value: str) -> None:
    root = _fake_train_root(tmp_path / "data")
    args = train_args("machine", tmp_path / "r", root, 1, "--machine-lambdas", value)
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code != 0
    assert "--machine-lambdas" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "option", [["--steps", "0"], ["--batch", "0"], ["--crop", "100"], ["--minutes", "0"]]
)
def test_bad_training_sizes_are_refused_before_training(tmp_path: Path, option: list) -> None:
    root = _fake_train_root(tmp_path / "data")
    args = train_args("machine", tmp_path / "r", root, 1)
    flag = option[0]
    if flag in args:
        args[args.index(flag) + 1] = option[1]
    else:
        args += option
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code != 0
    assert flag in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_decay_at_sets_when_the_lr_drops(tmp_path: Path, monkeypatch) -> None:
    import fusioncodec.train.loop as loop

    root = _fake_train_root(tmp_path / "data")
    seen = []
    real = loop.train

    def logged_every_step(cfg: loop.TrainConfig) -> Path:
        seen.append(cfg.decay_at)
        cfg.log_every = 1
        return real(cfg)

    monkeypatch.setattr(loop, "train", logged_every_step)
    out = tmp_path / "r"
    args = train_args(
        "machine",
        out,
        root,
        4,
        "--threads",
        "1",
        "--lr",
        "1e-3",
        "--schedule",
        "step",
        "--decay-at",
        "0.5",
    )
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    assert seen == [0.5]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in rows if "lr" in row] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])


def _poisoning(monkeypatch, poison_calls, rollback_after: int, max_rollbacks: int) -> dict:
    """Break the weights (NaN) on the given calls of the step; small rollback settings."""
    from fusioncodec.train import loop

    real_step, real_train = loop.step_losses, loop.train
    calls = {"n": 0}

    def poisoned(model, *args, **kwargs):
        calls["n"] += 1
        if poison_calls(calls["n"]):
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return real_step(model, *args, **kwargs)

    def configured(cfg):
        cfg.rollback_after, cfg.max_rollbacks = rollback_after, max_rollbacks
        return real_train(cfg)

    monkeypatch.setattr(loop, "step_losses", poisoned)
    monkeypatch.setattr(loop, "train", configured)
    return calls


def test_broken_weights_roll_back_to_the_last_good_state(tmp_path: Path, monkeypatch) -> None:
    calls = _poisoning(monkeypatch, lambda n: n == 2, rollback_after=3, max_rollbacks=1)
    root = _fake_train_root(tmp_path / "data")
    out = tmp_path / "runs" / "joint"
    result = CliRunner().invoke(cli, train_args("joint", out, root, 8, "--threads", "1"), env=ENV)
    assert result.exit_code == 0, result.output
    # step 1 fine; NaN weights from call 2 make every later step non-finite; the host looks
    # every 3 steps: 2 bad at step 3, 5 bad at step 6 -> back to step 0; then 8 good steps
    assert calls["n"] == 6 + 8
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 8
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"step": 0, "rollback": 1} in [
        {k: r[k] for k in ("step", "rollback")} for r in rows if "rollback" in r
    ]


def test_repeated_divergence_stops_with_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    _poisoning(monkeypatch, lambda n: n >= 2, rollback_after=2, max_rollbacks=1)
    root = _fake_train_root(tmp_path / "data")
    out = tmp_path / "runs" / "joint"
    result = CliRunner().invoke(cli, train_args("joint", out, root, 5, "--threads", "1"), env=ENV)
    assert result.exit_code != 0
    assert "diverged 2 times" in result.output and "Traceback" not in result.output
    assert not (out / "done").exists()


def test_weight_average_moves_by_one_minus_decay_and_leaves_the_model_alone() -> None:
    from torch import nn

    from fusioncodec.train.loop import WeightAverage

    model = nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    average = WeightAverage(model, 0.9, warmup=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update()
    for before, now, avg in zip(start, model.parameters(), average.model.parameters(), strict=True):
        assert torch.allclose(avg, before + 0.1) and torch.allclose(now, before + 1.0)
        assert not avg.requires_grad
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, 1.0)


def test_weight_average_keeps_frozen_parameters_bit_for_bit() -> None:
    """lerp(-0.0, -0.0, w) is +0.0: a frozen tensor averaged with itself would change its
    bytes, and a decoder-stage export would no longer see its coding tensors as the init's."""
    from torch import nn

    from fusioncodec.train.loop import WeightAverage

    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.bias.copy_(torch.tensor([-0.0, 1.0]))
    model.bias.requires_grad_(False)
    average = WeightAverage(model, 0.9, warmup=False)
    average.update()
    assert torch.equal(average.model.bias, model.bias)
    assert torch.signbit(average.model.bias[0])


def test_ema_is_checkpointed_resumed_and_exported(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from fusioncodec.train.schedule import average_decay

    root = _fake_train_root(tmp_path / "data")
    out = tmp_path / "runs" / "joint"
    runner = CliRunner()
    args = train_args("joint", out, root, 2, "--threads", "1", "--ema", "0.5")
    assert (result := runner.invoke(cli, args, env=ENV)).exit_code == 0, result.output
    first = torch.load(out / "checkpoint.pt", weights_only=False)
    name = "machine.g_a.0.weight"
    assert not torch.equal(first["ema"][name], first["model"][name])

    assert first["ema_updates"] == 2
    args[args.index("--steps") + 1] = "3"  # resumed: one more step, the average carries on
    assert (result := runner.invoke(cli, args, env=ENV)).exit_code == 0, result.output
    second = torch.load(out / "checkpoint.pt", weights_only=False)
    d = average_decay(0.5, 2)  # the third update, still warming up: 3/12
    want = d * first["ema"][name] + (1 - d) * second["model"][name]
    assert torch.allclose(second["ema"][name], want, atol=1e-6)

    export = ["export", str(out / "checkpoint.pt"), "--kind", "scalable", "--name", "avg"]
    assert runner.invoke(cli, [*export, "--out", str(tmp_path)]).exit_code == 0
    card = json.loads((tmp_path / "avg.json").read_text())
    assert card["training"]["weights"] == "moving average, decay 0.5"
    shipped = load_file(str(tmp_path / "avg.safetensors"))[name].float()
    assert torch.equal(shipped, second["ema"][name].half().float())


class _Payload:
    """Pickles to a call that writes a marker file: what a hostile checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "code ran"))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"model": {}, "config": {}, "step": 0, "elapsed": 0.0, "x": _Payload(marker)}, path)
    return path


def test_export_never_runs_code_from_a_checkpoint(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fusioncodec.cli import cli

    marker = tmp_path / "pwned"
    ckpt = hostile_checkpoint(tmp_path / "checkpoint.pt", marker)
    args = ["export", str(ckpt), "--kind", "scalable", "--name", "x", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "cannot be read safely" in result.output
    assert not marker.exists()


def test_resume_never_runs_code_from_a_checkpoint(tmp_path: Path) -> None:
    from fusioncodec.train.checkpoint import CheckpointError, load_checkpoint

    marker = tmp_path / "pwned"
    ckpt = hostile_checkpoint(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_checkpoints_from_before_store_paths_still_load(tmp_path: Path) -> None:
    from fusioncodec.train.checkpoint import load_checkpoint

    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.ones(2)}, "config": {"out": tmp_path / "run"}}, path)
    assert load_checkpoint(path)["config"]["out"] == tmp_path / "run"
