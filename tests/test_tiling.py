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
from fusioncodec.image import pixel_reader, pixel_writer, to_image, to_tensor
from fusioncodec.tiling import spans, tiled


def test_spans_cover_the_range_once() -> None:
    assert spans(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert spans(3, 8) == [(0, 3)]


@pytest.mark.parametrize(("tile", "halo"), [(3, 2), (5, 3), (100, 0)])
def test_integer_networks_give_the_untiled_numbers_exactly(tile: int, halo: int) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)
    ).double()
    up = torch.nn.ConvTranspose2d(4, 2, 5, stride=2, padding=2, output_padding=1).double()
    for layer in (*net, up):
        if hasattr(layer, "weight"):
            layer.weight.data = torch.randint(-50, 50, layer.weight.shape).double()
            layer.bias.data = torch.randint(-50, 50, layer.bias.shape).double()
    x = torch.randint(-100, 100, (1, 3, 13, 17)).double()
    with torch.no_grad():
        assert torch.equal(tiled(net, x, tile, max(halo, 2)), net(x))
        y = net(x)
        assert torch.equal(tiled(up, y, tile, max(halo, 2), scale_out=2), up(y))
        small = torch.nn.functional.avg_pool2d(x, 4)
        pool = tiled(lambda t: torch.nn.functional.avg_pool2d(t, 4), x[..., :12, :16], 2, 0, 4)
        assert torch.equal(pool, small[..., :3, :4])
    # too small a halo is visible: the check above is not vacuous
    if tile < 13:
        assert not torch.equal(tiled(net, x, tile, 0), net(x))


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
