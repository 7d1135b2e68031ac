"""Shared fixtures: a tiny randomly initialised scalable model exported like shipped weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fusioncodec.nets import CodecConfig, ScalableCodec, SingleLayerCodec
from fusioncodec.weights import export

TINY = CodecConfig(n=16, slices=2, m=1, hyper_channels=32, z_channels=16)
SHARED = Path(
    os.environ.get("FUSIONCODEC_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")
)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a whole module (``pytest.mark.usefixtures``); yields torch's
    previous count.  On a loaded 2-core machine torch's thread pool is ~100x slower.
    Encoder and decoder still share the setting, as bit-exactness requires."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small scalable model (random weights, real CDF tables) saved as safetensors."""
    torch.manual_seed(0)
    model = ScalableCodec(TINY)
    # Trained models have a non-zero conditioning branch; make it matter here too.
    torch.nn.init.normal_(model.additional.condition[-1].weight, std=0.05)
    torch.nn.init.normal_(model.additional.latent.context[-1].weight, std=0.05)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    export(model, {"name": "tiny-test", "kind": "scalable", "config": TINY.to_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_baseline_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small single-layer (baseline) model, random weights, saved as safetensors."""
    torch.manual_seed(1)
    model = SingleLayerCodec(TINY, TINY.human_lambdas)
    path = tmp_path_factory.mktemp("weights") / "tiny-baseline.safetensors"
    export(model, {"name": "tiny-baseline", "kind": "baseline", "config": TINY.to_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_codec(tiny_weights: Path):
    from fusioncodec.codec import Codec

    return Codec.from_file(tiny_weights, "cpu")


@pytest.fixture(scope="session")
def tiny_onnx_codec(tiny_weights: Path):
    """The tiny model in the onnx runtime (the graphs export wrote beside its weights)."""
    from fusioncodec.runtime import OnnxCodec

    return OnnxCodec.from_file(tiny_weights)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.exists():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED
