"""Tiled networks: the integer ones give the untiled numbers exactly, the codec's files and
pictures do not depend on the tile size beyond a grey level of the float synthesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fusioncodec import codec as codec_module
from fusioncodec import runtime as runtime_module
from fusioncodec.exact import latent as latent_module
from fusioncodec.exact.latent import cut
from fusioncodec.exact.networks import IntegerNetwork
from fusioncodec.image import pixel_reader, pixel_writer, to_image, to_tensor
from fusioncodec.tiling import run_tiled, spans


def test_spans_cover_the_range_once() -> None:
    assert spans(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert spans(3, 8) == [(0, 3)]


def integer_network(rng: np.random.Generator) -> tuple[IntegerNetwork, IntegerNetwork]:
    """conv 3x3 (3 -> 8), ReLU, conv 3x3 (8 -> 4); and a 5x5 transposed conv (4 -> 2, x2)."""
    shapes = {"0": (8, 3, 3, 3), "2": (4, 8, 3, 3), "up.0": (4, 2, 5, 5)}
    arrays = {}
    for key, shape in shapes.items():
        out = shape[1] if key.startswith("up") else shape[0]
        arrays[f"net.{key}.weight_int"] = rng.integers(-50, 50, shape).astype(np.int16)
        arrays[f"net.{key}.weight_shift"] = np.zeros(out, np.int8)
        arrays[f"net.{key}.bias_int"] = rng.integers(-50, 50, out).astype(np.int64)
    conv = {"kind": "conv", "stride": 1, "padding": 1}
    net = IntegerNetwork.from_arrays(arrays, "net", [conv, {"kind": "relu"}, conv])
    deconv = {"kind": "deconv", "stride": 2, "padding": 2, "output_padding": 1}
    return net, IntegerNetwork.from_arrays(arrays, "net.up", [deconv])


@pytest.mark.parametrize(("tile", "halo"), [(3, 2), (5, 3), (100, 0)])
def test_integer_networks_give_the_untiled_numbers_exactly(tile: int, halo: int) -> None:
    rng = np.random.default_rng(0)
    net, up = integer_network(rng)
    x = rng.integers(-100, 100, (3, 13, 17)).astype(np.float64)
    grid = x.shape[-2:]
    assert np.array_equal(run_tiled(net, cut(x), grid, tile, max(halo, 2)), net(x))
    y = net(x)
    assert np.array_equal(run_tiled(up, cut(y), grid, tile, max(halo, 2), scale_out=2), up(y))
    # too small a halo is visible: the check above is not vacuous
    if tile < 13:
        assert not np.array_equal(run_tiled(net, cut(x), grid, tile, 0), net(x))


def test_pixel_tiles_are_the_padded_tensor_and_write_back_the_picture() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    whole = to_tensor(Image.fromarray(pixels), torch.device("cpu"))  # padded to 128 x 128
    read = pixel_reader(pixels, 16)
    assert np.array_equal(read(0, 8, 0, 8), whole.numpy())
    assert np.array_equal(read(2, 5, 3, 8), whole[..., 32:80, 48:128].numpy())
    out = Image.new("RGB", (90, 70))
    write = pixel_writer(out, 16)
    for r0, r1 in spans(8, 3):
        for c0, c1 in spans(8, 3):
            write(r0, r1, c0, c1, read(r0, r1, c0, c1))
    assert np.array_equal(np.asarray(out), pixels)
    assert np.array_equal(np.asarray(to_image(whole, 90, 70)), pixels)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 4 latent positions (64 px) and 1 hyper-latent position."""

    def use() -> None:
        monkeypatch.setattr(latent_module, "Y_TILE", 4)
        monkeypatch.setattr(latent_module, "Z_TILE", 1)
        monkeypatch.setattr(codec_module, "TRANSFORM_TILE", 4)
        monkeypatch.setattr(runtime_module, "TRANSFORM_TILE", 4)

    return use


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_files_decode_the_same_in_any_tiling(request, runtime: str, small_tiles) -> None:
    """A file coded in one tile decodes in 64 px tiles to the same latent (the echo check
    would fail on one different symbol), and the other way round; pictures within a grey
    level (float synthesis). In either runtime."""
    tiny_codec = request.getfixturevalue("tiny_codec" if runtime == "torch" else "tiny_onnx_codec")
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (150, 230, 3), dtype=np.uint8))
    whole = tiny_codec.encode(image, quality=3, human_quality=5)
    container = tiny_codec.parse(whole)
    latents = {
        layer: torch.from_numpy(tiny_codec.decode_latent(container, layer))
        for layer in ("machine", "human")
    }
    pictures = {layer: np.asarray(tiny_codec.decode(whole, layer), np.int16) for layer in latents}
    small_tiles()
    for layer, latent in latents.items():
        assert torch.equal(torch.from_numpy(tiny_codec.decode_latent(container, layer)), latent)
        tiled_picture = np.asarray(tiny_codec.decode(whole, layer), np.int16)
        assert np.abs(tiled_picture - pictures[layer]).max() <= 1
    pieces = tiny_codec.encode(image, quality=3, human_quality=5)
    assert abs(len(pieces) - len(whole)) <= 0.02 * len(whole)  # float analysis: near, not equal
    for layer, latent in latents.items():
        again = tiny_codec.decode_latent(tiny_codec.parse(pieces), layer)
        assert again.shape == latent.shape


def test_the_size_limit_is_100_megapixels(tiny_codec) -> None:
    codec_module.check_size(10_000, 10_000)
    with pytest.raises(ValueError, match="at most 100 megapixels"):
        codec_module.check_size(10_000, 10_001)


def test_fusion_in_place_gives_the_fused_latent() -> None:
    from fusioncodec.nets.codecs import SliceFusion

    fusion = SliceFusion(2)
    machine, additional = torch.randn(1, 5 * 64, 3, 4), torch.randn(1, 2 * 64, 3, 4)
    want = fusion(machine, additional)
    assert torch.equal(fusion.fuse_(machine.clone(), additional), want)
