"""The Pillow plugin, through Pillow's public API only."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fusioncodec  # noqa: F401 - registers the plugin
from fusioncodec import ArgumentError, FormatError
from fusioncodec.codec import Codec

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture
def weights(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FUSIONCODEC_WEIGHTS", str(tiny_weights))
    return tiny_weights


@pytest.fixture
def picture() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))


def test_save_then_open_decodes_the_human_layer(weights, picture, tmp_path):
    path = tmp_path / "x.fcb"
    picture.save(path, quality=3)  # format from the extension
    codec = Codec.from_file(weights, "cpu")
    data = path.read_bytes()
    with Image.open(path) as image:
        assert image.format == "FCB" and image.size == (53, 37) and image.mode == "RGB"
        assert image.info["fcb_layers"] == ("machine", "human")
        assert np.array_equal(np.asarray(image), np.asarray(codec.decode(data, "human")))
    assert codec.parse(data).layer("machine").quality == 3.0


def test_layers_are_selectable_and_saved_as_asked(weights, picture, tmp_path):
    codec = Codec.from_file(weights, "cpu")
    buffer = io.BytesIO()
    picture.save(buffer, format="FCB", quality=5, human_quality=2)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        image.select_layer("machine")
        machine = np.asarray(codec.decode(buffer.getvalue(), "machine"))
        assert np.array_equal(np.asarray(image), machine)
    path = tmp_path / "m.fcb"
    picture.save(path, quality=2, layers=("machine",))
    with Image.open(path) as image:
        assert image.info["fcb_layers"] == ("machine",)  # machine-only: decoded as such
        machine = np.asarray(codec.decode(path.read_bytes(), "machine"))
        assert np.array_equal(np.asarray(image), machine)
        with pytest.raises(ArgumentError, match="must come before the pixels are loaded"):
            image.select_layer("machine")  # was accepted, and the next load() failed
        image.load()
    with Image.open(path) as image, pytest.raises(ArgumentError, match="no human layer"):
        image.select_layer("human")


def test_other_formats_are_unaffected(weights, picture, tmp_path):
    path = tmp_path / "x.png"
    picture.save(path)
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert Image.registered_extensions()[".fcb"] == "FCB"


def test_a_damaged_fcb_is_a_format_error(weights, picture, tmp_path):
    path = tmp_path / "x.fcb"
    picture.save(path, quality=3)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    with pytest.raises(FormatError):
        Image.open(io.BytesIO(bytes(data))).load()


def test_pillows_pixel_limit_guards_fcb_files_too(weights, picture, tmp_path, monkeypatch):
    """README: a service caps what it decodes with Image.MAX_IMAGE_PIXELS (checked from the
    header, before any decoding)."""
    path = tmp_path / "x.fcb"
    picture.save(path, quality=3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 53 * 37 // 2 - 1)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
