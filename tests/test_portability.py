"""Portable files: a corpus coded with the shipped weights decodes to the same latents and
the same range-coder symbols under every numerical setting torch offers on this machine
(oneDNN on/off, 1 and 2 threads, channels_last or contiguous weights, float64, 1e-6
noise in the float layers) and in the onnx runtime, and files encoded under each setting
or by the onnx runtime decode identically under the default one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from fusioncodec.codec import Codec
from fusioncodec.portability import SETTINGS, corpus_plan, decode_record, numeric_setting
from fusioncodec.runtime import OnnxCodec
from fusioncodec.weight_file import default_weights

OTHER_SETTINGS = [s for s in SETTINGS if s != "default"]


def corpus_images(shared: Path) -> list[tuple[str, Image.Image]]:
    kodak = sorted((shared / "data" / "kodak").glob("kodim*.png"))[:6]
    coco = sorted((shared / "data" / "coco128" / "images").rglob("*.jpg"))[:4]
    if len(kodak) < 6 or len(coco) < 4:
        pytest.skip("Kodak or coco128 images missing from the shared data")
    return [(p.stem, Image.open(p)) for p in kodak + coco]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_file(default_weights(), "cpu")


@pytest.fixture(scope="module")
def plan(shared):
    return corpus_plan(corpus_images(shared))


@pytest.fixture(scope="module")
def corpus(codec, plan) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Each file as encoded under the default settings, with its default decode."""
    files = {}
    for name, image, quality, layers in plan:
        data = codec.encode(image, layers, quality)
        files[name] = (data, decode_record(codec, data))
    return files


def test_corpus_covers_both_layers_and_the_quality_range(corpus):
    assert len(corpus) >= 50
    layer_sets = [tuple(record) for _, record in corpus.values()]
    assert layer_sets.count(("machine",)) >= 10
    assert layer_sets.count(("machine", "human")) >= 25
    assert {name.rsplit("-q", 1)[1] for name in corpus} >= {"1", "8"}
    assert all(not v.startswith("error") for _, rec in corpus.values() for v in rec.values())


@pytest.mark.parametrize("setting", OTHER_SETTINGS)
def test_default_files_decode_identically_under(codec, corpus, setting):
    differ = []
    with numeric_setting(codec.model, setting):
        for name, (data, reference) in corpus.items():
            record = decode_record(codec, data)
            differ += [
                f"{name}/{layer}" for layer in reference if record[layer] != reference[layer]
            ]
    decodes = sum(len(reference) for _, reference in corpus.values())
    assert not differ, f"{len(differ)} of {decodes} layer decodes differ: {differ[:5]}"


@pytest.mark.parametrize("setting", OTHER_SETTINGS)
def test_files_encoded_under_decode_identically_by_default(codec, plan, setting):
    differ = []
    for name, image, quality, layers in plan[::4]:
        with numeric_setting(codec.model, setting):
            data = codec.encode(image, layers, quality)
            own = decode_record(codec, data)
        record = decode_record(codec, data)
        assert all(not v.startswith("error") for v in own.values()), (name, own)
        differ += [f"{name}/{layer}" for layer in own if record[layer] != own[layer]]
    assert not differ, f"{len(differ)} layer decodes differ: {differ[:5]}"


def test_settings_really_change_the_float_layers(codec, plan):
    """The settings are not no-ops: the float synthesis output moves under each."""
    _, image, quality, _ = plan[0]
    data = codec.encode(image, ("machine",), quality)
    y = torch.from_numpy(codec.decode_latent(codec.parse(data), "machine"))
    with torch.no_grad():
        reference = codec.model.machine.g_s(y)
        moved = []
        for setting in ("float64", "noise"):
            with numeric_setting(codec.model, setting):
                out = codec.model.machine.g_s(y).float()
            moved.append(not torch.equal(out, reference))
    assert all(moved)


def test_unknown_setting_is_refused(codec):
    with pytest.raises(ValueError, match="unknown setting"):
        with numeric_setting(codec.model, "fast-math"):
            pass


@pytest.fixture(scope="module")
def onnx_codec() -> OnnxCodec:
    return OnnxCodec.from_file(default_weights())


def test_the_onnx_runtime_decodes_the_corpus_identically(onnx_codec, corpus):
    """The same latents and the same symbols as the torch runtime, file by file."""
    differ = [
        f"{name}/{layer}"
        for name, (data, record) in corpus.items()
        for layer, value in decode_record(onnx_codec, data).items()
        if record[layer] != value
    ]
    assert not differ, f"{len(differ)} layer decodes differ: {differ[:5]}"


def test_files_the_onnx_runtime_encodes_decode_identically_with_torch(codec, onnx_codec, plan):
    for name, image, quality, layers in plan[::4]:
        data = onnx_codec.encode(image, layers, quality)
        record = decode_record(onnx_codec, data)
        assert all(not v.startswith("error") for v in record.values()), (name, record)
        assert decode_record(codec, data) == record, name
