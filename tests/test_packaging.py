"""A built wheel carries the default weights: installed anywhere, it encodes and decodes from
another directory without the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, fusioncodec
from PIL import Image
assert fusioncodec.__file__.startswith(sys.argv[1]), fusioncodec.__file__
print(fusioncodec.__file__)
"""


def test_installed_wheel_codes_with_its_own_weights(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(ROOT)],
        check=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("fusioncodec-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in ("fusioncodec-default", "baseline-default"):
        assert f"fusioncodec/models/{name}.safetensors" in names
        assert f"fusioncodec/models/{name}.json" in names
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
