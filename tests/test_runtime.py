"""The onnx runtime (fusioncodec.runtime) against the torch runtime: files made by either
decode with the other to the identical latent and to pictures within a grey level; files of
0.5.0 (made before the runtimes split) decode with both; the runtime is chosen and refused
as the API says; coding with it never loads torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_codec import textured

import fusioncodec
from fusioncodec.codec import Codec
from fusioncodec.errors import ArgumentError, WeightsError
from fusioncodec.runtime import OnnxCodec
from fusioncodec.runtime.graphs import graphs_folder
from fusioncodec.weight_file import default_weights

DATA = Path(__file__).parent / "data"
OLD_FILES = sorted(DATA.glob("v0.5-*.fcb"))  # examples/street.png coded by 0.5.0 (torch only)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def shipped() -> tuple[Codec, OnnxCodec]:
    return Codec.from_file(None, "cpu"), OnnxCodec.from_file(None)


@pytest.fixture(scope="module")
def tiny(tiny_weights: Path, tiny_codec: Codec) -> tuple[Codec, OnnxCodec]:
    return tiny_codec, OnnxCodec.from_file(tiny_weights)


def grey_levels(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def assert_same_decodes(data: bytes, runtimes: tuple) -> None:
    """Every layer of ``data``: the same latent bytes in both runtimes, pictures within 1."""
    torch_codec, onnx_codec = runtimes
    container = torch_codec.parse(data)
    for layer in container.kinds:
        latents = [c.decode_latent(c.parse(data), layer) for c in runtimes]
        assert latents[0].tobytes() == latents[1].tobytes(), layer
        pictures = [c.decode(data, layer) for c in runtimes]
        assert grey_levels(*pictures) <= 1, layer


@pytest.mark.parametrize("path", OLD_FILES, ids=lambda p: p.stem)
def test_files_of_0_5_decode_identically_in_both_runtimes(shipped, path: Path) -> None:
    assert len(OLD_FILES) == 3
    assert_same_decodes(path.read_bytes(), shipped)


@pytest.mark.parametrize(("quality", "human_quality"), [(1.0, 1.0), (4.5, 2.0), (8.0, 8.0)])
def test_each_runtimes_files_decode_identically_in_the_other(tiny, quality, human_quality):
    image = textured(150, 90)
    files = [c.encode(image, quality=quality, human_quality=human_quality) for c in tiny]
    for data in files:
        assert_same_decodes(data, tiny)


def test_the_runtimes_encode_the_shipped_weights_alike(shipped) -> None:
    """A picture of the shipped weights' scale codes the same in both, to within a few
    symbols of float rounding in the analysis (here: the same bytes)."""
    image = Image.open(DATA.parent.parent / "examples" / "street.png").convert("RGB")
    image = image.crop((0, 0, 256, 192))
    files = [c.encode(image, quality=3) for c in shipped]
    assert abs(len(files[0]) - len(files[1])) <= 0.01 * len(files[0])
    for data in files:
        assert_same_decodes(data, shipped)


def test_auto_picks_onnx_on_the_cpu_and_torch_for_weights_without_graphs(
    tiny_weights: Path, tmp_path: Path
) -> None:
    assert fusioncodec.load(tiny_weights, "cpu").backend == "onnx"
    assert fusioncodec.load(tiny_weights, "cpu", "torch").backend == "torch"
    bare = tmp_path / "bare.safetensors"
    shutil.copy(tiny_weights, bare)  # no bare.graphs/ beside it
    assert fusioncodec.load(bare, "cpu").backend == "torch"
    with pytest.raises(WeightsError, match="no ONNX graphs beside .*export-graphs"):
        fusioncodec.load(bare, "cpu", "onnx")
    with pytest.raises(ArgumentError, match="backend must be one of"):
        fusioncodec.load(tiny_weights, "cpu", "tensorflow")
    with pytest.raises(ArgumentError, match="onnx runtime codes on the CPU"):
        OnnxCodec.from_file(tiny_weights, "cuda")


def test_graphs_of_another_architecture_are_refused(tiny_weights: Path, tmp_path: Path):
    other = tmp_path / "other.safetensors"
    shutil.copy(default_weights(), other)
    shutil.copytree(graphs_folder(tiny_weights), graphs_folder(other))
    with pytest.raises(WeightsError, match="not exported for .*export-graphs"):
        OnnxCodec.from_file(other)


def test_missing_or_damaged_graphs_are_one_line_weights_errors(tiny_weights, tmp_path):
    copy = tmp_path / "copy.safetensors"
    shutil.copy(tiny_weights, copy)
    shutil.copytree(graphs_folder(tiny_weights), graphs_folder(copy))
    (graphs_folder(copy) / "machine.analysis.onnx").write_bytes(b"not a graph")
    codec = OnnxCodec.from_file(copy)
    with pytest.raises(WeightsError, match="machine.analysis.onnx cannot run") as info:
        codec.encode(textured(64, 64))
    assert "\n" not in str(info.value)


ONNX_ONLY = """
import sys, fusioncodec
from PIL import Image
picture = Image.new("RGB", (96, 64), (200, 120, 40))
data = fusioncodec.encode(picture, quality=3, device="cpu")
assert fusioncodec.decode(data).size == (96, 64)
assert fusioncodec.load().backend == "onnx"
loaded = sorted(m for m in ("torch", "compressai") if m in sys.modules)
print(loaded or "torch-free")
"""


def test_coding_with_the_onnx_runtime_never_imports_torch() -> None:
    run = subprocess.run(
        [sys.executable, "-c", ONNX_ONLY], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "torch-free"
