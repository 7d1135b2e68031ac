"""The doors around the format: what the command line reads (regular files only, no more
than a header declares), what it prints (no terminal control characters from a file) and how
an interrupt ends it (exit 130, wherever it lands)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error
from PIL import Image

import fusioncodec
from fusioncodec.cli import cli
from fusioncodec.container import MAX_HEADER_SIZE, Container, Layer
from fusioncodec.errors import ArgumentError, FormatError
from fusioncodec.sources import read_container

FCODEC = [sys.executable, "-m", "fusioncodec.cli"]


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Path:
    folder = tmp_path_factory.mktemp("doors")
    Image.new("RGB", (64, 48), (200, 30, 90)).save(folder / "a.png")
    env = {"FUSIONCODEC_WEIGHTS": str(tiny_weights)}
    result = CliRunner().invoke(cli, ["encode", str(folder / "a.png"), "-o", str(folder)], env=env)
    assert result.exit_code == 0, result.output
    return folder / "a.fcb"


def _fcodec(args: list[str], stdin: object = None, timeout: float = 60) -> object:
    return subprocess.run(
        [*FCODEC, *args], stdin=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_a_fifo_or_a_device_is_refused_not_waited_on(tmp_path: Path, coded: Path) -> None:
    fifo = tmp_path / "pipe.fcb"
    os.mkfifo(fifo)
    for args in (["info", str(fifo)], ["info", "/dev/zero"], ["strip", str(fifo), "-o", "x"]):
        done = _fcodec(args, timeout=30)  # before the fix: blocks, or reads without end
        assert done.returncode == 1, done
        assert done.stderr.startswith("fcodec: error: ") and "not a regular file" in done.stderr
    weights = _fcodec(["decode", str(coded), "-o", str(tmp_path / "x.png"), "--weights", str(fifo)])
    assert weights.returncode == 1 and "not a regular file" in weights.stderr, weights
    assert not (tmp_path / "x.png").exists()


def test_a_stream_is_read_no_further_than_its_header_declares(coded: Path) -> None:
    data = coded.read_bytes()

    class Counting(io.BytesIO):
        taken = 0

        def read(self, n: int | None = -1) -> bytes:
            chunk = super().read(n)
            Counting.taken += len(chunk)
            return chunk

    endless = Counting(data + b"\0" * 1_000_000)
    with pytest.raises(FormatError, match="trailing garbage"):
        read_container(endless)
    assert Counting.taken == max(len(data) + 1, MAX_HEADER_SIZE)
    assert read_container(io.BytesIO(data)).to_bytes() == data
    with pytest.raises(ArgumentError, match="not a binary stream"):
        read_container(io.StringIO("text"))
    with open("/dev/zero", "rb") as zeros:  # fcodec info - < /dev/zero: one header's worth
        done = _fcodec(["info", "-"], stdin=zeros, timeout=30)
    assert done.returncode == 1 and done.stderr.startswith("fcodec: error: <stdin>: "), done


def test_info_escapes_what_a_terminal_would_act_on(tmp_path: Path, coded: Path) -> None:
    honest = Container.from_bytes(coded.read_bytes())
    name = "evil\x1b[2J\nline\x00\u202eé"
    crafted = Container(
        width=honest.width,
        height=honest.height,
        model_name=name,
        model_hash=honest.model_hash,
        m=honest.m,
        layers=tuple(Layer(x.kind, x.quality, x.payload) for x in honest.layers),
    )
    path = tmp_path / "crafted.fcb"
    path.write_bytes(crafted.to_bytes())
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    (model,) = [line for line in result.output.splitlines() if "model" in line]
    assert model.isprintable() and "\x1b" not in result.output and "\u202e" not in result.output
    assert "evil\\x1b[2J\\nline\\x00\\u202eé" in model


def test_ctrl_c_while_the_model_loads_exits_130(
    coded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch and safetensors may turn the KeyboardInterrupt into an error of their own."""

    def interrupted_load(*_args: object, **_kwargs: object) -> None:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise RuntimeError("Could not determine the shape of object type 'dict'") from None

    monkeypatch.setattr(fusioncodec, "load", interrupted_load)
    result = CliRunner().invoke(cli, ["decode", str(coded), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == "fcodec: interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    assert_one_line_error(
        CliRunner().invoke(cli, ["info", str(tmp_path / "none.fcb")]), "none.fcb"
    )
