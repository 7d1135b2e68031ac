"""The API's error contract: which exception, when, and that cheap checks come first."""

from __future__ import annotations

import pytest
from PIL import Image

import fusioncodec
from fusioncodec import ArgumentError, FormatError, FusionCodecError, ImageError, WeightsError
from fusioncodec.codec import Codec, SingleLayerRunner
from fusioncodec.container import Container, Layer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture
def no_work(tiny_codec, monkeypatch):
    """Fails the test if any network or range coder runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("coding work started before the arguments were checked")

    for module in (tiny_codec.model.machine.g_a, tiny_codec.model.additional.g_a):
        monkeypatch.setattr(module, "forward", forbidden)
    monkeypatch.setattr("fusioncodec.scalable.decode_payload", forbidden)
    return tiny_codec


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.new("RGB", (40, 30), (10, 200, 90))


def test_every_error_is_a_fusioncodec_value_error():
    for cls in (ArgumentError, FormatError, WeightsError, ImageError):
        assert issubclass(cls, FusionCodecError) and issubclass(cls, ValueError)
    assert issubclass(ImageError, OSError)  # as Pillow's own errors are
    assert fusioncodec.container.FormatError is FormatError
    assert fusioncodec.weights.WeightsError is WeightsError


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quality": 9}, "quality must be between 1 and 8, got 9"),
        ({"quality": 0.5}, "quality must be between 1 and 8"),
        ({"quality": float("nan")}, "quality must be between 1 and 8"),
        ({"quality": "abc"}, "quality must be between 1 and 8"),
        ({"human_quality": 0}, "human_quality must be between 1 and 8, got 0"),
        ({"layers": ("human",)}, "layers must be"),
        ({"layers": ("human", "machine")}, "layers must be"),
    ],
)
def test_bad_encode_arguments_fail_before_any_work(no_work, image, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        no_work.encode(image, **kwargs)


def test_too_large_a_picture_fails_before_any_work(no_work):
    with pytest.raises(ArgumentError, match="too large"):
        no_work.encode(Image.new("1", (20_000, 5_001)))  # 1 byte per pixel while it waits


@pytest.fixture(scope="module")
def two_layer(tiny_codec, image) -> bytes:
    return tiny_codec.encode(image)


def test_a_file_quality_outside_the_model_fails_before_decoding(two_layer, no_work):
    good = Container.from_bytes(two_layer)
    machine, human = good.layers
    bad = Container(
        good.width,
        good.height,
        good.model_name,
        good.model_hash,
        good.m,
        (machine, Layer("human", 9.0, human.payload)),
    ).to_bytes()
    with pytest.raises(FormatError, match="human layer has quality 9, outside"):
        no_work.decode(bad, "human")


def test_bad_layer_and_device(tiny_codec, tiny_weights, image):
    with pytest.raises(ArgumentError, match="layer must be one of"):
        tiny_codec.decode(b"", "people")
    with pytest.raises(ArgumentError, match="unknown device 'tpu'"):
        Codec.from_file(tiny_weights, "tpu")


def test_missing_or_wrong_kind_weights(tmp_path, tiny_weights, tiny_baseline_weights):
    with pytest.raises(WeightsError, match="weights not found"):
        fusioncodec.load(tmp_path / "none.safetensors", "cpu")
    from fusioncodec.weights import load

    with pytest.raises(WeightsError, match="not a scalable codec"):
        Codec(load(tiny_baseline_weights), "cpu")
    with pytest.raises(WeightsError, match="not a baseline"):
        SingleLayerRunner(load(tiny_weights), "cpu")


def test_baseline_runner_checks_quality(tiny_baseline_weights, image):
    from fusioncodec.weights import load

    runner = SingleLayerRunner(load(tiny_baseline_weights), "cpu")
    with pytest.raises(ArgumentError, match="quality must be between 1 and 8"):
        runner.encode(image, 12)


def test_api_takes_paths_bytes_files_and_images(tiny_codec, tiny_weights, image, tmp_path):
    """encode: PIL image, path, image bytes, file object; decode: bytes, path, file object."""
    import io

    png = tmp_path / "x.png"
    image.save(png)
    reference = tiny_codec.encode(image)
    assert tiny_codec.encode(png) == reference
    assert tiny_codec.encode(str(png)) == reference
    assert tiny_codec.encode(png.read_bytes()) == reference
    with open(png, "rb") as f:
        assert tiny_codec.encode(f) == reference
    fcb = tmp_path / "x.fcb"
    fcb.write_bytes(reference)
    pixels = tiny_codec.decode(reference).tobytes()
    assert tiny_codec.decode(fcb).tobytes() == pixels
    assert tiny_codec.decode(io.BytesIO(reference)).tobytes() == pixels
    assert tiny_codec.decode(bytearray(reference)).tobytes() == pixels
    assert fusioncodec.decode(fcb, weights=tiny_weights, device="cpu").tobytes() == pixels
    with pytest.raises(ArgumentError, match="not an .fcb source"):
        tiny_codec.decode(12345)


def test_api_messages_are_worded_for_python(tmp_path):
    with pytest.raises(WeightsError) as info:
        fusioncodec.load(tmp_path / "none.safetensors", "cpu")
    assert "weights not found" in str(info.value) and "--weights" not in str(info.value)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ArgumentError, match="device 'cuda' asked for") as info:
            fusioncodec.load(None, "cuda")
        assert "--device" not in str(info.value)


def test_unreadable_pictures_raise_image_error(tiny_codec, tmp_path, monkeypatch):
    """Pictures Pillow cannot read raise ImageError (a FusionCodecError and an OSError);
    a missing file raises open's own error; over the size cap, ArgumentError while Pillow
    reads the header, with Pillow's own limit left as it was."""
    import fusioncodec.codec

    picture = tmp_path / "p.png"
    Image.new("RGB", (40, 24), (90, 30, 200)).save(picture)
    whole = picture.read_bytes()
    for data, message in [
        (b"hello, I am text", "not an image Pillow can read"),
        (whole[:60], "cannot read image"),
    ]:
        with pytest.raises(ImageError, match=message):
            tiny_codec.encode(data)
    with pytest.raises(FileNotFoundError):
        tiny_codec.encode(tmp_path / "missing.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    assert Container.from_bytes(tiny_codec.encode(picture)).width == 40  # 960 px: ours apply
    monkeypatch.setattr(fusioncodec.sources, "MAX_CODEC_PIXELS", 500)
    for source in (picture, whole):
        with pytest.raises(ArgumentError, match="image too large"):
            tiny_codec.encode(source)
        with pytest.raises(ArgumentError, match="image too large"):
            fusioncodec.sources.image_size(source)
    assert Image.MAX_IMAGE_PIXELS == 10


def _truncated_jpeg(tmp_path) -> Image.Image:
    import io

    buffer = io.BytesIO()
    Image.effect_noise((64, 48), 60).convert("RGB").save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return Image.open(path)  # lazily: the damage shows when the pixels are read


def _text_file(tmp_path, mode: str):
    path = tmp_path / "text.txt"
    path.write_bytes("plain text, not an .fcb file: é".encode() + b"\xff")
    return open(path, mode)  # noqa: SIM115 - closed by the test


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (lambda c, t: c.encode(None), ArgumentError, "image must be"),
        (lambda c, t: c.encode(1), ArgumentError, "got int"),
        (lambda c, t: c.encode([]), ArgumentError, "got list"),
        (lambda c, t: c.encode({}), ArgumentError, "got dict"),
        (lambda c, t: c.encode(__import__("numpy").zeros((4, 4, 2))), ArgumentError, "uint8"),
        (lambda c, t: c.encode(Image.new("L", (8, 8)), layers=None), ArgumentError, "layers"),
        (lambda c, t: c.encode(Image.new("L", (8, 8)), layers=5), ArgumentError, "layers"),
        (lambda c, t: c.encode(Image.new("RGB", (32769, 1))), ArgumentError, "32768"),
        (lambda c, t: c.encode(_truncated_jpeg(t)), ImageError, "truncated"),
        (lambda c, t: fusioncodec.load(device=["cpu"]), ArgumentError, "device must be"),
        (lambda c, t: fusioncodec.load(weights=3), ArgumentError, "weights must be"),
        (lambda c, t: c.decode(__import__("io").StringIO("abc")), ArgumentError, "binary"),
        (lambda c, t: c.decode(_text_file(t, "r")), ArgumentError, "binary"),
        (lambda c, t: c.decode(b"FCB\0\1\2".decode("latin-1")), ArgumentError, "NUL"),
        (lambda c, t: c.decode(3.5), ArgumentError, "not an .fcb source"),
        (lambda c, t: c.decode(_text_file(t, "rb")), FormatError, ""),
    ],
)
def test_every_wrong_value_at_a_public_door_is_a_one_line_error(
    no_work, tmp_path, call, error, needle
):
    """A table of what users have passed by mistake: each is a one-line FusionCodecError,
    raised before any coding work."""
    with pytest.raises(error) as caught:
        call(no_work, tmp_path)
    assert isinstance(caught.value, FusionCodecError)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_arrays_and_premultiplied_grey_are_pictures(tiny_codec):
    import numpy as np

    rgb = np.full((30, 40, 3), (10, 200, 90), np.uint8)
    assert tiny_codec.encode(rgb) == tiny_codec.encode(Image.fromarray(rgb))
    grey = Image.merge("La", [Image.new("L", (40, 30), 60), Image.new("L", (40, 30), 128)])
    over_white = Image.new("RGB", (40, 30), (187,) * 3)  # 60 + 255 - 128
    assert tiny_codec.encode(grey) == tiny_codec.encode(over_white)
