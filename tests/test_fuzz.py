"""Fuzzing the decoder (hypothesis): truncations, bit flips, header-field edits with and
without recomputed CRCs, payload swaps and splices. Each case ends in a one-line error or a
correct picture, never a picture from a damaged stream (see fusioncodec.fuzz)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fusioncodec.fuzz import KINDS, judge, mutate

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def originals(tiny_codec):
    rng = np.random.default_rng(7)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for w, h in ((48, 40), (70, 33))
    ]
    data = [
        tiny_codec.encode(image, quality=q) for image, q in zip(images, (3.0, 6.5), strict=True)
    ]
    pictures = {
        layer: np.asarray(tiny_codec.decode(data[0], layer)) for layer in ("machine", "human")
    }
    return data, pictures


@pytest.fixture(scope="module")
def onnx_pictures(tiny_onnx_codec, originals):
    (data, _), _ = originals
    return {
        layer: np.asarray(tiny_onnx_codec.decode(data, layer)) for layer in ("machine", "human")
    }


def hostile(examples: int):  # noqa: ANN201 - hypothesis's decorators
    """Hypothesis cases of a mutation kind and a seed, the same on every run."""

    def decorate(test):  # noqa: ANN001, ANN202
        cases = given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32 - 1))(test)
        return settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            derandomize=True,
        )(cases)

    return decorate


def assert_no_bad_outcome(codec, originals, pictures, kind: str, seed: int) -> None:
    """A mutation of the first original decoded by ``codec``: an error or a correct picture."""
    (data, other), _ = originals
    case = mutate(data, other, kind, np.random.default_rng(seed))
    result = judge(codec, data, pictures, case)
    bad = {k: v for k, v in result["outcomes"].items() if v.startswith("BAD")}
    assert not bad, (case.kind, case.detail, bad)


@hostile(300)
def test_hostile_files_give_an_error_or_a_correct_picture(tiny_codec, originals, kind, seed):
    assert_no_bad_outcome(tiny_codec, originals, originals[1], kind, seed)


@hostile(100)
def test_the_onnx_runtime_gives_an_error_or_a_correct_picture(
    tiny_onnx_codec, originals, onnx_pictures, kind, seed
):
    """The same judgement in the onnx runtime, of the torch runtime's files."""
    assert_no_bad_outcome(tiny_onnx_codec, originals, onnx_pictures, kind, seed)


def test_every_kind_of_mutation_is_rejected_somewhere(tiny_codec, originals):
    """The harness is not vacuous: each kind produces errors, and valid edits still decode."""
    (data, other), pictures = originals
    seen: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for seed in range(40):
        for kind in KINDS:
            case = mutate(data, other, kind, np.random.default_rng(seed))
            seen[kind] |= set(judge(tiny_codec, data, pictures, case)["outcomes"].values())
    assert all("error" in outcomes for outcomes in seen.values()), seen
    assert seen["truncate"] == {"error"} and seen["flip"] == {"error"}
