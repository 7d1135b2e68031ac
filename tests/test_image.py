"""Tests for image conversion (fusioncodec.image): every PIL mode, every size from 1x1."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from fusioncodec.image import padded, to_image, to_rgb_array, to_tensor, upright_srgb
from fusioncodec.nets import STRIDE

SIZES = [(1, 1), (1, 200), (200, 1), (63, 65), (129, 64)]  # (width, height)
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def rgb_noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def palette_image(width: int, height: int, transparent: bool) -> tuple[Image.Image, np.ndarray]:
    """A P image using entries 0..3 (entry 1 transparent if asked) and the RGB it shows."""
    colours = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200], [90, 90, 90]], np.uint8)
    index = (np.arange(width * height).reshape(height, width) % 4).astype(np.uint8)
    image = Image.frombytes("P", (width, height), index.tobytes())
    image.putpalette(colours.ravel().tolist() + [0] * (768 - colours.size))
    shown = colours[index]
    if transparent:
        image.info["transparency"] = 1
        shown = np.where((index == 1)[..., None], 255, shown).astype(np.uint8)
    return image, shown


def make(mode: str, width: int, height: int) -> tuple[Image.Image, np.ndarray]:
    """An image of ``mode`` and the 8-bit RGB a viewer would show for it."""
    rgb = rgb_noise(width, height)
    grey8 = rgb[..., 0]
    grey3 = np.repeat(grey8[..., None], 3, axis=2)
    if mode == "RGB":
        return Image.fromarray(rgb, "RGB"), rgb
    if mode == "L":
        return Image.fromarray(grey8, "L"), grey3
    if mode in ("LA", "RGBA"):
        alpha = rgb[..., 1].copy()
        alpha.flat[0] = 0  # one fully transparent pixel, one fully opaque one
        alpha.flat[-1] = 255 if alpha.size > 1 else 0
        colour = grey3 if mode == "LA" else rgb
        a = alpha[..., None].astype(np.float64) / 255
        shown = np.rint(colour * a + 255 * (1 - a))
        if mode == "LA":
            image = Image.fromarray(np.stack([grey8, alpha], axis=2), "LA")
        else:
            image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
        return image, shown.astype(np.uint8)
    if mode in ("P", "P-transparent"):
        return palette_image(width, height, transparent=mode == "P-transparent")
    if mode in ("I;16", "I"):
        grey16 = grey8.astype(np.uint16) * 257  # k * 257 is k scaled to 16 bits
        grey16.flat[0] = 65535
        expected = grey3.copy()
        expected.reshape(-1, 3)[0] = 255
        if mode == "I;16":
            return Image.fromarray(grey16), expected
        return Image.fromarray(grey16.astype(np.int32), "I"), expected
    if mode == "F":
        values = grey8.astype(np.float32)
        values.flat[0] = 255.0
        expected = grey3.copy()
        expected.reshape(-1, 3)[0] = 255
        return Image.fromarray(values, "F"), expected
    if mode == "CMYK":
        image = Image.fromarray(rgb, "RGB").convert("CMYK")
        return image, np.asarray(image.convert("RGB"))
    if mode == "1":
        bits = grey8 > 127
        return Image.fromarray(bits), np.repeat(np.where(bits, 255, 0)[..., None], 3, 2).astype(
            np.uint8
        )
    raise AssertionError(mode)


MODES = ["RGB", "L", "LA", "RGBA", "P", "P-transparent", "I;16", "I", "F", "CMYK", "1"]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", MODES)
def test_to_rgb_array_every_mode_and_size(mode, size):
    image, expected = make(mode, *size)
    assert image.mode == ("P" if mode.startswith("P") else mode)
    arr = to_rgb_array(image)
    assert arr.dtype == np.uint8
    assert arr.shape == (size[1], size[0], 3)
    assert np.array_equal(arr, expected)


def test_transparent_pixels_become_white():
    for mode in ("RGBA", "LA"):
        image = Image.new(mode, (2, 1), (0,) * len(mode))
        assert np.array_equal(to_rgb_array(image), np.full((1, 2, 3), 255, np.uint8))
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    assert np.array_equal(to_rgb_array(half), np.full((1, 1, 3), 127, np.uint8))


def test_palette_alpha_transparent_pixel_becomes_white():
    image, _ = palette_image(2, 1, transparent=False)
    pa = image.convert("PA")
    pa.putpixel((0, 0), (0, 0))  # palette entry 0, alpha 0
    assert np.array_equal(to_rgb_array(pa)[0, 0], [255, 255, 255])


@pytest.mark.parametrize(("mode", "key"), [("RGB", (1, 2, 3)), ("L", 5)])
def test_colour_key_transparency_becomes_white(tmp_path, mode, key):
    pixels = (
        np.array([[[1, 2, 3], [9, 9, 9]]], np.uint8)
        if mode == "RGB"
        else np.array([[5, 9]], np.uint8)
    )
    path = tmp_path / "keyed.png"
    Image.fromarray(pixels).save(path, transparency=key)
    with Image.open(path) as image:
        image.load()
        assert image.mode == mode and image.info["transparency"] == key
        assert np.array_equal(to_rgb_array(image)[0, 0], [255, 255, 255])


def test_palette_without_transparency_keeps_colours():
    image, shown = palette_image(4, 1, transparent=False)
    assert "transparency" not in image.info
    assert np.array_equal(to_rgb_array(image), shown)
    transparent, shown_t = palette_image(4, 1, transparent=True)
    assert np.array_equal(to_rgb_array(transparent)[0, 1], [255, 255, 255])
    assert np.array_equal(to_rgb_array(transparent), shown_t)


def test_grey_scales():
    # 16-bit: scaled from 65535 even when every value is small
    i16 = Image.fromarray(np.array([[0, 257, 32896, 65535, 300]], np.uint16))
    assert to_rgb_array(i16)[0, :, 0].tolist() == [0, 1, 128, 255, 1]
    # 32-bit 'I': values above 255 mean a 16-bit range; 8-bit values stay as they are
    wide = Image.fromarray(np.array([[0, 257, 65535, 70000]], np.int32), "I")
    assert to_rgb_array(wide)[0, :, 0].tolist() == [0, 1, 255, 255]
    narrow = Image.fromarray(np.array([[0, 100, 255]], np.int32), "I")
    assert to_rgb_array(narrow)[0, :, 0].tolist() == [0, 100, 255]
    negative = Image.fromarray(np.array([[-5, 10]], np.int32), "I")
    assert to_rgb_array(negative)[0, :, 0].tolist() == [0, 10]
    # float: [0, 1] images scale from 1, others are taken as 0..255
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert to_rgb_array(unit)[0, :, 0].tolist() == [0, 128, 255]
    byte_range = Image.fromarray(np.array([[0.0, 100.0, 300.0]], np.float32), "F")
    assert to_rgb_array(byte_range)[0, :, 0].tolist() == [0, 100, 255]
    # big-endian 16-bit
    big = Image.new("I;16B", (2, 1))
    big.putpixel((1, 0), 65535)
    assert to_rgb_array(big)[0, :, 0].tolist() == [0, 255]


@pytest.mark.parametrize("size", SIZES + [(64, 64), (65, 1), (128, 192)], ids=str)
def test_to_tensor_pads_and_to_image_crops(size):
    width, height = size
    rgb = rgb_noise(width, height, seed=1)
    x = to_tensor(Image.fromarray(rgb, "RGB"), CPU)
    assert x.dtype == torch.float32 and x.device == CPU
    assert x.shape == (1, 3, padded(height), padded(width))
    assert x.shape[2] % STRIDE == 0 and x.shape[3] % STRIDE == 0
    assert x.shape[2] - height < STRIDE and x.shape[3] - width < STRIDE
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    # replicate padding: the padded area repeats the last row / column
    assert torch.equal(
        x[..., height:, :width],
        x[..., height - 1 : height, :width].expand_as(x[..., height:, :width]),
    )
    assert torch.equal(x[..., :, width:], x[..., :, width - 1 : width].expand_as(x[..., :, width:]))
    back = to_image(x, width, height)
    assert back.mode == "RGB" and back.size == (width, height)
    assert np.array_equal(np.asarray(back), rgb)


def test_padded():
    assert [padded(s) for s in (1, 63, 64, 65, 128, 129)] == [64, 64, 64, 128, 128, 192]


def test_to_image_clamps_and_rounds():
    x = (
        torch.tensor([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 7.0])
        .reshape(1, 1, 1, 6)
        .expand(1, 3, 2, 6)
    )
    image = to_image(x, 6, 1)
    assert image.size == (6, 1)
    assert np.asarray(image)[0, :, 0].tolist() == [0, 0, 0, 1, 255, 255]


@pytest.mark.parametrize("mode", MODES)
def test_codec_round_trip_every_mode(tiny_codec, mode):
    image, _ = make(mode, 63, 65)
    data = tiny_codec.encode(image, quality=4)
    for layer in ("machine", "human"):
        decoded = tiny_codec.decode(data, layer)
        assert decoded.mode == "RGB" and decoded.size == image.size


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_codec_round_trip_every_size(tiny_codec, size):
    image = Image.fromarray(rgb_noise(*size), "RGB")
    data = tiny_codec.encode(image, quality=2)
    for layer in ("machine", "human"):
        decoded = tiny_codec.decode(data, layer)
        assert decoded.mode == "RGB" and decoded.size == size
    # grey and alpha at the same size too
    grey, _ = make("LA", *size)
    assert tiny_codec.decode(tiny_codec.encode(grey, layers=("machine",)), "machine").size == size


def test_codec_treats_modes_like_their_rgb_rendering(tiny_codec):
    """Encoding a non-RGB image codes exactly the RGB picture a viewer would show."""
    for mode in ("RGBA", "P-transparent", "I;16", "CMYK"):
        image, shown = make(mode, 40, 30)
        data = tiny_codec.encode(image, layers=("machine",), quality=3)
        assert data == tiny_codec.encode(
            Image.fromarray(shown, "RGB"), layers=("machine",), quality=3
        )


# -- what a viewer shows: EXIF orientation, ICC colours, HEIC -------------------------------


def test_exif_orientation_is_applied(tiny_codec):
    """An Orientation=6 JPEG (stored sideways) is coded upright, as viewers show it."""
    stored = Image.new("RGB", (60, 40), (200, 30, 30))
    stored.paste((20, 20, 220), (0, 0, 30, 40))  # left half blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=95)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    data = tiny_codec.encode(image)
    container = tiny_codec.parse(data)
    assert (container.width, container.height) == (40, 60)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue())))
    assert data == tiny_codec.encode(upright)


def test_icc_profile_is_converted_to_srgb(tiny_codec, shared):
    """Adobe RGB pixels are converted to sRGB before coding (not read as if sRGB)."""
    path = shared / "data" / "train" / "coco_mini" / "images" / "000000159269.jpg"
    if not path.exists():
        pytest.skip("no Adobe RGB sample in the shared data")
    image = Image.open(path).crop((0, 0, 96, 80))
    image.info["icc_profile"] = Image.open(path).info["icc_profile"]
    profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
    assert "Adobe RGB" in ImageCms.getProfileDescription(profile)
    srgb = ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"))
    converted = np.asarray(upright_srgb(image))
    assert np.array_equal(converted, np.asarray(srgb))
    assert np.abs(converted.astype(int) - np.asarray(image).astype(int)).max() > 10
    assert tiny_codec.encode(image) == tiny_codec.encode(srgb)  # what the codec codes


def test_heic_input_is_readable_when_pillow_heif_is_installed(tmp_path, tiny_weights):
    pillow_heif = pytest.importorskip("pillow_heif")
    from click.testing import CliRunner

    from fusioncodec.cli import cli

    pillow_heif.register_heif_opener()
    path = tmp_path / "photo.heic"
    try:
        Image.new("RGB", (64, 48), (10, 120, 240)).save(path, quality=90)
    except (OSError, ValueError, KeyError) as exc:
        pytest.skip(f"this libheif cannot write HEIC ({exc})")
    env = {"FUSIONCODEC_WEIGHTS": str(tiny_weights)}
    result = CliRunner().invoke(cli, ["encode", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "photo.fcb").exists()
