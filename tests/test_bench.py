"""Tests for ``fcodec bench`` (fusioncodec.eval.bench), on the tiny random model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from helpers import assert_one_line_error

from fusioncodec.cli import cli
from fusioncodec.eval.bench import (
    WARM_PHASES,
    BenchError,
    BenchOptions,
    format_report,
    parse_size,
    run_bench,
    run_cold,
    synthetic_image,
    to_json,
)

TOP_KEYS = {"fusioncodec", "torch", "cpu", "cuda", "weights", "image", "quality", "repeat"}
TOP_KEYS |= {"memory_method", "devices", "notes"}


def run(args: list[object]) -> Result:
    return CliRunner().invoke(cli, ["bench", *map(str, args)], env={"FUSIONCODEC_WEIGHTS": None})


def check_speed(entry: dict) -> None:
    assert entry["seconds"] > 0 and entry["mp_per_s"] > 0, entry
    assert entry["peak_rss_mb"] > 0, entry


@pytest.fixture(scope="module")
def report(tiny_weights: Path) -> dict:
    opts = BenchOptions(
        size=(64, 48),
        weights=tiny_weights,
        device="cpu",
        repeat=1,
        cold=False,
        compressai=False,
        train=True,
        train_steps=1,
        train_batch=1,
        train_crop=64,
    )
    threads = torch.get_num_threads()
    result = run_bench(opts)
    assert torch.get_num_threads() == threads  # global state restored
    return result


def test_report_has_the_documented_keys(report: dict) -> None:
    assert TOP_KEYS <= report.keys()
    assert report["image"] == {
        "source": "synthetic",
        "seed": 0,
        "width": 64,
        "height": 48,
        "padded_width": 64,
        "padded_height": 64,
        "megapixels": 0.003072,
    }
    assert report["weights"]["name"] == "tiny-test"
    assert report["weights"]["parameters"]["total"] > 0
    assert list(report["devices"]) == ["cpu"]
    cpu = report["devices"]["cpu"]
    assert {"load", "warm", "rate", "compressai", "train"} <= cpu.keys()
    assert "cold" not in cpu and "cold_cli" not in report
    assert cpu["compressai"] == {"skipped": "--no-compressai"}
    json.loads(to_json(report))  # strict JSON: no NaN or infinity


def test_warm_times_and_memory_are_positive(report: dict) -> None:
    cpu = report["devices"]["cpu"]
    assert set(cpu["warm"]) == set(WARM_PHASES)
    for phase in WARM_PHASES:
        check_speed(cpu["warm"][phase])
        assert "cuda_max_allocated_mb" not in cpu["warm"][phase]
    assert cpu["load"]["seconds"] > 0


def test_rate_overhead_is_finite(report: dict) -> None:
    rate = report["devices"]["cpu"]["rate"]
    for kind in ("machine", "human"):
        r = rate[kind]
        assert r["coded_bits"] > 0 and r["coded_bits"] % 32 == 0  # whole range-coder words
        assert r["estimated_bits"] > 0
        assert isinstance(r["overhead_percent"], float) and math.isfinite(r["overhead_percent"])
    payload = (rate["machine"]["coded_bits"] + rate["human"]["coded_bits"]) // 8
    assert rate["header_bytes"] > 0
    assert rate["file_bytes"] == rate["header_bytes"] + payload


def test_train_speed_covers_every_stage(report: dict) -> None:
    train = report["devices"]["cpu"]["train"]
    assert train["batch"] == 1 and train["crop"] == 64
    assert set(train["precisions"]) == {"fp32", "bf16"}
    for stages in train["precisions"].values():
        assert set(stages) == {"machine", "human", "joint", "baseline", "decoder"}
        assert all(v["crops_per_s"] > 0 for v in stages.values())
    assert set(train["bf16_speedup"]) == set(train["precisions"]["fp32"])
    assert train["default_precision"] in ("fp32", "bf16")


def test_table_shows_every_phase(report: dict) -> None:
    text = format_report(report)
    for needle in ("warm encode machine", "warm decode human", "overhead", "header", "baseline"):
        assert needle in text
    assert "compressai skipped: --no-compressai" in text


def test_cli_with_compressai_writes_json(tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--weights", tiny_weights, "--size", "40x30", "--repeat", "1", "--no-cold"]
    result = run([*args, "--device", "cpu", "--json", "--out", out])
    assert result.exit_code == 0, (result.output, result.exception)
    printed = json.loads(result.stdout)
    assert json.loads(out.read_text()) == printed
    cai = printed["devices"]["cpu"]["compressai"]
    if "skipped" in cai:  # compressai's C++ rANS coder may be missing: a note, not a failure
        assert any("compressai" in note for note in printed["notes"])
        return
    assert (cai["model"], cai["N"], cai["M"], cai["weights"]) == (
        "mbt2018-mean",
        192,
        320,
        "random-init",
    )
    check_speed(cai["encode"])
    check_speed(cai["decode"])
    assert set(cai["ratio"]) == set(WARM_PHASES)
    assert all(r > 0 for r in cai["ratio"].values())
    assert any("random-init" in note for note in printed["notes"])


def test_cold_runs_report_time_and_child_peak(tiny_codec, tmp_path: Path) -> None:  # noqa: ANN001
    fcb = tmp_path / "a.fcb"
    fcb.write_bytes(tiny_codec.encode(synthetic_image(40, 30), ("machine",), 2.0))
    env = {"PATH": "/usr/bin:/bin"}
    result = run_cold(["info", str(fcb)], env)
    assert result["seconds"] > 0
    # The peak is the fresh process's own (info never imports torch), not this process's.
    assert 0 < result["peak_rss_mb"] < 300
    with pytest.raises(BenchError, match=r"fcodec info failed: fcodec: error: .*missing"):
        run_cold(["info", str(tmp_path / "missing.fcb")], env)


def test_synthetic_image_is_seeded() -> None:
    a, b = synthetic_image(50, 20, seed=1), synthetic_image(50, 20, seed=1)
    assert a.size == (50, 20) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != synthetic_image(50, 20, seed=2).tobytes()
    assert parse_size(" 768 x 512 ") == (768, 512)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--size", "64by48"], "bad size '64by48': use WxH"),
        (["--size", "0x48"], "bad size '0x48'"),
        (["--image", "{tmp}/missing.png"], "missing.png: no such file"),
        (["--image", "{tmp}/not-an-image.png"], "not an image Pillow can read"),
        (["--image", "{tmp}/not-an-image.png", "--size", "8x8"], "--image or --size, not both"),
        (["--size", "8x8", "--quality", "9"], "quality must be between 1 and 8"),
        (["--size", "8x8", "--quality", "nan"], "quality must be between 1 and 8, got nan"),
        (["--size", "8x8", "--weights", "{tmp}/none.safetensors"], "weights not found"),
        (["--size", "8x8", "--compressai-weights", "{tmp}/none.pth"], "compressai weights not"),
        (["--size", "8x8", "--compressai-weights", "{tmp}/bad.pth"], "does not fit Mean"),
        (["--size", "8x8", "--out", "{tmp}/no/such/dir.json"], "no such directory"),
        (["--size", "8x8", "--train-precision", "fp16"], "--train-precision takes some of"),
    ],
)
def test_errors_are_one_line(
    args: list[str], needle: str, tiny_weights: Path, tmp_path: Path
) -> None:
    (tmp_path / "not-an-image.png").write_bytes(b"hello")
    torch.save({"g_a.0.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--weights" not in args:
        args += ["--weights", str(tiny_weights)]
    assert_one_line_error(run([*args, "--no-cold"]), needle)


def test_missing_default_image_says_how_to_fix(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSIONCODEC_SHARED", str(tmp_path))
    assert_one_line_error(run(["--weights", tiny_weights]), "kodim01.png", "--size WxH")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_absent(tiny_weights: Path) -> None:
    result = run(["--weights", tiny_weights, "--size", "8x8", "--device", "cuda"])
    assert_one_line_error(result, "--device cuda asked for, but torch sees no CUDA device")


def test_usage_errors_exit_2() -> None:
    result = run(["--repeat", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
