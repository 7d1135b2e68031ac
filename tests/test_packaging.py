"""A built wheel carries the default weights and their graphs: installed anywhere, it
encodes and decodes from another directory without the checkout; installed alone in a
fresh virtual environment (the edge install), it codes without torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, fusioncodec
from PIL import Image
assert fusioncodec.__file__.startswith(sys.argv[1]), fusioncodec.__file__
print(fusioncodec.__file__)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(ROOT)],
        check=True, timeout=600, cwd=wheels,
    )  # fmt: skip
    (built,) = wheels.glob("fusioncodec-*.whl")
    return built


def test_installed_wheel_codes_with_its_own_weights(tmp_path: Path, wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in ("fusioncodec-default", "baseline-default"):
        assert f"fusioncodec/models/{name}.safetensors" in names
        assert f"fusioncodec/models/{name}.json" in names
    assert "fusioncodec/models/fusioncodec-default.graphs/layout.json" in names
    assert "fusioncodec/models/fusioncodec-default.graphs/human.synthesis.onnx" in names
    assert "fusioncodec/py.typed" in names
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, timeout=600,
    )  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "street.png", work / "photo.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSIONCODEC_")}
    env["PYTHONPATH"] = str(site)  # before the checkout's editable finder
    check = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(site)], cwd=work, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    cli = [sys.executable, "-m", "fusioncodec.cli"]
    for args in (
        ["encode", "photo.png", "-q", "2"],
        ["decode", "photo.fcb", "--layer", "human", "-o", "people.png"],
    ):
        run = subprocess.run(
            cli + args, cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
    assert (work / "photo.fcb").stat().st_size > 100
    assert (work / "people.png").exists()


EDGE = """
import importlib.util, sys, fusioncodec
from PIL import Image
assert importlib.util.find_spec("torch") is None, "torch is installed"
data = fusioncodec.encode("photo.png", quality=3)
assert fusioncodec.decode(data, layer="machine").size == Image.open("photo.png").size
assert "torch" not in sys.modules and fusioncodec.load().backend == "onnx"
"""


def test_edge_install_codes_without_torch(tmp_path: Path, wheel: Path) -> None:
    """``pip install <wheel>`` alone in a fresh virtual environment: the API and fcodec
    encode and decode from another folder, and torch is nowhere."""
    venv = tmp_path / "edge"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, fcodec = venv / "bin" / "python", venv / "bin" / "fcodec"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUSIONCODEC_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "street.png", work / "photo.png")
    api = subprocess.run(
        [str(python), "-c", EDGE], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert api.returncode == 0, api.stderr
    for args in (["encode", "photo.png", "-q", "2"], ["decode", "photo.fcb", "-o", "seen.png"]):
        run = subprocess.run(
            [str(fcodec), *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
    assert (work / "seen.png").stat().st_size > 1000
    for args in (["encode", "photo.png", "--backend", "torch", "-o", "t.fcb"], ["bench"]):
        run = subprocess.run(
            [str(fcodec), *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
        assert "needs torch" in run.stderr and "pip install 'fusioncodec[torch]'" in run.stderr
    assert not (work / "t.fcb").exists()
