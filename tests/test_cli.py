"""Tests for the ``fcodec`` command line (fusioncodec.cli), with the tiny random model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from helpers import assert_one_line_error, ok
from PIL import Image

from fusioncodec.cli import cli
from fusioncodec.cli.common import LayersType
from fusioncodec.container import Container
from fusioncodec.nets import CodecConfig, ScalableCodec
from fusioncodec.weights import export

SIZES = {"a": (40, 30), "b": (64, 48), "c": (51, 37)}


def run(args: Sequence[object], weights: Path | None = None, input: bytes | None = None) -> Result:
    """Invoke ``fcodec ARGS`` in-process, with ``weights`` passed through the env var."""
    env = {"FUSIONCODEC_WEIGHTS": str(weights) if weights else None}
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, input=input)


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def fcodec_cmd() -> list[str]:
    script = Path(sys.executable).with_name("fcodec")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fusioncodec.cli"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Path:
    """Small images and, encoded once, a two-layer and a machine-only file of ``a.png``."""
    root = tmp_path_factory.mktemp("cli-data")
    rng = np.random.default_rng(0)
    for stem, (w, h) in SIZES.items():
        ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        noisy = np.clip(ramp + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"{stem}.png")
    ok(run(["encode", root / "a.png", "-o", root / "a.fcb", "-q", 3], tiny_weights))
    ok(run(["encode", root / "a.png", "-o", root / "a-m.fcb", "--layers", "machine"], tiny_weights))
    return root


@pytest.fixture()
def work(tmp_path: Path, data: Path) -> Path:
    """A private copy of the data directory."""
    for p in data.iterdir():
        shutil.copy(p, tmp_path / p.name)
    return tmp_path


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model like conftest's (other seed, so another hash)."""
    config = CodecConfig(n=16, slices=2, m=1, hyper_channels=32, z_channels=16)
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("other") / "other.safetensors"
    export(
        ScalableCodec(config),
        {"name": "other", "kind": "scalable", "config": config.to_dict()},
        path,
    )
    return path


# --------------------------------------------------------------------------- start-up


def test_help_version_info_strip_do_not_import_torch_or_ray(data: Path, tmp_path: Path) -> None:
    code = f"""
import sys
from click.testing import CliRunner
from fusioncodec.cli import cli
r = CliRunner()
for args in (["--help"], ["--version"], ["encode", "--help"], ["decode", "--help"],
             ["info", {str(data / "a.fcb")!r}], ["info", "--json", {str(data / "a-m.fcb")!r}],
             ["strip", {str(data / "a.fcb")!r}, "-o", {str(tmp_path / "s.fcb")!r}]):
    res = r.invoke(cli, args)
    assert res.exit_code == 0, (args, res.output)
import fusioncodec
assert fusioncodec.__version__ in r.invoke(cli, ["--version"]).output
bad = [m for m in ("torch", "numpy", "tqdm", "ray", "pyarrow") if m in sys.modules]  # PIL: plugin
assert not bad, bad
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s.fcb").exists()


# --------------------------------------------------------------------------- encode / decode


def test_encode_decode_both_layers(work: Path, tiny_weights: Path) -> None:
    res = ok(run(["encode", work / "b.png"], tiny_weights))  # no -o: b.fcb beside the input
    assert "bpp" in res.stderr and res.stdout == ""
    fcb = work / "b.fcb"
    assert Container.from_bytes(fcb.read_bytes()).kinds == ("machine", "human")
    out_m, out_h = work / "seen-by-machines.png", work / "seen-by-people.png"
    ok(run(["decode", fcb, "-o", out_m, "--layer", "machine"], tiny_weights))
    ok(run(["decode", fcb, "-o", out_h, "--layer", "human"], tiny_weights))
    for out in (out_m, out_h):
        with Image.open(out) as im:
            assert im.format == "PNG" and im.size == SIZES["b"]
    ok(run(["decode", fcb], tiny_weights))  # default: human layer, <stem>.human.png
    ok(run(["decode", fcb, "--layer", "machine", "-o", work / "m.jpg"], tiny_weights))
    with Image.open(work / "b.human.png") as im, Image.open(work / "m.jpg") as jpg:
        assert im.size == SIZES["b"] and jpg.format == "JPEG" and jpg.size == SIZES["b"]


def test_encode_options(work: Path, tiny_weights: Path) -> None:
    out = work / "q.fcb"
    args = ["encode", work / "c.png", "-o", out, "-q", 2.5, "--human-quality", 6, "--json"]
    res = ok(run([*args, "--weights", tiny_weights, "--device", "cpu"]))
    obj, summary = (json.loads(line) for line in res.stdout.splitlines())
    assert obj["ok"] and [x["quality"] for x in obj["layers"]] == [2.5, 6.0]
    assert (obj["width"], obj["height"]) == SIZES["c"] and obj["bytes"] == out.stat().st_size
    assert summary == {**summary, "summary": "encode", "files": 1, "failed": 0}
    c = Container.from_bytes(out.read_bytes())
    assert [round(layer.quality, 3) for layer in c.layers] == [2.5, 6.0]
    out2 = work / "both.fcb"
    ok(run(["encode", work / "c.png", "-o", out2, "--layers", "machine,human"], tiny_weights))
    assert Container.from_bytes(out2.read_bytes()).kinds == ("machine", "human")


def test_layers_option_parsing() -> None:
    t = LayersType()
    assert t.convert("both", None, None) == ("machine", "human")
    assert t.convert("machine", None, None) == ("machine",)
    assert t.convert("human, machine", None, None) == ("machine", "human")
    res = run(["encode", "x.png", "--layers", "human"])
    assert res.exit_code == 2 and "machine layer" in res.stderr
    assert run(["encode", "x.png", "--layers", "pixels"]).exit_code == 2


def test_machine_only_file(work: Path, tiny_weights: Path) -> None:
    fcb = work / "a-m.fcb"
    assert Container.from_bytes(fcb.read_bytes()).kinds == ("machine",)
    out = work / "people.png"
    res = run(["decode", fcb, "-o", out, "--layer", "human"], tiny_weights)
    assert_one_line_error(res, "a-m.fcb", "no human layer", "--layer machine")
    assert not out.exists()
    ok(run(["decode", fcb, "-o", out, "--layer", "machine"], tiny_weights))
    assert Image.open(out).size == SIZES["a"]


def test_info(data: Path) -> None:
    res = ok(run(["info", data / "a.fcb", data / "a-m.fcb"]))
    c = Container.from_bytes((data / "a.fcb").read_bytes())
    text = res.stdout
    for needle in (
        "40x30",
        f"{(data / 'a.fcb').stat().st_size} bytes",
        "bpp",
        "tiny-test",
        c.model_hash.hex(),
        "m        1",
        "machine  quality 3",
        "human    quality 3",
    ):
        assert needle in text, needle
    assert text.count("human ") == 1  # the machine-only file has no human line
    res = ok(run(["info", "--json", data / "a.fcb", data / "a-m.fcb"]))
    first, second = (json.loads(line) for line in res.stdout.splitlines())
    assert first["model_hash"] == c.model_hash.hex() and first["m"] == 1
    assert [x["kind"] for x in first["layers"]] == ["machine", "human"]
    assert first["bytes"] == first["header_bytes"] + sum(x["bytes"] for x in first["layers"])
    assert [x["kind"] for x in second["layers"]] == ["machine"]
    # one bad file among good ones: reported, the others still shown, exit 1
    res = run(["info", "--json", data / "a.png", data / "a.fcb"])
    assert res.exit_code == 1 and res.stderr.startswith("fcodec: error: ")
    bad, good = (json.loads(line) for line in res.stdout.splitlines())
    assert not bad["ok"] and "not an .fcb file" in bad["error"] and good["ok"]


def test_strip(work: Path, tiny_weights: Path) -> None:
    src, out = work / "a.fcb", work / "a-stripped.fcb"
    res = ok(run(["strip", src, "-o", out]))
    assert "human layer" in res.stderr
    original, stripped = (Container.from_bytes(p.read_bytes()) for p in (src, out))
    assert stripped.kinds == ("machine",)
    assert stripped.layer("machine") == original.layer("machine")
    assert stripped.layer("machine").payload == original.layer("machine").payload
    assert out.stat().st_size < src.stat().st_size
    pix = []
    for name, fcb in (("orig.png", src), ("strip.png", out)):
        ok(run(["decode", fcb, "--layer", "machine", "-o", work / name], tiny_weights))
        pix.append(np.asarray(Image.open(work / name)))
    assert np.array_equal(pix[0], pix[1])
    # machine-only input: written unchanged, with a note
    res = ok(run(["strip", out, "-o", work / "again.fcb"]))
    assert "no human layer" in res.stderr
    assert (work / "again.fcb").read_bytes() == out.read_bytes()
    # to stdout
    res = ok(run(["strip", src, "-o", "-"]))
    assert res.stdout_bytes == out.read_bytes()
    assert run(["strip", src]).exit_code == 2  # -o is required


# --------------------------------------------------------------------------- batch


def test_batch_encode_json_progress_and_decode(work: Path, tiny_weights: Path) -> None:
    (work / "notes.png").write_text("not really a picture")
    shots = [work / "a.png", work / "notes.png", work / "b.png", work / "c.png"]
    coded = work / "coded"
    res = run(["encode", *shots, "-o", f"{coded}/", "--json"], tiny_weights)
    assert res.exit_code == 1
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [x["ok"] for x in lines[:-1]] == [True, False, True, True]
    assert "not an image Pillow can read" in lines[1]["error"]
    assert lines[-1]["summary"] == "encode" and lines[-1]["files"] == 3
    assert lines[-1]["failed"] == 1
    assert lines[-1]["bytes"] == sum(x["bytes"] for x in lines[:-1] if x["ok"])
    assert res.stderr.splitlines() == [f"fcodec: error: {shots[1]}: not an image Pillow can read"]
    assert files_in(coded) == {"a.fcb", "b.fcb", "c.fcb"}

    res = run(["encode", *shots, "-o", work / "coded2", "--progress"], tiny_weights)
    assert res.exit_code == 1 and res.stdout == ""
    assert "/4 [" in res.stderr and "file/s" in res.stderr  # tqdm's bar
    summary = res.stderr.strip().splitlines()[-1]
    assert summary.startswith("encoded 3 files, ") and summary.endswith("bpp avg, 1 failed")
    assert sum("fcodec: error:" in line for line in res.stderr.splitlines()) == 1

    res = ok(
        run(["decode", *sorted(coded.glob("*.fcb")), "-o", work / "dec", "--json"], tiny_weights)
    )
    for stem in ("a", "b", "c"):
        with Image.open(work / "dec" / f"{stem}.human.png") as im:
            assert im.size == SIZES[stem]
    assert json.loads(res.stdout.splitlines()[-1])["files"] == 3
    res = ok(run(["decode", coded / "a.fcb", coded / "b.fcb", "-o", work / "dec2"], tiny_weights))
    assert res.stderr.strip() == "decoded 2 files (human layer)"


def test_a_folder_stands_for_its_pictures_and_fcb_files(work: Path, tiny_weights: Path) -> None:
    folder = work / "shots"
    folder.mkdir()
    for stem in ("a", "b"):
        shutil.copy(work / f"{stem}.png", folder)
    (folder / "notes.txt").write_text("not a picture, and not listed")
    ok(run(["encode", folder], tiny_weights))  # no -o: beside the pictures
    assert files_in(folder) == {"a.png", "b.png", "notes.txt", "a.fcb", "b.fcb"}
    res = ok(run(["decode", folder, "-o", work / "seen", "--layer", "machine"], tiny_weights))
    assert files_in(work / "seen") == {"a.machine.png", "b.machine.png"}
    assert "decoded 2 files" in res.stderr
    (work / "empty").mkdir()
    assert_one_line_error(run(["encode", work / "empty"], tiny_weights), "no pictures")
    assert_one_line_error(run(["decode", work / "empty"], tiny_weights), "no .fcb files")
    res = run(["encode", folder, "--workers", 2], tiny_weights)
    assert_one_line_error(res, "--workers needs --engine ray")
    res = run(["encode", "-", "-o", work / "x.fcb", "--engine", "ray"], tiny_weights)
    assert_one_line_error(res, "not stdin or stdout")


def test_batch_same_stem_refused_before_writing(work: Path, tiny_weights: Path) -> None:
    (work / "x").mkdir()
    shutil.copy(work / "a.png", work / "x" / "a.png")
    res = run(["encode", work / "a.png", work / "x" / "a.png", "-o", work / "out"], tiny_weights)
    assert_one_line_error(res, "would both write")
    assert not (work / "out").exists()
    res = run(["encode", work / "a.png", work / "b.png", "-o", work / "a.fcb"], tiny_weights)
    assert_one_line_error(res, "not a directory")
    res = run(["encode", work / "a.png", work / "b.png", "-o", "-"], tiny_weights)
    assert_one_line_error(res, "single input")
    res = run(["encode", "-", work / "a.png", "-o", work / "out"], tiny_weights)
    assert_one_line_error(res, "stdin")


# --------------------------------------------------------------------------- overwrite rules


def test_overwrite_rules(work: Path, tiny_weights: Path) -> None:
    target = work / "a.fcb"
    before = target.read_bytes()
    target.write_bytes(b"keep me")
    res = run(["encode", work / "a.png", "-o", target], tiny_weights)
    assert_one_line_error(res, "already exists", "--force")
    assert target.read_bytes() == b"keep me"
    ok(run(["encode", work / "a.png", "-o", target, "-q", 3, "--force"], tiny_weights))
    assert target.read_bytes() == before  # deterministic on one machine
    png = (work / "a.png").read_bytes()
    for args in (
        ["encode", work / "a.png", "-o", work / "a.png", "--force"],
        ["decode", target, "-o", target, "--force"],
        ["strip", target, "-o", target, "--force"],
        ["strip", target, "-o", work, "--force"],  # work/a.fcb again
    ):
        assert_one_line_error(run(args, tiny_weights), "refusing to overwrite input")
    assert (work / "a.png").read_bytes() == png and target.read_bytes() == before
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- bad inputs


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-5])


def _flip_payload_byte(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[Container.from_bytes(bytes(raw)).header_size + 1] ^= 0x10
    p.write_bytes(bytes(raw))


BAD_FCB = {
    "truncated": (_truncate, "truncated"),
    "corrupted": (_flip_payload_byte, "CRC mismatch"),
    "not_fcb": (lambda p: shutil.copy(p.with_name("a.png"), p), "not an .fcb file"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "missing": (lambda p: p.unlink(), "No such file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FCB))
@pytest.mark.parametrize("command", ["decode", "info", "strip"])
def test_bad_fcb(work: Path, tiny_weights: Path, case: str, command: str) -> None:
    damage, message = BAD_FCB[case]
    fcb = work / "a.fcb"
    damage(fcb)
    out = work / "out.bin"
    args = {
        "decode": ["decode", fcb, "-o", work / "out.png"],
        "info": ["info", fcb],
        "strip": ["strip", fcb, "-o", out],
    }[command]
    before = files_in(work)
    assert_one_line_error(run(args, tiny_weights), str(fcb), message)
    assert files_in(work) == before


BAD_IMAGES = {
    "text": (lambda p: p.write_text("hello, I am text\n"), "not an image Pillow can read"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:400]), "cannot read image"),
    "missing": (lambda p: p.unlink(), "No such file"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image(work: Path, tiny_weights: Path, case: str) -> None:
    damage, message = BAD_IMAGES[case]
    src = work / "b.png"
    damage(src)
    before = files_in(work)
    res = run(["encode", src, "-o", work / "b.fcb"], tiny_weights)
    assert_one_line_error(res, f"{src}: {message}")
    assert files_in(work) == before


def live_pictures(size: tuple[int, int]) -> int:
    """How many PIL images of this size are alive."""
    import gc

    return sum(issubclass(type(o), Image.Image) and o.size == size for o in gc.get_objects())


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_encode_frees_the_picture_before_coding(
    work: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """While the analysis transforms run, no decoded copy of the input picture is held (at
    100 MP it is 0.4 GB of the 3 GB the codec may use)."""
    import gc

    from fusioncodec.codec import Codec
    from fusioncodec.runtime import OnnxCodec

    gc.collect()  # pictures of earlier tests that only wait for the cycle collector
    seen: list[int] = []
    for runtime in (Codec, OnnxCodec):
        analysis = runtime.analysis

        def counting(self, pixels, y_machine=None, analysis=analysis):
            seen.append(live_pictures((pixels.shape[1], pixels.shape[0])))
            return analysis(self, pixels, y_machine)

        monkeypatch.setattr(runtime, "analysis", counting)
    src = work / "b.png"
    for backend in ("onnx", "torch"):
        args = ["encode", "--backend", backend, "-o", work / "b2.fcb", "--force"]
        if source == "file":
            ok(run([*args, src], tiny_weights))
        else:
            ok(run([*args, "-"], tiny_weights, input=src.read_bytes()))
    assert seen == [0, 0, 0, 0]  # machine and human analysis, in each runtime


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-q", "9"], "between 1 and 8"),
        (["-q", "0.5"], "between 1 and 8, got 0.5"),
        (["-q", "nan"], "quality"),
        (["--human-quality", "12"], "between 1 and 8"),
        (["--weights", "/no/such/weights.safetensors"], "weights not found"),
        pytest.param(
            ["--device", "cuda"],
            "no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available"),
        ),
    ],
)
def test_bad_options(work: Path, tiny_weights: Path, extra: list[str], message: str) -> None:
    args = ["encode", work / "a.png", "-o", work / "new.fcb", *extra]
    if "--weights" not in extra:
        args += ["--weights", tiny_weights]
    before = files_in(work)
    assert_one_line_error(run(args), message)
    assert files_in(work) == before


def test_other_model_and_misc_errors(work: Path, tiny_weights: Path, other_weights: Path) -> None:
    res = run(["decode", work / "a.fcb", "-o", work / "x.png"], other_weights)
    line = assert_one_line_error(res, "model", "hash", "tiny-test")
    assert "matching model" in line and not (work / "x.png").exists()
    res = run(["decode", work / "a.fcb", "-o", work / "x.xyz"], tiny_weights)
    assert_one_line_error(res, "extension")
    res = run(["encode", "-", "-o", work / "s.fcb"], tiny_weights, input=b"")
    assert_one_line_error(res, "<stdin>: empty input")
    assert_one_line_error(run(["encode", "-"], tiny_weights, input=b"x"), "stdin needs -o")
    res = run(["encode", work / "a.png", "-o", "-", "--json"], tiny_weights)
    assert_one_line_error(res, "--json")
    res = run(["encode", work / "a.png", "-o", work / "a.png" / "a.fcb"], tiny_weights)
    assert_one_line_error(res, "not a directory")
    empty_models = work / "models"
    empty_models.mkdir()
    res = CliRunner(
        env={"FUSIONCODEC_MODELS": str(empty_models), "FUSIONCODEC_WEIGHTS": None}
    ).invoke(cli, ["encode", str(work / "a.png"), "-o", str(work / "d.fcb")])
    assert_one_line_error(res, "the shipped weights are missing", "FUSIONCODEC_MODELS")
    assert not (work / "d.fcb").exists() and not (work / "s.fcb").exists()


def test_decompression_bomb(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pictures over the codec's limit are refused while Pillow reads them (its own, lower
    default limit does not apply: the codec takes up to 100 MP)."""
    import fusioncodec.codec

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    ok(run(["encode", work / "a.png", "-o", work / "fine.fcb"]))  # 1200 pixels
    monkeypatch.setattr(fusioncodec.sources, "MAX_CODEC_PIXELS", 1000)
    for stem in ("a", "b"):  # 1200 pixels: Pillow warns; 3072: Pillow refuses
        res = run(["encode", work / f"{stem}.png", "-o", work / "bomb.fcb"])
        assert_one_line_error(res, "image too large")
    assert not (work / "bomb.fcb").exists()
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's setting is left as it was


def test_main_hides_internal_errors(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fusioncodec.cli as cli_module
    import fusioncodec.cli.coding as coding

    def broken(*args: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(coding, "container_stats", broken)
    monkeypatch.delenv("FCODEC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main(["info", str(data / "a.fcb")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("fcodec: error: internal error (ZeroDivisionError: a bug)")
    assert len(err.splitlines()) == 1
    monkeypatch.setenv("FCODEC_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli_module.main(["info", str(data / "a.fcb")])


# --------------------------------------------------------------------------- real processes


def test_pipeline_stdin_stdout(data: Path, tiny_weights: Path, tmp_path: Path) -> None:
    """cat a.png | fcodec encode - -o - | fcodec decode - --layer human -o - > out.png"""
    env = {**os.environ, "FUSIONCODEC_WEIGHTS": str(tiny_weights)}
    enc = subprocess.Popen(
        [*fcodec_cmd(), "encode", "-", "-o", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    dec = subprocess.Popen(
        [*fcodec_cmd(), "decode", "-", "--layer", "human", "-o", "-"],
        stdin=enc.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert enc.stdout is not None and enc.stdin is not None
    enc.stdout.close()  # dec owns it now
    enc.stdin.write((data / "a.png").read_bytes())
    enc.stdin.close()
    png, dec_err = dec.communicate(timeout=120)
    enc_err = enc.stderr.read() if enc.stderr else b""
    assert enc.wait(timeout=60) == 0, enc_err
    assert dec.returncode == 0, dec_err
    assert b"Traceback" not in enc_err + dec_err
    out = tmp_path / "out.png"
    out.write_bytes(png)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == SIZES["a"]


def test_no_traceback_in_real_process(work: Path) -> None:
    (work / "photo.txt").write_text("words, not pixels")
    for args in (
        ["encode", str(work / "photo.txt"), "-o", str(work / "photo.fcb")],
        ["info", str(work / "photo.txt")],
        ["decode", str(work / "nope.fcb")],
        ["encode", "-", "-o", str(work / "e.fcb")],  # empty stdin
    ):
        proc = subprocess.run(
            [*fcodec_cmd(), *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("fcodec: error: "), proc.stderr
    assert (
        "fcodec: error: " + str(work / "photo.txt") + ": not an image Pillow can read"
        in subprocess.run(
            [*fcodec_cmd(), "encode", str(work / "photo.txt")], capture_output=True, text=True
        ).stderr
    )
    assert not (work / "photo.fcb").exists() and not (work / "e.fcb").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["encode", "--bogus", "x.png"], "No such option '--bogus'"),
        (["encode", "-q", "abc", "x.png"], "'abc' is not a valid float"),
        (["decode"], "Missing argument"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], needle: str) -> None:
    res = run(args)
    line = assert_one_line_error(res, needle, code=2)
    assert "--help" in line and "Usage:" not in res.output


def test_ctrl_c_exits_130_and_leaves_no_partial_output(
    work: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fusioncodec.scalable import TwoLayerCodec

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(TwoLayerCodec, "encode_container", interrupted)  # either runtime
    out = work / "interrupted.fcb"
    res = run(["encode", work / "b.png", "-o", out], tiny_weights)
    assert res.exit_code == 130 and "interrupted" in res.stderr
    assert not out.exists() and not list(work.glob("*.tmp*"))


@pytest.mark.parametrize("command, name", [("encode", "single.fcb"), ("decode", "single.png")])
def test_several_inputs_with_an_output_file_name_is_an_error(
    data: Path, tmp_path: Path, tiny_weights: Path, command: str, name: str
) -> None:
    inputs = [data / "a.png", data / "b.png"] if command == "encode" else [data / "a.fcb"] * 2
    if command == "decode":
        shutil.copy(data / "a.fcb", tmp_path / "x.fcb")
        inputs = [data / "a.fcb", tmp_path / "x.fcb"]
    res = run([command, *inputs, "-o", tmp_path / name], tiny_weights)
    assert_one_line_error(res, "names a file, but several inputs need -o DIR")
    assert not (tmp_path / name).exists()
    ok(run([command, *inputs, "-o", f"{tmp_path / name}/"], tiny_weights))  # explicit directory
    assert (tmp_path / name).is_dir()


def test_quality_above_the_model_range_fails_before_loading_it(
    work: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fusioncodec

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the quality was checked")

    monkeypatch.setattr(fusioncodec, "load", never)
    res = run(["encode", work / "b.png", "-q", "9"], tiny_weights)
    assert_one_line_error(res, "quality must be between 1 and 8, got 9")
    res = run(["encode", work / "b.png", "--human-quality", "8.5"], tiny_weights)
    assert_one_line_error(res, "between 1 and 8, got 8.5")


def test_human_quality_without_the_human_layer_is_refused(work: Path, tiny_weights: Path) -> None:
    args = ["encode", work / "b.png", "--layers", "machine", "--human-quality", "3"]
    res = run(args, tiny_weights)
    assert_one_line_error(res, "--human-quality sets the human layer")


def test_help_texts_match_the_options() -> None:
    info = run(["info", "--help"]).output
    assert "-o -" not in info  # info has no -o
    for command in ("encode", "decode"):
        text = " ".join(run([command, "--help"]).output.split())
        assert "required for several inputs" not in text  # outputs go beside the inputs
        assert "Default: beside each input" in text


def test_quiet_prints_errors_only_and_verbose_each_file(
    work: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    out = tmp_path / "q"
    res = ok(run(["encode", "--quiet", work / "b.png", "-o", f"{out}/"], tiny_weights))
    assert res.stderr == "" and (out / "b.fcb").exists()
    res = run(["encode", "--quiet", work / "b.png", tmp_path / "missing.png", "-o", f"{out}/",
               "-f"], tiny_weights)  # fmt: skip
    assert res.exit_code == 1 and res.stderr.count("fcodec: error:") == 1
    assert len(res.stderr.splitlines()) == 1
    res = ok(run(["decode", "-v", out / "b.fcb", "-o", f"{tmp_path / 'd'}/"], tiny_weights))
    first = res.stderr.splitlines()[0]  # -v: each file with its size, rate and time
    size = (out / "b.fcb").stat().st_size
    assert f"{size:,} bytes, " in first and " bpp, " in first and first.endswith(" s")
    assert "decoded" not in first
    res = ok(run(["encode", "-v", work / "b.png", "-o", f"{tmp_path / 'v'}/"], tiny_weights))
    size = (tmp_path / "v" / "b.fcb").stat().st_size
    assert f"{size:,} bytes, " in res.stderr.splitlines()[0]
    res = ok(run(["strip", "--quiet", out / "b.fcb", "-o", tmp_path / "s.fcb"]))
    assert res.stderr == ""
