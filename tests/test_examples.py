"""The examples users copy: the public API's docstrings (doctests) and examples/ run as
written."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fusioncodec
import fusioncodec.container
import fusioncodec.pillow

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module", [fusioncodec, fusioncodec.pillow, fusioncodec.container], ids=lambda m: m.__name__
)
def test_docstring_examples_run(module: object) -> None:
    flags = doctest.ELLIPSIS
    globs = {"fusioncodec": fusioncodec, "Container": fusioncodec.Container}
    globs |= {"Layer": fusioncodec.container.Layer}
    result = doctest.testmod(module, extraglobs=globs, optionflags=flags, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_the_api_example_runs(tmp_path: Path) -> None:
    script = ROOT / "examples" / "api_roundtrip.py"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), str(ROOT / "examples" / "street.png")],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "machine  layer:" in done.stdout and "human    layer:" in done.stdout
    assert {p.name for p in (tmp_path / "demo").iterdir()} == {
        "street.fcb",
        "street-machine.png",
        "street-human.png",
    }
