"""Tests for ``fcodec eval human``: metrics, BD-rate, classical codecs, outputs and errors."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from helpers import assert_one_line_error, ok
from PIL import Image

from fusioncodec import metrics
from fusioncodec.cli import cli
from fusioncodec.eval import classical, curves

# --------------------------------------------------------------------------- helpers


def run(args: Sequence[object], env: dict[str, str | None] | None = None) -> Result:
    base = {"FUSIONCODEC_WEIGHTS": None}
    return CliRunner().invoke(cli, ["eval", "human", *map(str, args)], env={**base, **(env or {})})


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small smooth-ish test pictures of different sizes (below MS-SSIM's 161 px)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for name, (w, h) in {"a": (48, 40), "b": (40, 56)}.items():
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(float)
        pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not an image, ignored\n")
    return folder


# --------------------------------------------------------------------------- metrics


def test_bd_rate_of_scaled_rates_is_exact() -> None:
    rate = [0.1, 0.25, 0.5, 1.0, 2.0]
    psnr = [28.0, 31.0, 34.0, 37.0, 40.0]
    assert metrics.bd_rate(rate, psnr, [r * 0.8 for r in rate], psnr) == pytest.approx(-20.0)
    assert metrics.bd_rate(rate, psnr, [r * 1.5 for r in rate], psnr) == pytest.approx(50.0)
    assert metrics.bd_rate(rate, psnr, rate, psnr) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_and_bd_psnr_of_shifted_psnr() -> None:
    # log-rate linear in PSNR: log R = a + b P.  Moving the curve up by d dB saves
    # exp(-b d) - 1 of the rate at equal PSNR, and gains d dB at equal rate.
    a, b, d = -8.0, 0.2, 1.5
    psnr = np.linspace(26.0, 40.0, 6)
    rate = np.exp(a + b * psnr)
    expected = (math.exp(-b * d) - 1) * 100
    assert metrics.bd_rate(rate, psnr, rate, psnr + d) == pytest.approx(expected)
    assert metrics.bd_psnr(rate, psnr, rate, psnr + d) == pytest.approx(d)
    assert metrics.bd_psnr(rate, psnr, rate * 0.8, psnr) == pytest.approx(-math.log(0.8) / b)


def test_bd_rate_refuses_disjoint_or_short_curves() -> None:
    rate, psnr = [0.1, 0.2, 0.4, 0.8], [30.0, 32.0, 34.0, 36.0]
    with pytest.raises(ValueError, match="share no"):
        metrics.bd_rate(rate, psnr, rate, [p + 20 for p in psnr])
    with pytest.raises(ValueError, match="share no"):
        metrics.bd_psnr(rate, psnr, [r * 100 for r in rate], psnr)
    with pytest.raises(ValueError, match="four"):
        metrics.bd_rate(rate[:3], psnr[:3], rate, psnr)


def test_bd_rate_of_measured_webp_against_vtm(shared: Path) -> None:
    anchors = shared / "anchors" / "kodak"
    vtm = json.loads((anchors / "vtm.json").read_text())["results"]
    webp = json.loads((anchors / "measured-pillow-webp.json").read_text())["results"]
    value = metrics.bd_rate(vtm["bpp"], vtm["psnr-rgb"], webp["bpp"], webp["psnr-rgb"])
    assert value == pytest.approx(85.0, abs=1.5)


def test_psnr_and_bpp_by_hand() -> None:
    a = np.zeros((2, 3, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # one sample of 18 off by 255: MSE = 255^2 / 18
    assert metrics.psnr_rgb(a, b) == pytest.approx(10 * math.log10(18))
    b[1, 2, 1] = 255
    assert metrics.psnr_rgb(a, b) == pytest.approx(10 * math.log10(9))
    assert metrics.psnr_rgb(a, a) == math.inf
    assert metrics.bpp(3, 6) == 4.0
    assert metrics.bpp(1000, 768 * 512) == pytest.approx(8000 / 393216)


def test_ms_ssim() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (176, 168, 3), dtype=np.uint8)
    assert metrics.ms_ssim_rgb(x, x) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(x.astype(int) + rng.integers(-20, 21, x.shape), 0, 255).astype(np.uint8)
    assert 0 < metrics.ms_ssim_rgb(x, noisy) < 1
    assert math.isnan(metrics.ms_ssim_rgb(x[:160], x[:160]))  # too small: NaN, documented
    assert metrics.msssim_db(0.99) == pytest.approx(20.0)
    assert math.isnan(metrics.msssim_db(float("nan")))


# --------------------------------------------------------------------------- codecs


def test_classical_round_trips(images: Path) -> None:
    image = Image.open(images / "a.png").convert("RGB")
    ref = np.asarray(image)
    for name in ("jpeg", "webp"):
        codec = classical.get(name)
        assert codec.missing() is None
        low, high = codec.encode(image, 10), codec.encode(image, 90)
        assert len(low) < len(high)
        out = codec.decode(high, *image.size)
        assert out.shape == ref.shape and out.dtype == np.uint8
        assert metrics.psnr_rgb(ref, out) > 25


def test_vvc_yuv_conversion_round_trip() -> None:
    yy, xx = np.mgrid[0:16, 0:24]
    rgb = np.stack([xx * 10, yy * 15, 255 - xx * 10], axis=-1).astype(np.uint8)
    yuv = classical.rgb_to_yuv420(rgb)
    assert len(yuv) == 24 * 16 * 3 // 2
    back8 = classical.yuv420_to_rgb(yuv, 24, 16)
    ten = (np.frombuffer(yuv, np.uint8).astype("<u2") * 4).tobytes()  # as vvdecapp writes
    back10 = classical.yuv420_to_rgb(ten, 24, 16)
    assert np.array_equal(back8, back10)
    assert metrics.psnr_rgb(rgb, back8) > 30
    with pytest.raises(ValueError, match="expected"):
        classical.yuv420_to_rgb(yuv[:-1], 24, 16)


FAKE_VVENC = """#!{python}
import sys, shutil
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
assert args["-c"] == "yuv420" and args["-f"] == "1" and 0 <= int(args["--qp"]) <= 63, args
width, height = map(int, args["-s"].split("x"))
assert width % 8 == 0 and height % 8 == 0, args["-s"]
shutil.copy(args["-i"], args["-o"])  # the "bitstream" is the raw picture
"""
FAKE_VVDEC = """#!{python}
import sys
import numpy as np
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
samples = np.fromfile(args["-b"], np.uint8).astype("<u2") * 4  # 10-bit output, as vvdecapp
samples.tofile(args["-o"])
"""


def test_vvc_through_fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vvenc/vvdec plumbing (YUV files, padding to 8, 10-bit output) with stand-in tools."""
    import sys

    for name, text in (("vvencapp", FAKE_VVENC), ("vvdecapp", FAKE_VVDEC)):
        tool = tmp_path / name
        tool.write_text(text.format(python=sys.executable))
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    codec = classical.get("vvc")
    assert codec.missing() is None
    yy, xx = np.mgrid[0:22, 0:30]
    rgb = np.stack([xx * 8, yy * 10, 200 - xx * 4], axis=-1).astype(np.uint8)
    data = codec.encode(Image.fromarray(rgb), 32)
    assert len(data) == 32 * 24 * 3 // 2  # padded to 32x24, I420
    out = codec.decode(data, 30, 22)
    assert out.shape == rgb.shape
    assert metrics.psnr_rgb(rgb, out) > 30  # only the chroma subsampling is lost


def test_missing_binding_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classical.shutil, "which", lambda name: None)
    assert "vvencapp" in classical.get("vvc").missing()


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def sweep(images: Path, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "out"
    overlay = tmp_path_factory.mktemp("overlay") / "other.json"
    overlay.write_text(
        json.dumps(
            {"name": "Other", "results": {"bpp": [0.5, 1, 2, 4], "psnr-rgb": [20, 24, 28, 32]}}
        )
    )
    args = "--codecs jpeg,webp,fusioncodec --fc-qualities 1,2.5,4,8 --jobs 1 --anchor jpeg"
    args += " --qualities jpeg=10,30,60,90 --qualities webp=10,40,70,95"
    paths = ["--images", images, "--weights", tiny_weights, "--overlay", overlay, "--out", out]
    result = ok(run(args.split() + paths))
    assert "no MS-SSIM" in result.stderr  # the images are too small: a note, not an error
    assert "| webp |" in result.stdout
    return out


def test_outputs_written(sweep: Path) -> None:
    names = {p.name for p in sweep.iterdir()}
    assert names == {
        "jpeg.json",
        "webp.json",
        "fusioncodec.json",
        "results.csv",
        "rd-psnr.png",
        "rd-msssim.png",
        "bd-rate.md",
        "bd-rate.json",
    }
    for png in ("rd-psnr.png", "rd-msssim.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_layout_like_the_anchors(sweep: Path) -> None:
    for codec, n in (("jpeg", 4), ("webp", 4), ("fusioncodec", 4)):
        data = json.loads((sweep / f"{codec}.json").read_text())
        assert {"name", "description", "results", "per_image"} <= data.keys()
        results = data["results"]
        assert {"quality", "bpp", "psnr-rgb", "ms-ssim-rgb"} <= results.keys()
        assert all(len(results[k]) == n for k in ("quality", "bpp", "psnr-rgb", "ms-ssim-rgb"))
        assert sorted(data["per_image"]) == ["a", "b"]
        point = data["per_image"]["a"][0]
        assert {"q", "bpp", "psnr", "msssim", "t"} <= point.keys()
        mean = np.mean([data["per_image"][k][0]["bpp"] for k in ("a", "b")])
        assert results["bpp"][0] == pytest.approx(mean)
        curve = curves.load_curve(sweep / f"{codec}.json")  # loads like an anchor file
        assert len(curve.bpp) == n and curve.msssim is None  # no MS-SSIM for tiny images
    fc = json.loads((sweep / "fusioncodec.json").read_text())
    assert fc["results"]["quality"] == [1.0, 2.5, 4.0, 8.0]
    assert all(
        m < t for m, t in zip(fc["results"]["machine-bpp"], fc["results"]["bpp"], strict=True)
    )
    assert json.loads((sweep / "jpeg.json").read_text())["results"]["quality"] == [10, 30, 60, 90]


def test_json_keys_match_shared_anchor(sweep: Path, shared: Path) -> None:
    anchor = json.loads((shared / "anchors" / "kodak" / "measured-pillow-jpeg.json").read_text())
    mine = json.loads((sweep / "jpeg.json").read_text())
    assert anchor.keys() <= mine.keys()
    assert anchor["results"].keys() <= mine["results"].keys()
    first = next(iter(anchor["per_image"].values()))[0]
    assert first.keys() <= mine["per_image"]["a"][0].keys()


def test_csv_rows(sweep: Path) -> None:
    with open(sweep / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (4 + 4 + 4)  # images x (jpeg + webp + fusioncodec qualities)
    assert rows[0].keys() == set(curves.CSV_COLUMNS)
    jpeg_a_10 = next(
        r for r in rows if (r["codec"], r["image"], r["quality"]) == ("jpeg", "a", "10")
    )
    assert float(jpeg_a_10["bpp"]) == pytest.approx(8 * int(jpeg_a_10["bytes"]) / (48 * 40))
    assert jpeg_a_10["ms_ssim_rgb"] == ""  # NaN: image below 161 px
    assert all(r["machine_bpp"] for r in rows if r["codec"] == "fusioncodec")


def test_bd_table(sweep: Path) -> None:
    report = json.loads((sweep / "bd-rate.json").read_text())
    assert report["anchors"] == ["jpeg"]
    keys = [c["key"] for c in report["curves"]]
    assert keys == ["jpeg", "webp", "fusioncodec", "other"]
    rows = {(r["curve"], r["anchor"]): r for r in report["rows"]}
    assert rows[("jpeg", "jpeg")]["bd_rate_psnr"] == pytest.approx(0.0, abs=1e-9)
    assert rows[("webp", "jpeg")]["bd_rate_msssim"] is None
    assert rows[("webp", "jpeg")]["notes"]["bd_rate_msssim"] == "no MS-SSIM"
    text = (sweep / "bd-rate.md").read_text()
    assert "| curve | vs jpeg |" in text and "(anchor)" in text
    for row in report["rows"]:
        if row["bd_rate_psnr"] is None:
            assert f"n/a ({row['notes']['bd_rate_psnr']})" in text


def test_matches_measured_pillow_anchors(shared: Path, tmp_path: Path) -> None:
    """The same measure as shared/anchors: identical files, so identical per-image values."""
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    shutil.copy(shared / "data" / "kodak" / "kodim23.png", kodak / "kodim23.png")
    out = tmp_path / "out"
    args = "--codecs jpeg,webp --jobs 1 --anchor vtm --anchor webp"
    args += " --qualities jpeg=10,30,50,90 --qualities webp=20,80"
    env = {"FUSIONCODEC_SHARED": str(shared)}
    result = ok(run(args.split() + ["--images", kodak, "--out", out], env=env))
    anchors = shared / "anchors" / "kodak"
    for codec in ("jpeg", "webp"):
        ref = json.loads((anchors / f"measured-pillow-{codec}.json").read_text())["per_image"]
        mine = json.loads((out / f"{codec}.json").read_text())["per_image"]
        for image, points in mine.items():
            for p in points:
                (r,) = [x for x in ref[image] if x["q"] == p["q"]]
                assert p["bpp"] == pytest.approx(r["bpp"], rel=1e-9)
                assert p["psnr"] == pytest.approx(r["psnr"], abs=1e-6)
                assert p["msssim"] == pytest.approx(r["msssim"], abs=1e-5)
    report = json.loads((out / "bd-rate.json").read_text())
    assert report["anchors"] == ["vtm", "webp"]
    row = next(r for r in report["rows"] if (r["curve"], r["anchor"]) == ("jpeg", "vtm"))
    assert row["bd_rate_psnr"] > 0  # JPEG costs more bits than VTM (one image: no exact value)
    assert "vs vtm" in result.stdout


def test_skips_missing_codecs_with_a_note(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(classical.shutil, "which", lambda name: None)
    out = tmp_path / "out"
    result = ok(
        run(
            ["--images", images, "--codecs", "vvc,fusioncodec,jpeg", "--out", out]
            + ["--qualities", "jpeg=20,80", "--limit", "1", "--jobs", "1"],
            env={"FUSIONCODEC_MODELS": str(tmp_path / "no-models")},
        )
    )
    notes = [line for line in result.stderr.splitlines() if line.startswith("fcodec: note:")]
    assert any("vvc skipped" in n and "vvencapp" in n for n in notes)
    assert any("fusioncodec skipped" in n and "--weights" in n for n in notes)
    assert (out / "jpeg.json").exists() and not (out / "vvc.json").exists()
    with open(out / "results.csv") as f:
        assert len(f.readlines()) == 1 + 2  # header, one image x two qualities


def test_fixed_machine_quality(images: Path, tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = "--codecs fusioncodec,fusioncodec-machine --fc-qualities 1,3,8 --machine-quality 2"
    ok(run(args.split() + ["--images", images, "--weights", tiny_weights, "--out", out, "-j1"]))
    fc_file = json.loads((out / "fusioncodec.json").read_text())
    assert fc_file["name"] == "fusioncodec (human layer, machine q 2)"  # told apart on plots
    fc = fc_file["results"]
    machine = json.loads((out / "fusioncodec-machine.json").read_text())["results"]
    assert len(set(fc["machine-bpp"])) == 1  # the same machine layer in every file
    assert "machine-bpp" not in machine and len(machine["bpp"]) == 3
    report = json.loads((out / "bd-rate.json").read_text())
    assert report["anchors"] == ["fusioncodec"]  # no baseline, not kodak: the first codec


def test_errors_are_one_line(images: Path, tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_one_line_error(run(["--images", tmp_path / "nope", "--out", out]), "no such directory")
    assert_one_line_error(
        run(["--images", images, "--codecs", "jpeg,mpeg", "--out", out]), "unknown codec 'mpeg'"
    )
    assert_one_line_error(
        run(["--images", images, "--codecs", "jpeg", "--qualities", "jpeg=5,x", "--out", out]),
        "not a number",
    )
    assert_one_line_error(
        run(["--images", images, "--codecs", "jpeg", "--qualities", "jpeg=101", "--out", out]),
        "from 1 to 100",
    )
    assert_one_line_error(
        run(["--images", images, "--codecs", "jpeg", "--anchor", "nothing", "--out", out]),
        "--anchor nothing",
    )
    assert_one_line_error(
        run(
            ["--images", images, "--codecs", "fusioncodec", "--weights", tiny_weights]
            + ["--fc-qualities", "1,9", "--out", out]
        ),
        "between 1 and 8",
    )
    assert_one_line_error(
        run(
            ["--images", images, "--codecs", "fusioncodec", "--out", out]
            + ["--weights", tmp_path / "missing.safetensors"]
        ),
        "weights not found",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run(["--images", empty, "--codecs", "jpeg", "--out", out]), "no images")
    assert not out.exists() or not any(out.iterdir())


def test_existing_outputs_need_force(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "jpeg.json").write_text("{}")
    args = ["--images", images, "--codecs", "jpeg", "--qualities", "jpeg=50", "--out", out]
    assert_one_line_error(run([*args, "--jobs", "1"]), "already exists", "--force")
    assert (out / "jpeg.json").read_text() == "{}"
    ok(run([*args, "--jobs", "1", "--force"]))
    assert json.loads((out / "jpeg.json").read_text())["results"]["quality"] == [50]


def test_failed_sweep_leaves_no_results(images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    data = (folder / "b.png").read_bytes()
    (folder / "b.png").write_bytes(data[: len(data) // 2])  # header fine, pixels truncated
    out = tmp_path / "out"
    assert_one_line_error(
        run(
            ["--images", folder, "--codecs", "jpeg", "--qualities", "jpeg=50", "--out", out]
            + ["--jobs", "2"]  # the pool: a worker's error ends the run
        ),
        "b.png",
        notes=True,
    )
    assert not any(p.suffix in (".json", ".csv", ".png", ".md") for p in out.iterdir())
