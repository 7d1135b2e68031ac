"""Machine-task evaluation: detector adapters, NMS, COCO scoring, ``fcodec eval machine``."""

from __future__ import annotations

import csv
import json
import math
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from helpers import assert_one_line_error, ok
from PIL import Image

from fusioncodec.cli import cli
from fusioncodec.eval import detectors as D
from fusioncodec.eval import runners
from fusioncodec.eval.boxes import resize_bilinear
from fusioncodec.eval.coco_map import CocoScorer, category_ids, load_coco
from fusioncodec.eval.map_results import bpp_at_fraction

STEMS = ("000000000009", "000000000025", "000000000030")


# --------------------------------------------------------------------------- helpers


class FakeSession:
    """Stands in for an onnxruntime session: records the input, returns fixed outputs."""

    def __init__(self, outputs: list[np.ndarray], input_name: str = "images") -> None:
        self.outputs = outputs
        self.input_name = input_name
        self.fed: np.ndarray | None = None

    def get_inputs(self) -> list:
        class Input:
            name = self.input_name

        return [Input()]

    def run(self, names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.fed = feed[self.input_name]
        return self.outputs


def fake(detector: D.Detector, outputs: list[np.ndarray]) -> FakeSession:
    session = FakeSession(outputs)
    detector._session = session
    return session


def run(args: Sequence[object]) -> Result:
    return CliRunner().invoke(cli, ["eval", "machine", *[str(a) for a in args]])


def tiny_coco(path: Path) -> Path:
    """One 100x80 image with one box of category id 5 (ids not contiguous)."""
    data = {
        "images": [{"id": 7, "file_name": "img7.png", "width": 100, "height": 80}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 5,
                "bbox": [10, 10, 50, 40],
                "area": 2000,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": i, "name": f"c{i}"} for i in (5, 1, 3, 2)],
    }
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------- decoders


def test_yolox_decodes_a_known_anchor_through_the_letterbox() -> None:
    det = D.yolox("unused.onnx")
    out = np.zeros((1, 3549, 85), np.float32)
    gx, gy, stride = 5, 7, 16
    row = 52 * 52 + gy * 26 + gx  # stride-16 grid after the 52x52 one, x fastest
    out[0, row, :5] = [0.5, 0.25, math.log(4), math.log(2), 0.9]
    out[0, row, 5 + 17] = 0.8
    session = fake(det, [out])
    image = Image.new("RGB", (640, 480), (10, 20, 30))
    dets = det.detect(image)

    r = 416 / 640
    cx, cy = (gx + 0.5) * stride, (gy + 0.25) * stride
    w, h = 4 * stride, 2 * stride
    expected = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) / r
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], expected, rtol=1e-6)
    assert dets.classes[0] == 17
    assert dets.scores[0] == pytest.approx(0.72, rel=1e-6)

    # Input: 1x3x416x416, BGR 0..255, image at the top-left, 114 padding below it.
    x = session.fed
    assert x.shape == (1, 3, 416, 416) and x.dtype == np.float32
    assert tuple(x[0, :, 0, 0]) == (30, 20, 10)
    assert tuple(x[0, :, 415, 0]) == (114, 114, 114)
    assert int(480 * r) == 312 and x[0, 0, 311, 0] == 30 and x[0, 0, 312, 0] == 114


def test_fastestdet_decodes_a_known_cell_through_the_plain_resize() -> None:
    det = D.fastestdet("unused.onnx")
    out = np.zeros((1, 85, 22, 22), np.float32)
    gx, gy = 3, 10
    out[0, :5, gy, gx] = [0.8, math.atanh(0.5), 0.0, math.log(0.25 / 0.75), 0.0]
    out[0, 5 + 2, gy, gx] = 0.9
    session = fake(det, [out])
    image = Image.new("RGB", (500, 300), (200, 100, 50))
    dets = det.detect(image)

    cx, cy, w, h = (gx + 0.5) / 22, gy / 22, 0.25, 0.5
    expected = np.array([(cx - w / 2) * 500, (cy - h / 2) * 300, (cx + w / 2) * 500, 0])
    expected[3] = (cy + h / 2) * 300
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], expected, rtol=1e-6)
    assert dets.classes[0] == 2
    assert dets.scores[0] == pytest.approx(0.8**0.6 * 0.9**0.4, rel=1e-6)

    # Input: 1x3x352x352 plain resize, BGR, 0..1.
    x = session.fed
    assert x.shape == (1, 3, 352, 352)
    np.testing.assert_allclose(x[0, :, 100, 100], [50 / 255, 100 / 255, 200 / 255], rtol=1e-6)


def test_boxes_are_clipped_to_the_image() -> None:
    det = D.yolox("unused.onnx")
    out = np.zeros((1, 3549, 85), np.float32)
    out[0, 0, :5] = [0.0, 0.0, math.log(8), math.log(8), 1.0]  # centred on (0, 0)
    out[0, 0, 5] = 1.0
    fake(det, [out])
    dets = det.detect(Image.new("RGB", (416, 416)))
    np.testing.assert_allclose(dets.boxes[0], [0, 0, 32, 32])


def test_resize_matches_bilinear_without_antialiasing() -> None:
    flat = np.full((30, 40, 3), 77, np.uint8)
    assert np.all(resize_bilinear(flat, 13, 7) == 77)
    ramp = np.tile(np.arange(0, 80, 2, dtype=np.uint8)[None, :, None], (4, 1, 3))  # 40 wide
    half = resize_bilinear(ramp, 20, 4)
    # Half-pixel centres: output x samples input x = 2x + 0.5, i.e. mean of two neighbours.
    np.testing.assert_array_equal(half[0, :, 0], np.rint(np.arange(20) * 4 + 1.0))


# --------------------------------------------------------------------------- NMS


def test_nms_is_class_wise_and_keeps_the_best() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 9.9]]
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95])
    classes = np.array([0, 0, 1, 0, 2])
    dets = D.postprocess(boxes, scores, classes)
    # box 1 overlaps box 0 (IoU 0.82 > 0.65, same class): suppressed; the others stay.
    assert sorted(dets.scores.tolist()) == [0.6, 0.7, 0.9, 0.95]
    assert list(dets.scores) == sorted(dets.scores, reverse=True)
    assert len(D.nms(boxes[:2], scores[:2], 0.9)) == 2  # below the threshold: both kept


def test_postprocess_threshold_topk_and_cap() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (500, 2))
    boxes = np.concatenate([xy, xy + 5], axis=1)  # small, well apart
    scores = rng.uniform(0, 1, 500)
    scores[:10] = 0.0005  # below the 0.001 threshold
    dets = D.postprocess(boxes, scores, np.zeros(500))
    assert len(dets) == 100 and dets.scores.min() > 0.001
    np.testing.assert_allclose(dets.scores, np.sort(scores)[::-1][:100])
    assert len(D.postprocess(boxes, scores, np.zeros(500), pre_nms_topk=30)) == 30
    assert len(D.postprocess(boxes, scores, np.zeros(500), max_detections=0)) == 490
    assert len(D.postprocess(np.zeros((0, 4)), [], [])) == 0


# --------------------------------------------------------------------------- COCO scoring


def test_class_index_maps_to_sorted_category_ids(tmp_path: Path) -> None:
    coco = load_coco(tiny_coco(tmp_path / "ann.json"))
    assert category_ids(coco) == [1, 2, 3, 5]
    box = np.array([[10.0, 10, 60, 50]])
    right = CocoScorer(coco)
    right.add(7, D.Detections(box, np.array([0.9]), np.array([3])))  # index 3 -> id 5
    assert right.results[0]["category_id"] == 5
    assert right.results[0]["bbox"] == [10.0, 10.0, 50.0, 40.0]
    assert right.score().map == pytest.approx(1.0)
    wrong = CocoScorer(coco)
    wrong.add(7, D.Detections(box, np.array([0.9]), np.array([2])))  # id 3: no such object
    assert wrong.score().map == pytest.approx(0.0)
    # Detections made on a picture of another size are rescaled to the annotated size.
    half = CocoScorer(coco)
    half.add(7, D.Detections(box / 2, np.array([0.9]), np.array([3])), size=(50, 40))
    assert half.results[0]["bbox"] == [10.0, 10.0, 50.0, 40.0]
    assert CocoScorer(coco).score().map == 0.0  # no detections at all


def test_load_coco_rejects_other_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(ValueError, match="not a COCO instances file"):
        load_coco(bad)


def test_classical_roundtrip_in_memory() -> None:
    image = Image.new("RGB", (64, 48), (120, 60, 30))
    coded = runners.runner("jpeg")(image, 50)
    assert coded.size > 0 and coded.decoded.shape == (48, 64, 3) and coded.machine_size is None


def test_bpp_at_90pct_matches_the_shared_anchor(shared: Path) -> None:
    anchor = json.loads((shared / "anchors/coco128/yolox_jpeg.json").read_text())
    r = anchor["results"]
    for key in ("map", "map50"):
        target = 0.9 * anchor["uncompressed"][key]
        value = bpp_at_fraction(r["bpp"], r[key], target)
        assert value == pytest.approx(anchor[f"bpp_at_90pct_{key}"], rel=1e-9)


# --------------------------------------------------------------------------- plugins


def plugin_source(name: str) -> str:
    return textwrap.dedent(
        f"""
        from fusioncodec.eval.detectors import Detector, decode_yolox, detectors_dir

        def make_detector(onnx_path):
            path = onnx_path or detectors_dir() / "yolox_nano.onnx"
            return Detector("{name}", path, (416, 416), decode_yolox, letterbox=True,
                            bgr=True, scale=1.0, pad_value=114)

        def broken(onnx_path):
            return "not a detector"
        """
    )


def test_resolve_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    assert D.resolve(f"yolox:{model}").onnx_path == str(model)
    det = D.resolve(f"fastestdet:{model}", threads=3)
    assert det.name == "fastestdet" and not det.letterbox and det.threads == 3
    plugin = tmp_path / "myplug.py"
    plugin.write_text(plugin_source("viaFile"))
    assert D.resolve(f"{plugin}:{model}").name == "viaFile"
    monkeypatch.syspath_prepend(str(tmp_path))
    assert D.resolve(f"myplug:make_detector:{model}").name == "viaFile"
    with pytest.raises(D.DetectorError, match="not a Detector"):
        D.resolve(f"myplug:broken:{model}")
    with pytest.raises(D.DetectorError, match="no function"):
        D.resolve(f"myplug:nothing:{model}")
    with pytest.raises(D.DetectorError, match="not found"):
        D.resolve(f"yolox:{tmp_path / 'missing.onnx'}")
    with pytest.raises(D.DetectorError, match="unknown detector"):
        D.resolve("retinanet")


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def coco3(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three coco128 images, the full annotation file, and a 'decoded' copy of them."""
    root = tmp_path_factory.mktemp("coco3")
    images, decoded = root / "images", root / "decoded"
    images.mkdir()
    decoded.mkdir()
    for stem in STEMS:
        source = shared / "data/coco128/images" / f"{stem}.jpg"
        shutil.copy(source, images / f"{stem}.jpg")
        Image.open(source).convert("RGB").save(decoded / f"{stem}.machine.png")  # lossless
    (decoded / "bpp.json").write_text(
        json.dumps({f"{s}.jpg": 0.5 + i for i, s in enumerate(STEMS)})
    )
    return {
        "root": root,
        "images": images,
        "decoded": decoded,
        "ann": shared / "data/coco128/instances.json",
        "anchors": shared / "anchors/coco128",
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_uncompressed_equals_the_same_images_through_decoded(coco3: dict[str, Path]) -> None:
    out = coco3["root"] / "out-decoded"
    args = ["--images", coco3["images"], "--annotations", coco3["ann"], "--jobs", 1]
    ok(run([*args, "--decoded", coco3["decoded"], "--out", out, "--overlay", "jpeg"]))
    rows = read_csv(out / "results.csv")
    assert {r["detector"] for r in rows} == {"yolox", "fastestdet"}
    for det in ("yolox", "fastestdet"):
        base = next(r for r in rows if r["detector"] == det and r["codec"] == "uncompressed")
        dec = next(r for r in rows if r["detector"] == det and r["codec"] == "decoded")
        assert 0 < float(base["map"]) <= 1 and 0 < float(base["map50"]) <= 1
        assert base["map"] == dec["map"] and base["map50"] == dec["map50"]
        assert base["n_images"] == dec["n_images"] == "3"
        assert float(dec["bpp"]) == pytest.approx(1.5)  # mean of 0.5, 1.5, 2.5 from bpp.json
        # Same layout as the shared anchors, so curves overlay.
        ours = json.loads((out / f"{det}_decoded.json").read_text())
        theirs = json.loads((coco3["anchors"] / f"{det}_jpeg.json").read_text())
        assert set(theirs) <= set(ours) and set(theirs["results"]) <= set(ours["results"])
        base_json = json.loads((out / f"{det}_uncompressed.json").read_text())
        theirs = json.loads((coco3["anchors"] / f"{det}_uncompressed.json").read_text())
        assert set(theirs) <= set(base_json)
        assert (out / f"map-{det}.png").stat().st_size > 0
    assert (out / "bd-rate.md").exists() and isinstance(
        json.loads((out / "bd-rate.json").read_text()), list
    )


def test_plugin_detector_scores_like_the_builtin(coco3: dict[str, Path]) -> None:
    plugin = coco3["root"] / "plug.py"
    plugin.write_text(plugin_source("mine"))
    out = coco3["root"] / "out-plugin"
    args = ["--images", coco3["images"], "--annotations", coco3["ann"], "--limit", 2]
    args += ["--codecs", "uncompressed", "--detector", "yolox", "--detector", plugin]
    ok(run([*args, "--out", out, "--jobs", 1]))
    rows = {r["detector"]: r for r in read_csv(out / "results.csv")}
    assert rows["mine"]["map"] == rows["yolox"]["map"] and rows["mine"]["n_images"] == "2"


def test_fusioncodec_machine_layer_runs(coco3: dict[str, Path], tiny_weights: Path) -> None:
    out = coco3["root"] / "out-fc"
    args = ["--images", coco3["images"], "--annotations", coco3["ann"], "--limit", 2]
    args += ["--detector", "fastestdet", "--codecs", "fusioncodec-machine", "--qualities", "1,8"]
    ok(run([*args, "--weights", tiny_weights, "--out", out, "--jobs", 1]))
    rows = [r for r in read_csv(out / "results.csv") if r["codec"] == "fusioncodec-machine"]
    assert [r["quality"] for r in rows] == ["1.0", "8.0"]
    for r in rows:
        assert float(r["bpp"]) > 0 and 0 <= float(r["map"]) <= 1
    curve = json.loads((out / "fastestdet_fusioncodec-machine.json").read_text())
    assert curve["results"]["quality"] == [1.0, 8.0] and len(curve["results"]["map"]) == 2
    assert curve["codec"] == "fusioncodec-machine"
    # The name fusioncodec had for the human layer before 0.4 says what it is called now.
    old = run([*args[:-4], "--codecs", "fusioncodec-human", "--out", out / "old"])
    assert_one_line_error(old, "now called 'fusioncodec'")


def test_human_layer_and_baseline_are_scored(
    coco3: dict[str, Path], tiny_weights: Path, tiny_baseline_weights: Path
) -> None:
    out = coco3["root"] / "out-learned"
    args = ["--images", coco3["images"], "--annotations", coco3["ann"], "--limit", 2]
    args += ["--detector", "fastestdet", "--qualities", "1,8", "--weights", tiny_weights]
    args += ["--codecs", "fusioncodec-machine,fusioncodec,baseline"]
    ok(run([*args, "--baseline-weights", tiny_baseline_weights, "--out", out, "--jobs", 1]))
    rows = read_csv(out / "results.csv")
    bpp = {(r["codec"], r["quality"]): float(r["bpp"]) for r in rows if r["quality"]}
    for q in ("1.0", "8.0"):
        # The human layer's file holds the machine layer too.
        assert bpp[("fusioncodec", q)] > bpp[("fusioncodec-machine", q)] > 0
        assert bpp[("baseline", q)] > 0
    for name in ("fusioncodec", "baseline"):
        curve = json.loads((out / f"fastestdet_{name}.json").read_text())
        assert curve["results"]["quality"] == [1.0, 8.0]
        assert all(0 <= v <= 1 for v in curve["results"]["map"])
    missing = coco3["root"] / "none.safetensors"
    assert_one_line_error(
        run([*args, "--baseline-weights", missing, "--out", coco3["root"] / "o2"]),
        "none.safetensors",
    )
    assert_one_line_error(
        run([*args, "--baseline-weights", tiny_weights, "--out", coco3["root"] / "o3"]),
        "not a baseline",
    )


# --------------------------------------------------------------------------- CLI errors


def test_cli_errors(coco3: dict[str, Path], tmp_path: Path) -> None:
    images, ann = coco3["images"], coco3["ann"]
    base = ["--images", images, "--annotations", ann, "--out", tmp_path / "o"]
    assert_one_line_error(
        run([*base, "--detector", f"yolox:{tmp_path / 'none.onnx'}"]), "none.onnx", "not found"
    )
    assert_one_line_error(
        run(["--images", images, "--annotations", tmp_path / "none.json"]), "none.json"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run(["--images", empty, "--annotations", ann]), "no images")
    assert_one_line_error(run(["--images", tmp_path / "nodir", "--annotations", ann]), "nodir")
    assert_one_line_error(run([*base, "--codecs", "jpeg,gif"]), "unknown codec 'gif'")
    assert_one_line_error(run([*base, "--detector", "nonsense"]), "unknown detector")
    assert_one_line_error(run([*base, "--qualities", "1,a"]), "--qualities")
    assert_one_line_error(run([*base, "--limit", 0]), "--limit")
    assert_one_line_error(
        run([*base, "--decoded", coco3["decoded"], "--bpp-json", ann, "--bpp-json", ann]),
        "--bpp-json",
    )
    not_json = tmp_path / "x.json"
    not_json.write_text("{")
    assert_one_line_error(run(["--images", images, "--annotations", not_json]), "not valid JSON")
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (8, 8)).save(other / "zzz.png")
    assert_one_line_error(run(["--images", other, "--annotations", ann]), "none of its 1 images")
    # Existing outputs are kept unless --force.
    out = tmp_path / "kept"
    out.mkdir()
    (out / "results.csv").write_text("old")
    assert_one_line_error(
        run(["--images", images, "--annotations", ann, "--out", out, "--limit", 1]),
        "already exists",
    )
    assert (out / "results.csv").read_text() == "old"


def test_plot_labels_only_the_bd_anchor_as_anchor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    from fusioncodec.eval.plots import map_plot

    def curve(name: str) -> dict:
        return {
            "name": name,
            "results": {"bpp": [0.1, 0.3], "map": [0.1, 0.2], "map50": [0.2, 0.3]},
        }

    labels: list[str] = []
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        labels.extend(t.get_text() for t in fig.axes[0].get_legend().get_texts())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    overlays = [("fusioncodec", curve("fusioncodec")), ("AVIF", curve("AVIF"))]
    baseline = {"map": 0.3, "map50": 0.4}
    png = map_plot("yolox", {"baseline": curve("baseline")}, baseline, overlays, "AVIF")
    assert labels[:3] == ["baseline", "fusioncodec (overlay)", "AVIF (anchor)"]
    assert png.startswith(b"\x89PNG")
