"""Tests for the scalable codec (fusioncodec.codec) and the public encode/decode API."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fusioncodec
from fusioncodec.codec import Codec
from fusioncodec.coding import RangeEncoder
from fusioncodec.coding.tables import Uniform
from fusioncodec.container import Container, FormatError, Layer
from fusioncodec.image import to_image, to_tensor
from fusioncodec.nets import ScalableCodec
from fusioncodec.nets.layers import GainUnit, lambda_log_gains
from fusioncodec.weight_file import default_weights
from fusioncodec.weights import export

WIDTH, HEIGHT = 90, 70  # not multiples of 64: exercises padding and cropping
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def textured(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> Image.Image:
    """Gradients, stripes and noise: something a codec has to spend bits on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    g = 255 * xx / max(width - 1, 1)
    b = 255 * ((xx // 8 + yy // 8) % 2)
    arr = np.stack([r, g, b], axis=2) + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def q_tensor(quality: float) -> torch.Tensor:
    return torch.tensor([quality - 1.0], dtype=torch.float32)


@torch.no_grad()
def compressed(latent, y, quality, encoder, context=None) -> torch.Tensor:
    """A latent codec's integer coder run on y (with the gain unit's gain), as the encoder."""
    q = q_tensor(quality)
    y_hat = latent.coder().compress(
        y.numpy(),
        quality - 1.0,
        encoder,
        lambda scaled: latent.h_a(torch.from_numpy(scaled)).numpy(),
        None if context is None else context.numpy(),
        gain=latent.gain.gain(q).numpy().ravel(),
    )
    return torch.from_numpy(y_hat)


@torch.no_grad()
def encoder_side(codec: Codec, image: Image.Image, quality: float, human_quality: float) -> dict:
    """What the encoder itself reconstructs (and writes), computed from the networks."""
    model = codec.model
    x = to_tensor(image, codec.device)
    width, height = image.size
    machine_encoder, human_encoder = RangeEncoder(), RangeEncoder()
    # each payload starts with its binding: CRC-32 of the header fields it was coded for
    # (and of the machine payload, for the human layer), as two uniform 16-bit symbols
    fields = struct.pack("<BfHHB", 0, quality, width, height, model.config.m)
    binding = zlib.crc32(fields)
    machine_encoder.encode(np.array([binding & 0xFFFF, binding >> 16], np.int32), Uniform(65536))
    y_machine = compressed(model.machine.latent, model.machine.g_a(x), quality, machine_encoder)
    # ... and ends with the CRC-32 of the decoded latent's float32 bytes
    check = zlib.crc32(y_machine.numpy().astype("<f4").tobytes())
    machine_encoder.encode(np.array([check & 0xFFFF, check >> 16], np.int32), Uniform(65536))
    machine_payload = machine_encoder.get_compressed().astype("<u4").tobytes()
    fields = struct.pack("<BfHHB", 1, human_quality, width, height, model.config.m)
    binding = zlib.crc32(fields + machine_payload)
    human_encoder.encode(np.array([binding & 0xFFFF, binding >> 16], np.int32), Uniform(65536))
    y_add = compressed(
        model.additional.latent,
        model.additional.analyze(x, y_machine),
        human_quality,
        human_encoder,
        model.additional.context(y_machine),
    )
    check = zlib.crc32(y_add.numpy().astype("<f4").tobytes())
    human_encoder.encode(np.array([check & 0xFFFF, check >> 16], np.int32), Uniform(65536))
    return {
        "y_machine": y_machine,
        "y_human": model.human.fusion(y_machine, y_add),
        "machine": to_image(model.machine.g_s(y_machine), width, height),
        "human": to_image(model.human.g_s(model.human.fusion(y_machine, y_add)), width, height),
        "machine_payload": machine_payload,
        "human_payload": human_encoder.get_compressed().astype("<u4").tobytes(),
    }


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return textured()


@pytest.fixture(scope="module")
def two_layer(tiny_codec: Codec, image: Image.Image) -> bytes:
    return tiny_codec.encode(image, quality=4)


# -- bit-exact reconstruction ------------------------------------------------------------


@pytest.mark.parametrize(("quality", "human_quality"), [(4.0, 4.0), (1.0, 8.0), (8.0, 2.0)])
def test_decoded_layers_equal_encoder_reconstruction(tiny_codec, image, quality, human_quality):
    data = tiny_codec.encode(image, quality=quality, human_quality=human_quality)
    expected = encoder_side(tiny_codec, image, quality, human_quality)
    container = tiny_codec.parse(data)
    assert container.kinds == ("machine", "human")
    assert container.layer("machine").payload == expected["machine_payload"]
    assert container.layer("human").payload == expected["human_payload"]
    assert (container.width, container.height) == image.size
    assert torch.equal(
        torch.from_numpy(tiny_codec.decode_latent(container, "machine")), expected["y_machine"]
    )
    assert torch.equal(
        torch.from_numpy(tiny_codec.decode_latent(container, "human")), expected["y_human"]
    )
    for layer in ("machine", "human"):
        decoded = tiny_codec.decode(data, layer)
        assert decoded.size == image.size
        assert np.array_equal(pixels(decoded), pixels(expected[layer]))


def test_bit_exact_with_default_thread_count(tiny_codec, one_torch_thread):
    """The module runs single-threaded for speed; check torch's default pool once too."""
    image = textured(70, 20, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(one_torch_thread)
    try:
        data = tiny_codec.encode(image, quality=5)
        expected = encoder_side(tiny_codec, image, 5, 5)
        for layer in ("machine", "human"):
            assert np.array_equal(pixels(tiny_codec.decode(data, layer)), pixels(expected[layer]))
    finally:
        torch.set_num_threads(threads)


def test_decoding_twice_gives_identical_pixels(tiny_codec, two_layer):
    for layer in ("machine", "human"):
        first = pixels(tiny_codec.decode(two_layer, layer))
        second = pixels(tiny_codec.decode(two_layer, layer))
        assert np.array_equal(first, second)
    # a parsed Container decodes like the bytes it came from
    container = tiny_codec.parse(two_layer)
    assert np.array_equal(pixels(tiny_codec.decode(container, "human")), second)


def test_encoding_is_deterministic(tiny_codec, image, two_layer):
    assert tiny_codec.encode(image, quality=4) == two_layer


def test_machine_only_file_matches_machine_layer_of_two_layer_file(tiny_codec, image, two_layer):
    machine_only = tiny_codec.encode(image, layers=("machine",), quality=4)
    assert len(machine_only) < len(two_layer)
    single, both = tiny_codec.parse(machine_only), tiny_codec.parse(two_layer)
    assert single.kinds == ("machine",)
    assert single.layer("machine").payload == both.layer("machine").payload
    assert single.layer("machine").quality == both.layer("machine").quality
    assert np.array_equal(
        pixels(tiny_codec.decode(machine_only, "machine")),
        pixels(tiny_codec.decode(two_layer, "machine")),
    )


def test_stripping_the_human_layer(tiny_codec, image, two_layer):
    stripped = Container.from_bytes(two_layer).without_human()
    assert stripped.kinds == ("machine",)
    data = stripped.to_bytes()
    # the stripped file is byte for byte what a machine-only encode writes
    assert data == tiny_codec.encode(image, layers=("machine",), quality=4)
    assert (
        stripped.layer("machine").payload
        == Container.from_bytes(two_layer).layer("machine").payload
    )
    assert np.array_equal(
        pixels(tiny_codec.decode(data, "machine")),
        pixels(tiny_codec.decode(two_layer, "machine")),
    )
    with pytest.raises(FormatError, match="no human layer"):
        tiny_codec.decode(data, "human")


def test_human_layer_of_machine_only_file_is_a_format_error(tiny_codec, tiny_weights, image):
    data = tiny_codec.encode(image, layers=["machine"], quality=3)
    with pytest.raises(FormatError, match="human"):
        tiny_codec.decode(data, "human")
    # no layer asked for: the best the file has (here the machine layer), as fcodec decode
    # and Image.open do
    machine = np.asarray(tiny_codec.decode(data, "machine"))
    assert np.array_equal(np.asarray(tiny_codec.decode(data)), machine)
    both = tiny_codec.encode(image, quality=3)
    human = np.asarray(tiny_codec.decode(both, "human"))
    assert np.array_equal(np.asarray(fusioncodec.decode(both, weights=tiny_weights)), human)


# -- wrong inputs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory, tiny_codec) -> Path:
    """Same architecture as the tiny model, different random weights and name."""
    config = tiny_codec.loaded.config
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("other") / "other.safetensors"
    card = {"name": "other-tiny", "kind": "scalable", "config": config.to_dict()}
    export(ScalableCodec(config), card, path)
    return path


def test_file_from_another_model_is_rejected(tiny_codec, other_weights, image):
    other = Codec.from_file(other_weights, "cpu")
    assert other.identity != tiny_codec.identity
    data = other.encode(image, quality=4)
    for layer in ("machine", "human"):
        with pytest.raises(FormatError, match="other-tiny") as info:
            tiny_codec.decode(data, layer)
        assert "tiny-test" in str(info.value)
        assert "\n" not in str(info.value)
    # and the other way round
    with pytest.raises(FormatError, match="tiny-test"):
        other.decode(tiny_codec.encode(image, quality=4))


def test_file_with_wrong_m_is_rejected(tiny_codec, two_layer):
    good = Container.from_bytes(two_layer)
    bad = Container(
        good.width, good.height, good.model_name, good.model_hash, good.m + 1, good.layers
    )
    with pytest.raises(FormatError, match="m="):
        tiny_codec.decode(bad.to_bytes(), "machine")


def test_not_a_file_is_a_format_error(tiny_codec, two_layer):
    with pytest.raises(FormatError):
        tiny_codec.decode(b"", "machine")
    with pytest.raises(FormatError):
        tiny_codec.decode(b"\x89PNG\r\n\x1a\n" + bytes(100), "machine")
    with pytest.raises(FormatError):  # payload byte changed without fixing its CRC
        tiny_codec.decode(two_layer[:-1] + bytes([two_layer[-1] ^ 1]), "human")
    with pytest.raises(FormatError):  # truncated
        tiny_codec.decode(two_layer[:-4], "machine")


def test_payload_that_is_not_whole_words_is_a_format_error(tiny_codec, two_layer):
    good = Container.from_bytes(two_layer)
    machine = good.layer("machine")
    odd = Layer("machine", machine.quality, machine.payload + b"\x00")
    bad = Container(good.width, good.height, good.model_name, good.model_hash, good.m, (odd,))
    with pytest.raises(FormatError, match="corrupted"):
        tiny_codec.decode(bad.to_bytes(), "machine")


def corrupted_files(data: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    """Payload corruptions with valid CRCs (Container.to_bytes recomputes them)."""
    good = Container.from_bytes(data)
    out = {}
    for index, layer in enumerate(good.layers):
        p = layer.payload
        variants = {
            "zeros": bytes(len(p)),
            "ones": b"\xff" * len(p),
            "random": rng.integers(0, 256, len(p), dtype=np.uint8).tobytes(),
            "empty": b"",
            "truncated": p[: len(p) // 8 * 4],
            "extended": p + rng.integers(0, 256, 64, dtype=np.uint8).tobytes(),
            "long-random": rng.integers(0, 256, 1 << 14, dtype=np.uint8).tobytes(),
            "odd-length": p[:-1],
        }
        for k in range(6):
            flipped = bytearray(p)
            for i in rng.integers(0, len(p), k + 1):
                flipped[i] ^= int(rng.integers(1, 256))
            variants[f"flip{k}"] = bytes(flipped)
        for name, payload in variants.items():
            layers = list(good.layers)
            layers[index] = Layer(layer.kind, layer.quality, payload)
            bad = Container(
                good.width, good.height, good.model_name, good.model_hash, good.m, tuple(layers)
            )
            out[f"{layer.kind}-{name}"] = bad.to_bytes()
    return out


CORRUPT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from fusioncodec.codec import Codec
    from fusioncodec.container import FormatError
    import torch
    torch.set_num_threads(1)
    weights, folder = sys.argv[1], Path(sys.argv[2])
    width, height = int(sys.argv[3]), int(sys.argv[4])
    codec = Codec.from_file(weights, "cpu")
    results = {}
    for path in sorted(folder.glob("*.fcb")):
        for layer in ("machine", "human"):
            try:
                image = codec.decode(path.read_bytes(), layer)
            except FormatError:
                outcome = "FormatError"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            else:
                ok = image.mode == "RGB" and image.size == (width, height)
                outcome = "image" if ok else f"bad image {image.mode} {image.size}"
            results[f"{path.stem}/{layer}"] = outcome
    print(json.dumps(results))
    """
)


def test_corrupted_payload_never_hangs_or_crashes(tiny_codec, tiny_weights, image, tmp_path):
    """Corrupt payloads with fixed CRCs: a FormatError or an image, in a child process so a
    crash or hang in the range decoder or the networks cannot take the test run down."""
    data = tiny_codec.encode(image, quality=8)
    files = corrupted_files(data, np.random.default_rng(0))
    for name, content in files.items():
        (tmp_path / f"{name}.fcb").write_bytes(content)
    script = tmp_path / "decode_all.py"
    script.write_text(CORRUPT_SCRIPT)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-X",
                "faulthandler",
                str(script),
                str(tiny_weights),
                str(tmp_path),
                str(image.width),
                str(image.height),
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"decoding corrupted files hung: {exc.stderr}")
    assert proc.returncode == 0, f"decoder process died ({proc.returncode}): {proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 2 * len(files)
    bad = {k: v for k, v in results.items() if v not in ("FormatError", "image")}
    assert not bad, bad
    # a damaged layer never decodes to a picture: the decoder re-encodes what it read and
    # refuses a payload that is not exactly that (zeroed, cut short, extended, flipped...)
    for name in files:
        layer = name.split("-", 1)[0]
        assert results[f"{name}/{layer}"] == "FormatError", name
        if layer == "machine":  # the human layer needs the machine layer
            assert results[f"{name}/human"] == "FormatError", name
    # corrupting the human layer leaves the machine layer intact
    good_machine = pixels(tiny_codec.decode(data, "machine"))
    for name in ("human-zeros", "human-random", "human-odd-length"):
        assert np.array_equal(pixels(tiny_codec.decode(files[name], "machine")), good_machine)


# -- quality -------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [2.5, 1.0, 7.75, 8.0])
def test_continuous_quality(tiny_codec, image, quality):
    data = tiny_codec.encode(image, quality=quality)
    container = tiny_codec.parse(data)
    assert container.layer("machine").quality == quality  # all exactly representable in float32
    assert container.layer("human").quality == quality
    expected = encoder_side(tiny_codec, image, quality, quality)
    for layer in ("machine", "human"):
        assert np.array_equal(pixels(tiny_codec.decode(data, layer)), pixels(expected[layer]))


def test_quality_not_representable_in_float32_still_bit_exact(tiny_codec, image):
    quality = 1.1340416972471647
    data = tiny_codec.encode(image, quality=quality)
    stored = float(np.float32(quality))  # what the file records and both sides use
    expected = encoder_side(tiny_codec, image, stored, stored)
    container = tiny_codec.parse(data)
    assert torch.equal(
        torch.from_numpy(tiny_codec.decode_latent(container, "machine")), expected["y_machine"]
    )
    assert torch.equal(
        torch.from_numpy(tiny_codec.decode_latent(container, "human")), expected["y_human"]
    )


@pytest.mark.parametrize("quality", [0.0, 0.999, 8.001, 9, -1, math.nan, math.inf])
def test_quality_out_of_range_raises(tiny_codec, image, quality):
    with pytest.raises(ValueError, match="quality"):
        tiny_codec.encode(image, quality=quality)
    with pytest.raises(ValueError, match="quality"):
        tiny_codec.encode(image, quality=4, human_quality=quality)


@pytest.mark.parametrize("layers", [(), ("human",), ("machine", "extra"), ("pixels",)])
def test_bad_layer_lists_raise(tiny_codec, image, layers):
    with pytest.raises(ValueError, match="layers"):
        tiny_codec.encode(image, layers=layers)


def test_bad_layer_name_for_decode_raises(tiny_codec, two_layer):
    with pytest.raises(ValueError, match="layer"):
        tiny_codec.decode(two_layer, "both")


def test_gain_unit_interpolation_is_continuous_and_monotone():
    levels, channels = 8, 5
    torch.manual_seed(0)
    unit = GainUnit(channels, levels)
    with torch.no_grad():
        unit.log_gain.copy_(torch.randn(levels, channels))
        unit.log_inverse.copy_(-unit.log_gain)
    table = unit.log_gain.detach()
    qs = torch.linspace(0, levels - 1, 701)
    log = unit.gain(qs).log()[:, :, 0, 0].detach()
    assert unit.gain(qs).shape == (len(qs), channels, 1, 1)
    # integer q uses its level exactly
    for k in range(levels):
        assert torch.allclose(unit.gain(torch.tensor([float(k)]))[0, :, 0, 0].log(), table[k])
    # between two levels the log gain moves monotonically from one to the other
    for k in range(levels - 1):
        seg = log[(qs >= k) & (qs <= k + 1)]
        lo, hi = torch.minimum(table[k], table[k + 1]), torch.maximum(table[k], table[k + 1])
        assert (seg >= lo - 1e-5).all() and (seg <= hi + 1e-5).all()
        steps = seg.diff(dim=0) * torch.sign(table[k + 1] - table[k])
        assert (steps >= -1e-5).all()
    # continuous: no jumps bigger than the slope allows, including across integer levels
    slope = (table[1:] - table[:-1]).abs().max()
    assert log.diff(dim=0).abs().max() <= slope * (qs[1] - qs[0]) + 1e-5
    # outside the range q clamps to the end levels
    assert torch.equal(unit.gain(torch.tensor([-3.0])), unit.gain(torch.tensor([0.0])))
    assert torch.equal(unit.gain(torch.tensor([99.0])), unit.gain(torch.tensor([levels - 1.0])))
    # gain and inverse cancel when their tables are opposite
    assert torch.allclose(unit.gain(qs) * unit.inverse(qs), torch.ones(1), atol=1e-6)


def test_model_gains_grow_with_quality(tiny_codec):
    """The lambda-derived gains: higher quality -> finer quantisation, continuously."""
    qs = torch.linspace(0, tiny_codec.levels - 1, 141)
    for latent in tiny_codec.model.latent_codecs():
        gain = latent.gain.gain(qs)[:, :, 0, 0]
        assert (gain.diff(dim=0) > 0).all()
        assert torch.allclose(gain * latent.gain.inverse(qs)[:, :, 0, 0], torch.ones(1), atol=1e-3)
    expected = lambda_log_gains(tiny_codec.loaded.config.machine_lambdas)
    assert torch.allclose(tiny_codec.model.machine.latent.gain.log_gain[:, 0], expected, atol=1e-2)


def test_rate_grows_with_quality_with_trained_weights(shared):
    weights = default_weights()
    if not weights.exists():
        pytest.skip(f"no trained weights at {weights}")
    kodak = sorted((shared / "data" / "kodak").glob("kodim*.png"))
    if not kodak:
        pytest.skip("no Kodak images in the shared data")
    with Image.open(kodak[0]) as im:
        crop = im.convert("RGB").crop((200, 200, 264, 264))
    codec = Codec.from_file(weights, "cpu")
    for layers in (("machine",), ("machine", "human")):
        sizes = [len(codec.encode(crop, layers=layers, quality=q)) for q in (1, 4, 8)]
        assert sizes[0] < sizes[1] < sizes[2], (layers, sizes)


# -- public API ------------------------------------------------------------------------------


def test_public_encode_decode(tiny_codec, tiny_weights, image, tmp_path):
    path = tmp_path / "picture.png"
    image.save(path)
    from_path = fusioncodec.encode(path, quality=4, weights=tiny_weights, device="cpu")
    from_str = fusioncodec.encode(str(path), quality=4, weights=tiny_weights, device="cpu")
    from_image = fusioncodec.encode(image, quality=4, weights=tiny_weights, device="cpu")
    assert from_path == from_str == from_image == tiny_codec.encode(image, quality=4)
    machine_only = fusioncodec.encode(
        image, layers=("machine",), quality=2.5, weights=tiny_weights, device="cpu"
    )
    assert Container.from_bytes(machine_only).kinds == ("machine",)
    for layer in ("machine", "human"):
        decoded = fusioncodec.decode(from_path, layer=layer, weights=tiny_weights, device="cpu")
        assert decoded.mode == "RGB" and decoded.size == image.size
        assert np.array_equal(pixels(decoded), pixels(tiny_codec.decode(from_path, layer)))
    default_layer = fusioncodec.decode(from_path, weights=tiny_weights, device="cpu")
    assert np.array_equal(pixels(default_layer), pixels(tiny_codec.decode(from_path, "human")))
    with pytest.raises(fusioncodec.FormatError):
        fusioncodec.decode(machine_only, layer="human", weights=tiny_weights, device="cpu")
    assert fusioncodec.load(tiny_weights, "cpu") is fusioncodec.load(str(tiny_weights), "cpu")


def test_public_api_bad_device(tiny_weights):
    with pytest.raises(ValueError, match="device"):
        fusioncodec.load(tiny_weights, device="tpu")


def test_too_large_images_are_refused_before_allocating(tiny_codec):
    from fusioncodec.container import Container, Layer
    from fusioncodec.sources import MAX_CODEC_PIXELS

    # A 1-bit picture: 100 MP in 12.5 MB; only its size is read before the refusal.
    rows = MAX_CODEC_PIXELS // 20_000 + 1
    big = Image.new("1", (20_000, rows))
    with pytest.raises(ValueError, match="too large"):
        tiny_codec.encode(big)
    container = Container(
        20_000,
        rows,
        tiny_codec.name,
        tiny_codec.identity,
        1,
        (Layer("machine", 4.0, b"\0" * 8),),
    )
    with pytest.raises(ValueError, match="too large"):
        tiny_codec.decode(container, "machine")


@pytest.mark.parametrize(
    "change",
    [
        lambda p: b"",
        lambda p: bytes(len(p)),
        lambda p: p[:-4],
        lambda p: p + b"\x00\x00\x00\x00",
        lambda p: p + p[-4:],
    ],
    ids=["empty", "zeros", "last-word-dropped", "zero-word-appended", "word-repeated"],
)
def test_payload_must_be_exactly_the_encoded_stream(tiny_codec, two_layer, change):
    """Valid CRCs, damaged stream: the decoder says so instead of returning a picture."""
    good = Container.from_bytes(two_layer)
    for index, layer in enumerate(good.layers):
        layers = list(good.layers)
        layers[index] = Layer(layer.kind, layer.quality, change(layer.payload))
        bad = Container(
            good.width, good.height, good.model_name, good.model_hash, good.m, tuple(layers)
        ).to_bytes()
        with pytest.raises(FormatError, match="corrupted layer payload"):
            tiny_codec.decode(bad, layer.kind)


def test_header_claiming_a_larger_picture_fails_before_the_synthesis(tiny_codec, two_layer):
    """The payload runs out long before a 2048x2048 latent does: a FormatError, no picture."""
    good = Container.from_bytes(two_layer)
    big = Container(2048, 2048, good.model_name, good.model_hash, good.m, good.layers)
    for layer in ("machine", "human"):
        with pytest.raises(FormatError, match="corrupted layer payload"):
            tiny_codec.decode(big.to_bytes(), layer)


@pytest.mark.parametrize("edit", ["machine-quality", "size", "human-from-another-file"])
def test_a_payload_only_decodes_under_the_header_it_was_coded_for(tiny_codec, image, edit):
    """Valid CRCs, intact streams, wrong combination: refused at the payload's first word."""
    data = tiny_codec.encode(image, quality=4)
    good = Container.from_bytes(data)
    machine, human = good.layers
    width, height = good.width, good.height
    if edit == "machine-quality":
        machine = Layer("machine", 5.0, machine.payload)
    elif edit == "size":
        width -= 1  # the same padded size: the stream itself would still decode
    else:
        # same human quality, conditioned on another machine layer (quality 6)
        other = Container.from_bytes(tiny_codec.encode(image, quality=6, human_quality=4))
        assert other.layer("machine").payload != machine.payload
        human = Layer("human", human.quality, other.layer("human").payload)
    bad = Container(width, height, good.model_name, good.model_hash, good.m, (machine, human))
    layers = ("human",) if edit == "human-from-another-file" else ("machine", "human")
    for layer in layers:
        with pytest.raises(FormatError, match="not coded for this file"):
            tiny_codec.decode(bad.to_bytes(), layer)


def test_a_payload_too_small_for_the_header_fails_before_decoding(tiny_codec, image, monkeypatch):
    """Even with a binding made for the claimed size, a few bytes cannot hold a big picture:
    refused from the entropy tables' lower bound, before anything is allocated."""
    data = tiny_codec.encode(image, quality=1, layers=("machine",))
    good = Container.from_bytes(data)
    width, height = 8000, 5000
    latent = tiny_codec.model.machine.latent.coder()
    payload = good.layer("machine").payload
    assert 8 * len(payload) < latent.min_payload_bits((height // 64 + 1, width // 64 + 1))
    bad = Container(width, height, good.model_name, good.model_hash, good.m, good.layers)

    def never(*args, **kwargs):
        raise AssertionError("decoding started")

    monkeypatch.setattr(type(latent), "decompress", never)
    with pytest.raises(FormatError, match="cannot hold a picture of the size in the header"):
        tiny_codec.decode(bad.to_bytes(), "machine")
