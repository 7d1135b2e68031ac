"""The Ray engine (fusioncodec.distributed, ``fcodec encode/decode --engine ray``): the same
outputs, rows and error lines as the local engine, resumable, and nothing lost or
half-written when workers die. One local Ray instance serves the whole module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from helpers import assert_one_line_error
from PIL import Image

from fusioncodec.cli import cli
from fusioncodec.container import Container
from fusioncodec.distributed import KILL_HOOK, decode_dataset, encode_dataset, machine_layers

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
SIZES = {"a": (40, 30), "b": (64, 48), "c": (51, 37)}


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray instance (2 CPUs); its address, for the command line to join."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small pictures and a file that only claims to be one."""
    folder = tmp_path_factory.mktemp("ray") / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for stem, (w, h) in SIZES.items():
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{stem}.png")
    (folder / "broken.png").write_bytes(b"not a picture")
    return folder


def fcodec(args: Sequence[object], weights: Path | None, **env: str) -> Result:
    variables = {"FUSIONCODEC_WEIGHTS": str(weights) if weights else None, **env}
    return CliRunner().invoke(cli, [str(a) for a in args], env=variables)


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def local_run(
    pictures: Path, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Result, dict[str, bytes]]:
    """``fcodec encode in -o out --json`` on the local engine, run in ``in``'s parent; the
    outputs are then moved away so that the Ray engine can write the same names."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(pictures.parent)
        result = fcodec(["encode", "in", "-o", "out", "-q", 3, "--json"], tiny_weights)
    written = outputs(pictures.parent / "out")
    shutil.rmtree(pictures.parent / "out")
    return result, written


def test_ray_engine_writes_what_the_local_engine_writes(
    cluster: str, pictures: Path, tiny_weights: Path, local_run: tuple[Result, dict[str, bytes]]
) -> None:
    local, written = local_run
    os.chdir(pictures.parent)
    args = ["encode", "in", "-o", "out", "-q", 3, "--json", "--engine", "ray"]
    remote = fcodec([*args, "--address", cluster, "--workers", 2], tiny_weights)
    assert local.exit_code == remote.exit_code == 1  # the broken file
    assert remote.stdout == local.stdout  # every --json row and the summary, in order
    assert remote.stderr == local.stderr == (
        "fcodec: error: in/broken.png: not an image Pillow can read\n"
    )
    assert outputs(pictures.parent / "out") == written
    assert sorted(written) == ["a.fcb", "b.fcb", "c.fcb"]


def test_a_rerun_skips_what_exists_and_force_redoes_everything(
    cluster: str, pictures: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    first = encode_dataset(pictures, tmp_path, quality=3, weights=tiny_weights)
    assert (first.done, first.skipped, first.failed) == (3, 0, 1)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = encode_dataset(pictures, tmp_path, quality=3, weights=tiny_weights)
    assert (again.done, again.skipped, again.failed) == (0, 3, 1)
    assert [r["input"] for r in again.rows] == [str(p) for p in sorted(pictures.iterdir())]
    assert [r["input"] for r in again.rows if not r["ok"]] == [str(pictures / "broken.png")]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    forced = encode_dataset(pictures, tmp_path, quality=3, weights=tiny_weights, force=True)
    assert (forced.done, forced.skipped, forced.failed) == (3, 0, 1)
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in tmp_path.iterdir())


def test_a_worker_killed_mid_write_loses_nothing(
    cluster: str,
    pictures: Path,
    tiny_weights: Path,
    local_run: tuple[Result, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_HOOK, json.dumps({"input": "b", "marker": str(marker)}))
    out = tmp_path / "out"
    summary = encode_dataset(pictures, out, quality=3, weights=tiny_weights)
    assert len(marker.read_text().split()) == 1  # the worker writing b.fcb died once
    assert (summary.done, summary.failed) == (3, 1)
    assert outputs(out) == local_run[1]  # b.fcb retried on a new worker, whole
    assert all(Container.from_bytes(data) for data in outputs(out).values())
    assert temporaries(out) == []


def test_a_file_that_kills_every_worker_fails_alone(
    cluster: str,
    pictures: Path,
    tiny_weights: Path,
    local_run: tuple[Result, dict[str, bytes]],
    tmp_path: Path,
) -> None:
    marker, out = tmp_path / "killed", tmp_path / "out"
    hook = json.dumps({"input": "a", "marker": str(marker), "every": True})
    args = ["encode", pictures, "-o", out, "-q", 3, "--engine", "ray", "--address", cluster]
    result = fcodec([*args, "--retries", 1], tiny_weights, **{KILL_HOOK: hook})
    assert result.exit_code == 1
    assert len(marker.read_text().split()) == 2  # the first try and one retry
    lines = result.stderr.splitlines()
    assert f"fcodec: error: {pictures / 'a.png'}: its worker died on each of 2 tries" in lines[1]
    assert lines[-1].startswith("encoded 2 files, ") and lines[-1].endswith(", 2 failed")
    assert outputs(out) == {k: v for k, v in local_run[1].items() if k != "a.fcb"}
    assert temporaries(out) == []
    assert result.stdout == ""  # Ray's reports of the deaths stay in the driver's log


def test_decoding_on_ray_matches_the_local_engine(
    cluster: str, pictures: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    coded = tmp_path / "coded"
    encode_dataset(pictures, coded, quality=3, weights=tiny_weights)
    local = fcodec(["decode", coded, "-o", tmp_path / "local", "--json"], tiny_weights)
    args = ["decode", coded, "-o", tmp_path / "ray", "--json", "--engine", "ray"]
    remote = fcodec([*args, "--address", cluster], tiny_weights)
    assert local.exit_code == remote.exit_code == 0
    assert local.stdout.replace("/local/", "/ray/") == remote.stdout
    assert outputs(tmp_path / "local") == outputs(tmp_path / "ray")
    uri = f"file://{coded}"
    summary = decode_dataset(uri, tmp_path / "uri", layer="machine", weights=tiny_weights)
    assert summary.done == 3 and sorted(outputs(tmp_path / "uri")) == [
        "a.machine.png", "b.machine.png", "c.machine.png"
    ]  # fmt: skip
    rows = {r["name"]: r["image"] for r in machine_layers(coded, weights=tiny_weights).iter_rows()}
    for name, pixels in rows.items():
        expected = Image.open(tmp_path / "uri" / name.replace(".fcb", ".machine.png"))
        assert np.array_equal(pixels, np.asarray(expected))


def test_a_worker_no_machine_can_hold_is_refused_not_waited_for(
    cluster: str, pictures: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    base = ["encode", pictures, "-o", tmp_path, "--engine", "ray", "--address", cluster]
    result = fcodec([*base, "--threads-per-worker", 64], tiny_weights)
    assert_one_line_error(result, "no machine of the Ray cluster has 64 CPUs")
    result = fcodec([*base, "--gpus-per-worker", 1], tiny_weights)
    assert_one_line_error(result, "1 GPUs for one worker")
    result = fcodec([*base, "--device", "cpu"], tiny_weights)  # the same, runs
    assert result.exit_code == 1 and sorted(outputs(tmp_path)) == ["a.fcb", "b.fcb", "c.fcb"]


def test_engine_options_are_checked_before_any_work(
    tiny_weights: Path, pictures: Path, tmp_path: Path
) -> None:
    assert_one_line_error(
        fcodec(["encode", pictures, "-o", "x", "--workers", 3], tiny_weights),
        "--workers needs --engine ray",
    )
    assert_one_line_error(
        fcodec(["encode", "s3://bucket/in", "-o", "x"], tiny_weights), "needs --engine ray"
    )
    missing = ["encode", pictures, "-o", "x", "--engine", "ray", "--weights", "none.safetensors"]
    assert_one_line_error(CliRunner().invoke(cli, [str(a) for a in missing]), "none.safetensors")
    refused = {
        ("-o", "-"): "single input",  # a folder is several inputs
        ("-o", tmp_path / "out.fcb"): "names a file, but a folder input needs -o DIR",
        ("-o", "s3://bucket/out", "--engine", "ray"): "a URI works as the one input",
    }
    for extra, message in refused.items():
        assert_one_line_error(fcodec(["encode", pictures, *extra], tiny_weights), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing made, not even a folder
    uri_to_stdout = ["encode", "s3://bucket/in", "-o", "-", "--engine", "ray"]
    assert_one_line_error(fcodec(uri_to_stdout, tiny_weights), "not stdin or stdout")


def test_the_ray_detection_example_scores_what_eval_machine_scores(
    cluster: str, shared: Path, tmp_path: Path
) -> None:
    """The server-side example on four coco128 pictures (shipped weights, machine layer,
    quality 2): its mAP is ``fcodec eval machine``'s for the same files and detector."""
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((shared / "data" / "coco128" / "images").iterdir())[:4]:
        shutil.copy(path, images)
    annotations = shared / "data" / "coco128" / "instances.json"
    summary = encode_dataset(images, tmp_path / "fcb", layers=["machine"], quality=2)
    assert summary.done == 4
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    example = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ray_detect.py"), str(tmp_path / "fcb"),
         "--annotations", str(annotations), "--out", str(tmp_path / "dets.json"),
         "--address", cluster],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert example.returncode == 0, example.stderr[-2000:]
    measured = fcodec(
        ["eval", "machine", "--images", images, "--annotations", annotations, "--detector",
         "yolox", "--codecs", "fusioncodec-machine", "--qualities", 2, "-j", 1,
         "--out", tmp_path / "eval"],
        None,
    )  # fmt: skip
    assert measured.exit_code == 0, measured.output
    curve = json.loads((tmp_path / "eval" / "yolox_fusioncodec-machine.json").read_text())
    line = example.stdout.strip().splitlines()[-1]
    assert f"mAP {curve['results']['map'][0]:.4f}," in line, (line, curve["results"])
    assert json.loads((tmp_path / "dets.json").read_text())


@pytest.mark.parametrize("layers", [None, "human", ["human"], ("machine", "machine"), 5])
def test_the_dataset_api_refuses_layers_as_the_codec_does(
    layers: object, pictures: Path, tmp_path: Path
) -> None:
    """One rule for the layers (nets.config.checked_layers), refused before any work."""
    from fusioncodec.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"layers must be \('machine',\)"):
        encode_dataset(pictures, tmp_path / "out", layers=layers)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layer", ["people", None, ["human"]])
def test_the_dataset_api_refuses_a_layer_as_the_codec_does(
    layer: object, pictures: Path, tmp_path: Path
) -> None:
    from fusioncodec.errors import ArgumentError

    with pytest.raises(ArgumentError, match="layer must be one of 'machine', 'human', 'auto'"):
        decode_dataset(pictures, tmp_path / "out", layer=layer)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
