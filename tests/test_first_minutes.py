"""What a newcomer meets first: errors that need no model come before the model loads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, ok
from PIL import Image

import fusioncodec
from fusioncodec.cli import cli


@pytest.fixture()
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.new("RGB", (48, 32), (30, 140, 200)).save(path)
    return path


def test_errors_that_need_no_model_come_before_torch_loads(
    picture: Path, tmp_path: Path, tiny_weights: Path
) -> None:
    (tmp_path / "exists.fcb").write_bytes(b"mine")
    (tmp_path / "exists.png").write_bytes(b"mine")
    cases = [
        (["encode", picture, "-q", "9", "-o", tmp_path / "x.fcb"], "between 1 and 8"),
        (["encode", picture, "--human-quality", "12", "-o", tmp_path / "x.fcb"], "between 1"),
        (["encode", picture, "-o", tmp_path / "exists.fcb"], "already exists"),
        (["decode", tmp_path / "exists.fcb", "-o", tmp_path / "exists.png"], "already exists"),
    ]
    if not any(map(os.path.exists, ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd"))):
        cases.append((["encode", picture, "--device", "cuda"], "no CUDA device"))
    code = textwrap.dedent(
        f"""
        import sys
        from click.testing import CliRunner
        from fusioncodec.cli import cli
        env = {{"FUSIONCODEC_WEIGHTS": {str(tiny_weights)!r}}}
        for args, needle in {[([str(a) for a in args], n) for args, n in cases]!r}:
            res = CliRunner().invoke(cli, args, env=env)
            assert res.exit_code == 1 and needle in res.output, (args, res.output)
            assert "torch" not in sys.modules, ("torch loaded for", args)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "exists.fcb").read_bytes() == b"mine"


def test_a_named_outputs_missing_folder_is_made(picture: Path, tmp_path: Path, tiny_weights):
    env = {"FUSIONCODEC_WEIGHTS": str(tiny_weights)}
    target = tmp_path / "q" / "r" / "x.fcb"
    ok(CliRunner().invoke(cli, ["encode", str(picture), "-o", str(target)], env=env))
    assert fusioncodec.decode(target.read_bytes(), weights=tiny_weights).size == (48, 32)


def test_an_unwritable_output_folder_fails_before_any_coding(
    picture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and access(p, mode))
    monkeypatch.setattr(fusioncodec, "load", lambda *a, **k: pytest.fail("model loaded"))
    other = tmp_path / "b.png"
    Image.new("RGB", (16, 16)).save(other)
    for args in ([picture, "-o", locked / "x.fcb"], [picture, other, "-o", locked]):
        result = CliRunner().invoke(cli, ["encode", *map(str, args)])
        assert_one_line_error(result, "locked: cannot write there")
    assert list(locked.iterdir()) == []


def test_decode_takes_the_best_layer_a_file_has_unless_one_is_asked_for(
    picture: Path, tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"FUSIONCODEC_WEIGHTS": str(tiny_weights)}
    runner = CliRunner()
    both, stripped = tmp_path / "both.fcb", tmp_path / "stripped.fcb"
    ok(runner.invoke(cli, ["encode", str(picture), "-o", str(both)], env=env))
    ok(runner.invoke(cli, ["strip", str(both), "-o", str(stripped)], env=env))
    ok(runner.invoke(cli, ["decode", str(stripped), str(both), "-o", str(tmp_path)], env=env))
    assert (tmp_path / "stripped.machine.png").exists() and (tmp_path / "both.human.png").exists()
    ok(runner.invoke(cli, ["decode", str(stripped), "-o", str(tmp_path / "x.png")], env=env))
    machine = fusioncodec.decode(stripped, "machine", weights=tiny_weights)
    assert Image.open(tmp_path / "x.png").tobytes() == machine.tobytes()
    human = ["decode", str(stripped), "--layer", "human", "-o", str(tmp_path / "y.png")]
    asked = runner.invoke(cli, human, env=env)
    assert_one_line_error(asked, "has no human layer")
    monkeypatch.setenv("FUSIONCODEC_WEIGHTS", str(tiny_weights))
    with Image.open(stripped) as image:  # Pillow: the same rule
        assert image.tobytes() == machine.tobytes()


def test_top_level_help_shows_whole_command_descriptions() -> None:
    result = ok(CliRunner().invoke(cli, ["--help"]))
    commands = result.output.split("Commands:")[1].splitlines()
    assert len([c for c in commands if c.strip()]) >= 9
    assert not [c for c in commands if c.rstrip().endswith("...")]


def test_weights_named_in_the_environment_are_named_in_the_error(picture: Path) -> None:
    env = {"FUSIONCODEC_WEIGHTS": "/no/such/weights.safetensors"}
    result = CliRunner().invoke(cli, ["encode", str(picture)], env=env)
    assert_one_line_error(result, "weights not found: /no/such", "$FUSIONCODEC_WEIGHTS")
    assert "FUSIONCODEC_MODELS" not in result.output


def test_the_shell_example_can_run_twice(tmp_path: Path, tiny_weights: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.new("RGB", (40, 24), (90, 60, 30)).save(frames / "f1.png")
    script = Path(__file__).resolve().parents[1] / "examples" / "pipeline.sh"
    bin_dir = str(Path(sys.executable).parent)
    env = os.environ | {
        "FUSIONCODEC_WEIGHTS": str(tiny_weights),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    for _ in range(2):  # the second run replaces what the first wrote
        done = subprocess.run(
            ["bash", str(script), str(frames)], cwd=tmp_path, env=env, capture_output=True,
            text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "demo" / "seen").iterdir()) == [
        "f1.machine.png",
        "people.png",
    ]


def test_missing_weights_fail_before_torch_loads(picture: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from click.testing import CliRunner
        from fusioncodec.cli import cli
        for command in ("encode", "decode"):
            args = [command, {str(picture)!r}, "--weights", "/no/w.safetensors", "-o", "x"]
            res = CliRunner().invoke(cli, args)
            assert res.exit_code == 1 and "weights not found" in res.output, res.output
        assert "torch" not in sys.modules
        """
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "name"), [(["bench"], "fcodec bench"), (["eval", "human"], "fcodec eval human")]
)
def test_a_command_whose_module_cannot_import_is_a_one_line_error(
    args: list[str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The top group and ``fcodec eval`` load their commands lazily through one class: a
    command whose module fails to import says so in one line, at either level."""
    import importlib

    real = importlib.import_module

    def broken(module: str, *rest: object) -> object:
        if module.startswith(("fusioncodec.cli.bench", "fusioncodec.cli.eval_human")):
            raise ImportError("No module named 'onnxruntime'")
        return real(module, *rest)

    monkeypatch.setattr(importlib, "import_module", broken)
    result = CliRunner().invoke(cli, args)
    assert_one_line_error(result, f"{name} is not available here", "onnxruntime")
