"""Tests for weight files (fusioncodec.weights): export/load round trip, identity, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from fusioncodec.codec import Codec
from fusioncodec.nets import CodecConfig, ScalableCodec, SingleLayerCodec
from fusioncodec.nets.exact import ExactConvMixin
from fusioncodec.runtime import OnnxCodec
from fusioncodec.runtime.graphs import graphs_folder
from fusioncodec.weight_file import read_card
from fusioncodec.weights import (
    ENTROPY_PARAMETERS,
    LIKELIHOOD_BOUND,
    LoadedModel,
    WeightsError,
    export,
    identity_of,
    load,
    load_weights_into,
)

CONFIG = CodecConfig(n=8, slices=2, m=1, hyper_channels=16, z_channels=8)
TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def card(name: str = "weights-test", kind: str = "scalable") -> dict:
    return {"name": name, "kind": kind, "config": CONFIG.to_dict(), "notes": "unit test ✓"}


def exported_card(name: str = "weights-test") -> dict:
    """What export writes: the card plus how the entropy parameters are computed."""
    return card(name) | {"entropy_parameters": ENTROPY_PARAMETERS}


def integer_layers(model: torch.nn.Module) -> set[str]:
    """Names of the float parameters that integer-exact layers store as integers."""
    return {
        f"{prefix}.{name}"
        for prefix, m in model.named_modules()
        if isinstance(m, ExactConvMixin)
        for name in ("weight", "bias")
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A model exported once: its parameters before export, the model after, the file."""
    torch.manual_seed(123)
    model = ScalableCodec(CONFIG)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    path = tmp_path_factory.mktemp("exported") / "weights-test.safetensors"
    identity = export(model, card(), path)
    return {"model": model, "before": before, "path": path, "identity": identity}


@pytest.fixture(scope="module")
def loaded(exported) -> LoadedModel:
    return load(exported["path"])


def test_round_trip_keeps_fp16_rounded_parameters(exported, loaded):
    model = exported["model"]
    params = dict(loaded.model.named_parameters())
    assert params.keys() == dict(model.named_parameters()).keys()
    integers = integer_layers(model)
    for name, value in model.named_parameters():
        assert params[name].dtype == torch.float32
        if name in integers:
            # stored as integers; export set the float weights to their exact values
            assert torch.equal(params[name], value.detach()), name
            # ... within half an integer step (at most 1/16383 of the largest weight) of fp16
            before = exported["before"][name].half().float()
            assert torch.allclose(params[name], before, atol=before.abs().max() / 16383), name
            continue
        if name.endswith("entropy_bottleneck.quantiles"):
            # re-estimated by export from the fp16 weights and stored exactly (fp32)
            assert torch.equal(params[name], value.detach()), name
            continue
        assert torch.equal(params[name], value.detach().half().float()), name
        assert torch.equal(params[name], exported["before"][name].half().float()), name


def test_round_trip_keeps_buffers_and_tables_exactly(exported, loaded):
    params = {name for name, _ in exported["model"].named_parameters()}
    saved = exported["model"].state_dict()
    restored = loaded.model.state_dict()
    assert saved.keys() == restored.keys()
    table_keys = [k for k in saved if k.rsplit(".", 1)[-1] in TABLE_BUFFERS]
    assert len(table_keys) == 2 * 7  # 2 latent codecs x (bottleneck 3 + gaussian 4)
    for key in saved:
        if key not in params:
            assert saved[key].dtype == restored[key].dtype, key
            assert torch.equal(saved[key], restored[key]), key
    for original, copy in zip(
        exported["model"].latent_codecs(), loaded.model.latent_codecs(), strict=True
    ):
        for a, b in zip(original.coder().tables(), copy.coder().tables(), strict=True):
            assert len(a) == len(b) > 0
            assert (a.offset == b.offset).all() and (a.escape == b.escape).all()


def test_file_stores_fp16_weights_and_exact_tables(exported):
    params = {name for name, _ in exported["model"].named_parameters()}
    integer_dtypes = {"weight_int": "I16", "weight_shift": "I8", "bias_int": "I64"}
    with safe_open(str(exported["path"]), framework="pt") as f:
        keys = list(f.keys())
        for key in keys:
            dtype = f.get_slice(key).get_dtype()
            if key.rsplit(".", 1)[-1] in integer_dtypes:
                assert dtype == integer_dtypes[key.rsplit(".", 1)[-1]], key
            elif key.endswith("quantiles"):
                assert dtype == "F32", key  # the CDF tables were built from these exactly
            elif key in params:
                assert dtype == "F16", key
            elif key.endswith(("_quantized_cdf", "_offset", "_cdf_length")):
                assert dtype == "I32", key
    # the integer layers' float weights are not stored twice
    assert set(keys) == set(exported["model"].state_dict()) - integer_layers(exported["model"])


def test_shipped_tables_match_loaded_quantiles(exported):
    fresh = load(exported["path"])  # update() below changes the model: not the shared one
    for latent in fresh.model.latent_codecs():
        eb = latent.entropy_bottleneck
        shipped = (eb._quantized_cdf.clone(), eb._offset.clone(), eb._cdf_length.clone())
        eb.update(force=True)  # tables from the quantiles the decoder actually loaded
        assert torch.equal(shipped[0], eb._quantized_cdf)
        assert torch.equal(shipped[1], eb._offset)
        assert torch.equal(shipped[2], eb._cdf_length)


def test_loaded_model_reports_card(exported, loaded):
    assert loaded.card == exported_card()
    assert loaded.name == "weights-test"
    assert loaded.kind == "scalable"
    assert loaded.config == CONFIG
    assert isinstance(loaded.model, ScalableCodec)
    assert not loaded.model.training
    assert read_card(exported["path"]) == exported_card()


def test_card_written_as_json_beside_the_file(exported):
    beside = exported["path"].with_suffix(".json")
    assert beside.name == "weights-test.json"
    assert json.loads(beside.read_text()) == exported_card()
    assert not exported["path"].with_suffix(".tmp").exists()


def test_identity_stable_for_same_file_and_copies(exported, loaded, tmp_path):
    identity = exported["identity"]
    assert isinstance(identity, bytes) and len(identity) == 16
    assert identity_of(exported["path"]) == identity == loaded.identity
    assert identity_of(exported["path"]) == identity  # same file, asked again
    copy = tmp_path / "renamed.safetensors"
    shutil.copy(exported["path"], copy)
    assert identity_of(copy) == identity
    assert load(copy).identity == identity


def test_export_is_deterministic(exported, tmp_path):
    """Exporting the same (already exported) weights again writes the same bytes."""
    again = tmp_path / "again.safetensors"
    assert export(exported["model"], card(), again) == exported["identity"]
    assert again.read_bytes() == exported["path"].read_bytes()


def test_identity_differs_for_different_model(exported, tmp_path):
    torch.manual_seed(7)
    other = tmp_path / "other.safetensors"
    assert export(ScalableCodec(CONFIG), card(), other) != exported["identity"]
    # same weights under another card is another file, hence another identity
    renamed = tmp_path / "renamed.safetensors"
    assert export(exported["model"], card("renamed"), renamed) != exported["identity"]


def test_baseline_kind_round_trip(tmp_path):
    torch.manual_seed(5)
    model = SingleLayerCodec(CONFIG, CONFIG.human_lambdas)
    path = tmp_path / "baseline.safetensors"
    export(model, card("baseline-test", "baseline"), path)
    loaded = load(path, kind="baseline")
    assert loaded.kind == "baseline" and isinstance(loaded.model, SingleLayerCodec)
    for name, value in model.named_parameters():
        stored = value.detach() if name.endswith("quantiles") else value.detach().half().float()
        assert torch.equal(dict(loaded.model.named_parameters())[name], stored), name
    with pytest.raises(ValueError, match="not a scalable codec"):
        Codec(loaded, "cpu")


def test_load_weights_into(exported, loaded):
    """Initialising a fresh model from a file gives the same state as load()."""
    model = ScalableCodec(CONFIG)
    load_weights_into(model, exported["path"])
    expected = loaded.model.state_dict()
    for name, value in model.state_dict().items():
        assert value.dtype == expected[name].dtype and torch.equal(value, expected[name]), name
    for latent in model.latent_codecs():
        assert all(len(tables) > 0 for tables in latent.coder().tables())


# -- errors ------------------------------------------------------------------------------


def expect_weights_error(path: Path, *fragments: str) -> str:
    with pytest.raises(WeightsError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return message


def test_missing_file(tmp_path):
    expect_weights_error(tmp_path / "nope.safetensors", "not found")
    with pytest.raises(WeightsError, match="not found"):
        Codec.from_file(tmp_path / "nope.safetensors", "cpu")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a weight file at all" * 4,
        b'{"weights": [1, 2, 3]}',
        bytes(range(256)) * 4,
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}",
    ],
    ids=["empty", "text", "json", "binary", "tiny-header"],
)
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    message = expect_weights_error(path)
    assert "safetensors" in message or "card" in message


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"fusioncodec_card": "{}"}])
def test_safetensors_without_card(tmp_path, metadata):
    path = tmp_path / "nocard.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata=metadata)
    expect_weights_error(path, "card")


def test_a_directory_is_not_weights(tmp_path):
    with pytest.raises(WeightsError):
        load(tmp_path)


def test_unknown_kind(tmp_path):
    path = tmp_path / "weird.safetensors"
    bad = {"name": "x", "kind": "weird", "config": CONFIG.to_dict()}
    save_file({"w": torch.zeros(1)}, str(path), metadata={"fusioncodec": json.dumps(bad)})
    with pytest.raises(WeightsError, match="unknown model kind"):
        load(path)


@pytest.mark.parametrize("problem", ["bad-json", "missing-kind", "wrong-tensors"])
def test_malformed_card_or_tensors(tmp_path, problem):
    """A card that is not JSON, lacks a key, or does not describe the stored tensors."""
    path = tmp_path / f"{problem}.safetensors"
    meta = {
        "bad-json": "{not json",
        "missing-kind": json.dumps({"name": "x", "config": CONFIG.to_dict()}),
        "wrong-tensors": json.dumps(card()),
    }[problem]
    save_file({"w": torch.zeros(1)}, str(path), metadata={"fusioncodec": meta})
    expect_weights_error(path)


def test_zeroed_likelihood_floors_in_a_file_are_restored(exported, tmp_path):
    """Files whose 1e-9 likelihood floors went through fp16 (0.0) still train safely."""
    from safetensors.torch import load_file

    with safe_open(str(exported["path"]), "pt") as f:
        metadata = f.metadata()
    state = load_file(str(exported["path"]))
    floors = [k for k in state if k.endswith(LIKELIHOOD_BOUND)]
    assert len(floors) == 4  # y and z of the machine and the additional codec
    for k in floors:
        state[k] = torch.zeros_like(state[k])
    path = tmp_path / "zeroed.safetensors"
    save_file(state, str(path), metadata=metadata)
    model = ScalableCodec(CONFIG)
    load_weights_into(model, path)
    own = model.state_dict()
    assert all(own[k].item() == pytest.approx(1e-9) for k in floors)
    y, likelihoods = model.machine.latent(
        torch.full((1, 64 * CONFIG.slices, 4, 4), 1e4), torch.ones(1)
    )
    assert all(v.min() >= 1e-9 * 0.999 for v in likelihoods.values())
    assert all(
        torch.equal(own[k], v)
        for k, v in load(exported["path"]).model.state_dict().items()
        if k not in floors
    )


def float_only_file(path: Path) -> Path:
    """A weight file as fusioncodec 0.1 wrote it: float entropy networks, no integers."""
    torch.manual_seed(5)
    model = ScalableCodec(CONFIG)
    for latent in model.latent_codecs():
        latent.entropy_bottleneck.update(force=True)
        latent.gaussian_conditional.update_scale_table(torch.linspace(0.11, 256, 64), force=True)
    state = {
        k: v.contiguous()
        for k, v in model.state_dict().items()
        if k.rsplit(".", 1)[-1] not in ("weight_int", "weight_shift", "bias_int")
    }
    save_file(state, str(path), metadata={"fusioncodec": json.dumps(card("old-format"))})
    return path


def test_weights_without_integer_networks_are_refused_for_coding(tmp_path):
    old = float_only_file(tmp_path / "old.safetensors")
    expected = r"old\.safetensors predates portable coding.*fcodec export"
    with pytest.raises(WeightsError, match=expected):
        load(old)
    assert not load(old, require_exact=False).model.machine.latent.h_s[0].quantized


def test_fcodec_export_converts_an_older_weight_file(tmp_path):
    from click.testing import CliRunner

    from fusioncodec.cli import cli

    old = float_only_file(tmp_path / "old.safetensors")
    args = ["export", str(old), "--kind", "scalable", "--name", "new", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    converted = load(tmp_path / "new.safetensors")
    assert converted.name == "new"
    assert converted.card["converted_from"] == identity_of(old).hex()
    assert converted.card["config"] == card()["config"]
    # the same trained weights: float layers equal, integer layers within half a step
    source = load(old, require_exact=False).model.state_dict()
    integers = integer_layers(converted.model)
    for key, value in converted.model.state_dict().items():
        if key in integers:
            ref = source[key].half().float()
            assert torch.allclose(value, ref, atol=float(ref.abs().max()) / 16383), key
    codec = Codec(converted, "cpu")
    image = Image.new("RGB", (70, 50), (120, 30, 200))
    data = codec.encode(image)
    assert codec.decode(data, "human").size == (70, 50)
    # converting onto the source itself is refused
    same = CliRunner().invoke(cli, [*args[:4], "--name", "old", "--out", str(tmp_path), "-f"])
    assert same.exit_code == 1 and "another name" in same.output


@pytest.mark.parametrize(
    "change, message",
    [
        ({"config": "str"}, "config must be an object"),
        ({"config": {"n": 4000}}, "config.n must be an integer in 1..512, got 4000"),
        ({"config": {"slices": 5000}}, "config.slices must be an integer"),
        ({"config": {"n": "abc"}}, "config.n must be an integer"),
        ({"config": {"levels": True}}, "config.levels must be an integer"),
        ({"config": {"m": 3}}, "m must be in 1..2"),
        ({"config": {"machine_lambdas": [1, 2]}}, "machine_lambdas must be 8 increasing"),
        ({"config": {"conditioned": "yes"}}, "conditioned must be true or false"),
        ({"config": {"latent_codec": "checkerboard"}}, "unknown latent codec 'checkerboard'"),
        ({"reads": ["zz"]}, "reads must be a list of at most 64 identities"),
        ({"reads": "00" * 16}, "reads must be a list"),
        ({"machine_reads": ["00" * 16, 7]}, "machine_reads must be a list of at most 64"),
        ({"reads": ["ab" * 16], "machine_reads": ["ab" * 16]}, "in both reads and machine_reads"),
        ({"name": 5}, "name must be a string"),
        ({"kind": "weird"}, "unknown model kind 'weird'"),
    ],
)
def test_invalid_cards_are_refused_before_building(exported, tmp_path, change, message):
    """One line naming the file; nothing is built from an absurd card (no GB allocations)."""
    bad = exported_card()
    for key, value in change.items():
        bad[key] = bad["config"] | value if key == "config" and isinstance(value, dict) else value
    path = tmp_path / "tampered.safetensors"
    with safe_open(str(exported["path"]), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={"fusioncodec": json.dumps(bad)})
    with pytest.raises(WeightsError) as info:
        load(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.fixture(params=["torch", "onnx"])
def load_in(request, exported):
    """Loading weights in either runtime (the onnx one with the exported file's graphs)."""

    def loader(path: Path) -> object:
        if request.param == "torch":
            return load(path)
        shutil.copytree(graphs_folder(exported["path"]), graphs_folder(path), dirs_exist_ok=True)
        return OnnxCodec.from_file(path)

    return loader


@pytest.mark.parametrize("tamper", ["offset-max", "not-increasing", "wrong-count", "short-end"])
def test_tampered_entropy_tables_are_blamed_on_the_weights(exported, tmp_path, tamper, load_in):
    key = "machine.latent.gaussian_conditional."
    with safe_open(str(exported["path"]), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    cdf = tensors[key + "_quantized_cdf"]
    if tamper == "offset-max":
        tensors[key + "_offset"][0] = torch.iinfo(torch.int32).max
    elif tamper == "not-increasing":
        cdf[3, 1] = cdf[3, 2] + 5
    elif tamper == "wrong-count":
        for name in ("_quantized_cdf", "_offset", "_cdf_length"):
            tensors[key + name] = tensors[key + name][:-1].contiguous()
    else:
        cdf[0, int(tensors[key + "_cdf_length"][0]) - 1] -= 1
    path = tmp_path / "tables.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(WeightsError, match=rf"{path.name} has invalid entropy tables"):
        load_in(path)


def _rewritten(exported: dict, path: Path, tensors=None, meta: str | None = None) -> Path:
    """The exported file with some tensors replaced (``tensors``: key -> tensor or callable
    of the stored tensor) or another card text (``meta``)."""
    with safe_open(str(exported["path"]), framework="pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    for key, value in (tensors or {}).items():
        stored[key] = value(stored[key]) if callable(value) else value
    if meta is not None:
        metadata = {"fusioncodec": meta}
    save_file(stored, str(path), metadata=metadata)
    return path


def _set(index: tuple, value: int):  # noqa: ANN202
    def change(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t[index] = value
        return t

    return change


H_S = "machine.latent.h_s.0."


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({H_S + "weight_int": _set((0, 0, 0, 0), 32767)}, "beyond +-16383"),
        ({H_S + "weight_shift": _set((0,), -128)}, "beyond +-40"),
        ({H_S + "bias_int": _set((0,), 1 << 62)}, "beyond +-1125899906842624"),
        ({H_S + "weight_int": lambda t: t.long() + 65536}, "is int64, not int16"),
        ({H_S + "weight_shift": lambda t: t[:-1]}, "size mismatch"),
        ({"human.g_s.0.weight": _set((0, 0, 0, 0), float("nan"))}, "NaN or infinite"),
        ({"machine.g_a.0.bias": _set((0,), float("inf"))}, "NaN or infinite"),
    ],
)
def test_weights_outside_the_format_bounds_are_refused(
    exported, tmp_path, tensors, message, load_in
):
    """The exactness guarantee rests on these bounds; a NaN weight gave black pictures."""
    path = _rewritten(exported, tmp_path / "bad.safetensors", tensors)
    with pytest.raises(WeightsError, match=message.replace("+", r"\+")) as info:
        load_in(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (lambda c: json.dumps(c | {"name": "n" * 300}), "name must be 1..255 UTF-8 bytes"),
        (lambda c: json.dumps(c).replace('"weights-test"', '"\\ud800"'), "valid Unicode"),
        (lambda c: "[" * 100_000 + "]" * 100_000, "unreadable model card"),
        (lambda c: json.dumps(c)[:-1] + ', "deep": ' + "[" * 40 + "]" * 40 + "}", "nested deeper"),
        (lambda c: json.dumps(c)[:-1] + ', "big": ' + "9" * 5001 + "}", "unreadable model card"),
        (lambda c: json.dumps(c | {"notes": "x" * (1 << 20)}), "over 1048576"),
    ],
)
def test_bad_cards_are_refused_at_load(exported, tmp_path, meta, message):
    path = _rewritten(exported, tmp_path / "card.safetensors", meta=meta(exported_card()))
    with pytest.raises(WeightsError, match=message) as info:
        read_card(path)
    assert "\n" not in str(info.value)


def test_a_card_larger_than_its_tensors_is_refused_before_building(
    exported, tmp_path, monkeypatch
):
    import fusioncodec.weights as weights

    big = exported_card() | {"config": CONFIG.to_dict() | {"n": 512, "hyper_channels": 512}}
    path = _rewritten(exported, tmp_path / "big.safetensors", meta=json.dumps(big))
    monkeypatch.setattr(weights, "build", lambda *a: pytest.fail("built before checking"))
    with pytest.raises(WeightsError, match="g_a.0.weight is 8x3x5x5, the card says 512x3x5x5"):
        load(path)


def test_the_card_reader_knows_every_model_kind_and_needs_no_torch():
    import subprocess
    import sys

    from fusioncodec.nets import MODEL_KINDS
    from fusioncodec.weight_file import KINDS

    assert KINDS == tuple(MODEL_KINDS)
    code = (
        "import sys; from fusioncodec.weight_file import default_weights, read_card; "
        "assert read_card(default_weights())['kind'] == 'scalable'; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
