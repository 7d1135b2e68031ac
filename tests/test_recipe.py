"""The training recipe: shrunk pictures, crops on the device, balanced qualities, schedule."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fusioncodec.cli import cli
from fusioncodec.nets import CodecConfig
from fusioncodec.train.balance import fit_exponent
from fusioncodec.train.data import (
    CropSampler,
    Picture,
    annotated_sources,
    held_out_images,
    pack,
    pictures,
    scale_range,
    shrink,
    split_held_out,
)
from fusioncodec.train.losses import lambda_at, quality_weight, sample_quality
from fusioncodec.train.recipe import HELD_OUT_EVERY, Balance
from fusioncodec.train.schedule import FLOOR_LR, average_decay, learning_rate
from fusioncodec.train.step import build_model, make_optimizer, optimise, step_losses, trainable

ENV = {"GLIBC_TUNABLES": "set"}
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "gpu"


def _script(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _train_root(root: Path, bsds: int = 3, sun: int = 12, size: tuple = (70, 90)) -> Path:
    """BSDS500-style photos with boundary maps and sun80-style photos without."""
    rng = np.random.default_rng(0)
    (root / "bsds500" / "train").mkdir(parents=True)
    (root / "sun80").mkdir()
    for i in range(bsds):
        img = (rng.random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(root / "bsds500" / "train" / f"{i}.jpg")
        edges = np.zeros(size, np.uint8)
        edges[:, size[1] // 2] = 255
        Image.fromarray(edges).save(root / "bsds500" / "train" / f"{i}_boundaries.png")
    for i in range(sun):
        img = (rng.random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(root / "sun80" / f"photo_{i:02d}.jpg")
    return root


# --------------------------------------------------------------------------- data


def test_scale_range_keeps_a_crop_and_never_enlarges() -> None:
    assert scale_range(1000, 256, (0.5, 0.9)) == (0.5, 0.9)
    lo, hi = scale_range(321, 256, (0.5, 0.9))  # a BSDS500 photo at crop 256
    assert lo == pytest.approx(256 / 321) and hi == 0.9
    assert scale_range(270, 256, (0.5, 0.9)) == pytest.approx((256 / 270, 256 / 270))
    assert scale_range(200, 256, (0.5, 0.9)) == (1.0, 1.0)  # too small: left out later
    assert scale_range(1000, 256, (1.0, 1.0)) == (1.0, 1.0)


def test_shrinking_filters_out_what_the_smaller_grid_cannot_hold() -> None:
    """A 1-pixel checkerboard shrunk by 2 is flat grey (antialiased), not a subsample."""
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    image = torch.from_numpy(np.repeat(board[..., None], 3, -1))
    edges = torch.zeros(64, 64, dtype=torch.uint8)
    edges[:, 31] = 255
    small = shrink(image, edges, 0.5)
    assert small.image.shape == (32, 32, 3) and small.image.dtype == torch.uint8
    assert (small.image[1:-1, 1:-1].int() - 127).abs().max() <= 1  # borders: edge padding
    column = small.edges[0]
    assert 0 < column.max() < 255 and column.sum() > 0  # the thin edge is a soft weight now


def test_pictures_are_shrunk_copies_drawn_from_the_seed() -> None:
    rng = np.random.default_rng(1)
    items = [(rng.integers(0, 255, (400, 300, 3), dtype=np.uint8), np.ones((400, 300), np.uint8))]
    items.append((rng.integers(0, 255, (60, 60, 3), dtype=np.uint8), np.ones((60, 60), np.uint8)))
    packed = pack(items)
    got = pictures(packed, 128, (0.5, 0.9), versions=4, seed=3)
    assert len(got) == 4  # the 60 px picture is too small for a 128 crop
    factors = sorted(p.edges.shape[1] / 300 for p in got)
    assert all(0.5 - 0.01 <= f <= 0.9 + 0.01 for f in factors)
    assert len({round(f, 2) for f in factors}) == 4  # one factor per stratum
    again = pictures(packed, 128, (0.5, 0.9), versions=4, seed=3)
    assert all(torch.equal(a.image, b.image) for a, b in zip(got, again, strict=True))
    same = pictures(packed, 128, (1.0, 1.0))
    assert len(same) == 1 and np.array_equal(same[0].image.numpy(), items[0][0])


def test_crops_come_from_the_pictures_flipped_or_not() -> None:
    rng = np.random.default_rng(2)
    image = torch.from_numpy(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    edges = torch.zeros(40, 50, dtype=torch.uint8)
    edges[5:9] = 255
    sampler = CropSampler([Picture(image, edges)], 16, seed=0)
    x, m = sampler.batch(24)
    assert x.shape == (24, 3, 16, 16) and m.shape == (24, 1, 16, 16)
    assert x.is_contiguous(memory_format=torch.channels_last)
    source = image.permute(2, 0, 1).float() / 255
    kinds = set()
    for crop in x:
        found = None
        for top in range(40 - 16 + 1):
            for left in range(50 - 16 + 1):
                window = source[:, top : top + 16, left : left + 16]
                if torch.equal(crop, window):
                    found = "as is"
                elif torch.equal(crop, window.flip(-1)):
                    found = "mirrored"
        assert found is not None
        kinds.add(found)
    assert kinds == {"as is", "mirrored"}
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    sampler.reseed(5)
    first = sampler.batch(4)[0]
    sampler.reseed(5)
    assert torch.equal(first, sampler.batch(4)[0])


def test_the_machine_stage_samples_only_annotated_pictures() -> None:
    plain = Picture(
        torch.zeros(32, 32, 3, dtype=torch.uint8), torch.zeros(32, 32, dtype=torch.uint8)
    )
    annotated = Picture(
        torch.full((32, 32, 3), 9, dtype=torch.uint8), torch.ones(32, 32, dtype=torch.uint8)
    )
    assert len(CropSampler([plain, annotated], 16)) == 2
    sampler = CropSampler([plain, annotated], 16, edges_only=True)
    assert len(sampler) == 1 and (sampler.batch(8)[0] > 0).all()
    with pytest.raises(ValueError, match="at least 64x64"):
        CropSampler([plain], 64)


def test_every_tenth_photo_is_held_out_and_never_trained_on(tmp_path: Path) -> None:
    root = _train_root(tmp_path / "train", sun=25)
    held = held_out_images(root)
    assert [p.name for p in held] == ["photo_00.jpg", "photo_10.jpg", "photo_20.jpg"]
    assert HELD_OUT_EVERY == 10
    items = annotated_sources(root)
    trained = {path.name for _, path, _ in items}
    assert not trained & {p.name for p in held}
    assert {s for s, _, _ in items} == {"bsds500", "sun80"}
    assert all(not m.any() for s, _, m in items if s == "sun80")
    assert all(m.any() for s, _, m in items if s == "bsds500")
    assert {s for s, _, _ in annotated_sources(root, sources=("bsds500",))} == {"bsds500"}
    with pytest.raises(ValueError, match="unknown training sources"):
        annotated_sources(root, sources=("imagenet",))
    photos = sorted((root / "sun80").iterdir())
    train, held_again = split_held_out(list(reversed(photos)))  # the order given does not matter
    assert held_again == held and len(train) == 22


# --------------------------------------------------------------------------- qualities


def test_with_ends_every_quality_level_gets_the_same_share() -> None:
    torch.manual_seed(0)
    q = sample_quality(160_000, 8, "cpu", ends=True)
    assert q.min() == 0 and q.max() == 7
    shares = torch.bincount(q.round().long(), minlength=8) / len(q)
    assert torch.allclose(shares, torch.full((8,), 1 / 8), atol=0.005)
    old = torch.bincount(sample_quality(160_000, 8, "cpu", ends=False).round().long()) / 160_000
    assert old[0] == pytest.approx(1 / 14, abs=0.005) and old[3] == pytest.approx(1 / 7, abs=0.005)


def test_quality_weight_evens_out_lambda_to_the_fitted_power() -> None:
    lambdas = [0.001, 0.01, 0.1]
    lam = torch.tensor([0.001, 0.01, 0.1])
    assert torch.allclose(quality_weight(lam, lambdas, 0.0), torch.ones(3))
    w = quality_weight(lam, lambdas, 0.5)
    assert w[1].item() == pytest.approx(1.0)  # the middle of the range keeps its loss
    assert (w[0] / w[2]).item() == pytest.approx(10.0)  # (100x lambda) ** 0.5


def test_fit_exponent_recovers_the_power_of_the_gradient_norms() -> None:
    lambdas = [0.0013, 0.1]
    lam = lambda_at(lambdas, torch.arange(8, dtype=torch.float32)).double().numpy()
    norms = np.stack([3.0 * lam**0.8] * 4, axis=1) * np.array([1.0, 1.1, 0.9, 1.0])
    assert fit_exponent(lambdas, norms) == pytest.approx(0.8, abs=1e-6)


def test_crops_without_edges_stay_out_of_the_machine_loss(monkeypatch) -> None:
    codec = CodecConfig(n=8, slices=2, m=1)
    model = build_model("machine", codec)
    x = torch.rand(2, 3, 64, 64)
    fake = {
        "x_hat": x + 0.1,
        "likelihoods": {"y": torch.full((2, 4), 0.5)},  # 4 bits per crop
        "y_hat": torch.zeros(2, 1),
    }
    monkeypatch.setattr(model.machine, "forward", lambda *_: fake)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 10:20] = 1
    balance = Balance.none()
    got = step_losses(model, "machine", x, mask, codec, balance, quality=0)["loss"]
    lam = codec.machine_lambdas[0]
    one = 4 / (64 * 64) + lam * 255**2 * 0.01  # the first crop's rate + distortion
    assert got.item() == pytest.approx(one / 2, rel=1e-4)  # mean over 2, second crop weighs 0


def test_a_non_finite_step_leaves_weights_and_moments_alone() -> None:
    codec = CodecConfig(n=8, slices=2, m=1)
    model = build_model("baseline", codec)
    optimizer, main, quantiles = make_optimizer(model, trainable(model, "baseline"), 1e-3)
    x, mask = torch.rand(2, 3, 64, 64), torch.ones(2, 1, 64, 64)
    bad = optimise(optimizer, step_losses(model, "baseline", x, mask, codec), main, quantiles)
    assert not bad and all(float(optimizer.state[p]["step"]) == 1 for p in main)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = step_losses(model, "baseline", x, mask, codec)
    losses["loss"] = losses["loss"] * float("inf")
    assert optimise(optimizer, losses, main, quantiles)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(float(optimizer.state[p]["step"]) == 1 for p in main)


# --------------------------------------------------------------------------- schedule


def test_cosine_schedule_runs_from_the_peak_to_the_floor() -> None:
    assert learning_rate(1e-4, 0.0) == pytest.approx(1e-4)
    assert learning_rate(1e-4, 1.0) == pytest.approx(FLOOR_LR)
    assert learning_rate(1e-4, 0.5) == pytest.approx((1e-4 + FLOOR_LR) / 2)
    values = [learning_rate(1e-4, p / 10) for p in range(11)]
    assert values == sorted(values, reverse=True)
    assert learning_rate(1e-4, 0.79, "step") == 1e-4
    assert learning_rate(1e-4, 0.8, "step") == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="schedule"):
        learning_rate(1e-4, 0.5, "linear")


def test_moving_average_warms_up_then_keeps_its_decay() -> None:
    assert average_decay(0.999, 0) == pytest.approx(0.1)
    assert average_decay(0.999, 90) == pytest.approx(0.91)
    assert average_decay(0.999, 100_000) == 0.999
    assert math.isclose(average_decay(0.5, 2), 0.25)


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--scale", "0.9:0.5"], "--scale takes LO:HI"),
        (["--scale", "x"], "--scale takes LO:HI"),
        (["--balance", "-1"], "--balance takes H[:M]"),
        (["--balance", "a:b"], "--balance takes H[:M]"),
        (["--sources", "imagenet"], "--sources takes some of bsds500,coco,sun80"),
    ],
)
def test_bad_recipe_options_are_one_line_errors(tmp_path: Path, option: list, message: str) -> None:
    root = _train_root(tmp_path / "train")
    args = ["train", "baseline", "--out", str(tmp_path / "r"), "--data", str(root), *option]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 2 or result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_held_out_validation_and_the_recipe_in_the_model_card(tmp_path: Path) -> None:
    import json

    root = _train_root(tmp_path / "train")
    out = tmp_path / "r"
    tiny = ["--batch", "2", "--crop", "64", "--n", "8", "--slices", "2", "--m", "1"]
    args = ["train", "baseline", "--out", str(out), "--data", str(root), "--steps", "2", *tiny]
    args += ["--threads", "1", "--val", "held-out", "--val-count", "1", "--seed", "4"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("val_q1_psnr" in r for r in rows)
    export = ["export", str(out / "checkpoint.pt"), "--kind", "baseline", "--name", "c"]
    assert CliRunner().invoke(cli, [*export, "--out", str(tmp_path)]).exit_code == 0
    training = json.loads((tmp_path / "c.json").read_text())["training"]
    assert training["crops_seen"] == 4
    assert training["recipe"]["scale"] == [0.5, 0.9] and training["recipe"]["seed"] == 4
    assert training["recipe"]["quality_balance"] == {"human": 0.7, "machine": 0.65, "ends": True}
    assert training["recipe"]["schedule"] == "cosine"
    assert training["weights"] == "moving average, decay 0.999"


# --------------------------------------------------------------------------- GPU pack


def test_gpu_pack_copies_sources_unchanged_within_its_budget(tmp_path: Path, monkeypatch) -> None:
    root = _train_root(tmp_path / "train", bsds=6, sun=20, size=(200, 260))
    out = tmp_path / "pack"
    packer = _script("pack_training_set")
    sizes = [p.stat().st_size for p in (root / "bsds500" / "train").glob("*.jpg")]
    budget = (sum(sizes) * 1.6 + sum(p.stat().st_size for p in held_out_images(root))) / 2**20
    argv = ["pack", "--data", str(root), "--out", str(out), "--budget-mib", f"{budget:.4f}"]
    monkeypatch.setattr(sys, "argv", argv)
    packer.main()
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert total <= budget * 2**20
    rows = [__import__("json").loads(line) for line in (out / "train" / "manifest.jsonl").open()]
    assert {r["source"] for r in rows} == {"bsds500", "sun80"}  # taken in turn from each
    assert 0 < len(rows) < 6 + 18
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    sources = {digest(p) for p in root.rglob("*.jpg")}
    assert all(digest(out / "train" / r["image"]) in sources for r in rows)  # byte for byte
    held = {p.name for p in held_out_images(root)}
    assert {p.name for p in (out / "val").iterdir()} == held
    packed_digests = {digest(out / "train" / r["image"]) for r in rows}
    assert not packed_digests & {digest(root / "sun80" / name) for name in held}


def test_train_rate_measures_both_loops(tmp_path: Path, monkeypatch, capsys) -> None:
    import json

    root = _train_root(tmp_path / "train", bsds=2, sun=0)
    rate = _script("train_rate")
    argv = ["train_rate", "--data", str(root), "--cache", str(tmp_path / "edges.npz")]
    argv += ["--stages", "baseline", "--batch", "1", "--crop", "64", "--steps", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--device", "cpu", "--json", str(tmp_path / "r")])
    rate.main()
    row = json.loads((tmp_path / "r").read_text())
    assert row["stage"] == "baseline" and row["pictures"] == 2
    assert row["random_it_s"] > 0 and row["real_it_s"] > 0
    assert row["real_share"] == pytest.approx(row["real_it_s"] / row["random_it_s"], rel=0.05)


def test_the_host_free_bottleneck_gives_compressais_results() -> None:
    from compressai.entropy_models import EntropyBottleneck

    from fusioncodec.nets.entropy import HostFreeBottleneck

    torch.manual_seed(0)
    ours = HostFreeBottleneck(6)
    theirs = EntropyBottleneck(6)
    theirs.load_state_dict(ours.state_dict())
    z = torch.randn(2, 6, 5, 7) * 3
    for training in (False, True):
        torch.manual_seed(1)
        a = ours(z, training)
        torch.manual_seed(1)
        b = theirs(z, training)
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
