"""Tests for edge-mask targets (fusioncodec.train.masks) and ``fcodec masks``, on tiny data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from helpers import assert_one_line_error, ok
from PIL import Image

from fusioncodec.cli import cli
from fusioncodec.train import masks as M
from fusioncodec.train.edges import label_boundaries

H, W = 40, 56


def run(args: Sequence[object]) -> Result:
    return CliRunner().invoke(cli, ["masks", *[str(a) for a in args]])


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def photo(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 60, np.uint8)
    img[8:24, 10:30] = (200, 180, 40)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


def square(top: int = 10, left: int = 12, size: int = 12, shape: tuple[int, int] = (H, W)):
    mask = np.zeros(shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / M.MANIFEST).read_text().splitlines()]


@pytest.fixture()
def bsds(tmp_path: Path) -> Path:
    """A BSDS500-like folder: train/a.jpg, val/b.jpg with _segments.png and _boundaries.png."""
    root = tmp_path / "bsds"
    for split, name, seed in (("train", "a", 0), ("val", "b", 1)):
        save(root / split / f"{name}.jpg", photo(seed))
        labels = np.zeros((H, W), np.uint16)
        labels[:, 28:] = 1
        labels[5:15, 5:15] = 300  # needs 16 bits
        save(root / split / f"{name}_segments.png", labels)
        lines = np.zeros((H, W), np.uint8)
        lines[20, :] = 255
        lines[:, 7] = 255
        save(root / split / f"{name}_boundaries.png", lines)
    return root


# --------------------------------------------------------------------------- mask -> edges


def test_mask_edges_and_band_are_where_expected() -> None:
    edges = M.masks_edges([square(10, 12, 12)], (H, W))
    assert edges.dtype == bool and edges.shape == (H, W)
    # thin edges: the pixels on both sides of the square's outline
    col = np.flatnonzero(edges[:, 18])
    assert col.tolist() == [9, 10, 21, 22]
    row = np.flatnonzero(edges[16])
    assert row.tolist() == [11, 12, 23, 24]
    assert not edges[16, 18] and not edges[0, 0]
    band = M.band(edges, 5)
    assert band.dtype == np.uint8 and set(np.unique(band)) == {0, 255}
    assert np.flatnonzero(band[:, 18]).tolist() == [*range(7, 13), *range(19, 25)]
    assert np.array_equal(M.band(edges, 1) > 0, edges)


def test_sam_masks_keep_only_predicted_iou_above_alpha() -> None:
    class Fake:
        def generate(self, image: np.ndarray) -> list[dict]:
            return [
                {"segmentation": square(10, 12, 12), "predicted_iou": 0.95},
                {"segmentation": square(2, 40, 8), "predicted_iou": 0.80},
            ]

    image = photo()
    kept = M.sam_masks(image, Fake(), alpha=0.9)
    assert len(kept) == 1 and kept[0].dtype == bool
    assert np.array_equal(M.sam_edges(image, Fake(), 0.9), M.masks_edges([square()], (H, W)))
    both = M.sam_edges(image, Fake(), 0.78)
    assert both[9, 18] and both[1, 44]  # above the first square, above the second
    assert not M.sam_edges(image, Fake(), 0.96).any()


def test_tiny_random_sam_runs_with_segment_anything_generator() -> None:
    sam = M.tiny_random_sam(seed=0)
    assert sam.image_encoder.img_size == 64
    image = photo()
    generator = M.build_generator(sam, alpha=0.3, points_per_side=4, stability=0.0)
    found = M.sam_masks(image, generator, 0.3)
    assert found and all(m.shape == (H, W) and m.dtype == bool for m in found)
    strict = M.build_generator(sam, alpha=0.9, points_per_side=4, stability=0.0)
    assert M.sam_masks(image, strict, 0.9) == []
    assert not M.sam_edges(image, strict, 0.9).any()


# --------------------------------------------------------------------------- SAM via the CLI


def test_cli_sam_tiny_random_end_to_end(bsds: Path, tmp_path: Path) -> None:
    out = tmp_path / "sam"
    args = ["--source", "sam", "--sam-model", "tiny-random", "--images", bsds, "--out", out]
    fast = ["--points-per-side", "4", "--stability", "0"]
    ok(run([*args, *fast, "--alpha", "0.3", "--device", "cpu"]))
    rows = manifest(out)
    assert [r["mask"] for r in rows] == ["train/a.png", "val/b.png"]  # maps are not images
    for row in rows:
        mask = read_mask(out / row["mask"])
        assert mask.shape == (H, W) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert row["source"] == "sam" and row["masks"] >= 1
        assert row["params"]["model"] == "tiny-random" and row["params"]["alpha"] == 0.3
        image = (bsds / row["mask"]).with_suffix(".jpg")
        assert (out / row["image"]).resolve() == image.resolve()

    again = tmp_path / "again"  # deterministic: a second run gives the same files
    ok(run([*args[:-1], again, *fast, "--alpha", "0.3"]))
    assert (again / M.MANIFEST).read_bytes() == (out / M.MANIFEST).read_bytes()
    for row in rows:
        assert (again / row["mask"]).read_bytes() == (out / row["mask"]).read_bytes()

    strict = tmp_path / "strict"
    ok(run([*args[:-1], strict, *fast, "--alpha", "0.93"]))
    for row in manifest(strict):
        assert row["masks"] == 0 and row["edge_fraction"] == 0.0
        assert not read_mask(strict / row["mask"]).any()


def test_cli_sam_checkpoint_path_loads_through_the_registry(
    bsds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint goes through torch.load + sam_model_registry; only the weights differ."""
    from fusioncodec._torchvision import ensure_torchvision

    ensure_torchvision()
    import segment_anything

    checkpoint = tmp_path / "tiny.pth"
    torch.save(M.tiny_random_sam(seed=0).state_dict(), checkpoint)
    fresh = M.tiny_random_sam(seed=1)  # other weights: the checkpoint must replace them
    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b", lambda checkpoint: fresh)
    monkeypatch.setitem(M.SAM_EMBED_DIMS, "vit_b", 32)
    loaded = M.build_sam("vit_b", checkpoint, "cpu")
    reference = M.tiny_random_sam(seed=0).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())

    out = tmp_path / "out"
    base = ["--source", "sam", "--images", bsds, "--out", out, "--limit", "1"]
    sam = ["--sam-model", "vit_b", "--sam-checkpoint", checkpoint, "--points-per-side", "2"]
    ok(run([*base, *sam, "--alpha", "0.3"]))
    (row,) = manifest(out)
    assert row["params"]["checkpoint"] == {"name": "tiny.pth", "bytes": checkpoint.stat().st_size}

    broken = tmp_path / "broken.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(32, 3, 16, 16)}, broken)
    sam[3] = broken
    assert_one_line_error(run([*base, *sam, "--overwrite"]), "does not fit vit_b")


def test_cli_sam_checkpoint_errors(bsds: Path, tmp_path: Path) -> None:
    base = ["--source", "sam", "--images", bsds, "--out", tmp_path / "out"]
    assert_one_line_error(run(base), "needs --sam-checkpoint", code=2)
    assert_one_line_error(
        run([*base, "--sam-checkpoint", tmp_path / "sam_vit_h.pth"]), "not found", "never"
    )
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert_one_line_error(
        run([*base, "--sam-checkpoint", garbage]), "not a readable PyTorch checkpoint"
    )
    other = tmp_path / "other.pth"
    torch.save({"something": torch.zeros(1)}, other)
    assert_one_line_error(run([*base, "--sam-checkpoint", other]), "not a SAM checkpoint")
    vit_b = tmp_path / "vit_b.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, vit_b)
    assert_one_line_error(
        run([*base, "--sam-checkpoint", vit_b]), "not a vit_h", "--sam-model vit_b"
    )
    tiny = ["--sam-model", "tiny-random", "--sam-checkpoint", vit_b]
    assert_one_line_error(run([*base, *tiny]), "takes no --sam-checkpoint", code=2)
    assert_one_line_error(
        run([*base, "--sam-model", "tiny-random", "--alpha", "1.5"]), "--alpha", code=2
    )
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- COCO


def coco_scene(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Two images; polygon, compressed RLE and uncompressed (crowd) RLE annotations."""
    from pycocotools import mask as mask_utils

    images = tmp_path / "coco" / "images"
    save(images / "000000000001.jpg", photo(0))
    save(images / "000000000002.jpg", photo(1))
    rle_mask = square(20, 30, 10)
    rle = mask_utils.encode(np.asfortranarray(rle_mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    crowd = square(2, 2, 6).astype(np.uint8)
    flat = crowd.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))  # run starts
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    uncompressed = {"size": [H, W], "counts": counts}
    assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(uncompressed, H, W)), crowd)
    polygon = [[10.0, 8.0, 30.0, 8.0, 30.0, 24.0, 10.0, 24.0]]  # x, y pairs
    data = {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W},
            {"id": 2, "file_name": "000000000002.jpg", "height": H, "width": W},
            {"id": 3, "file_name": "000000000003.jpg", "height": H, "width": W},  # not there
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": polygon,
             "area": 320.0, "bbox": [10, 8, 20, 16]},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": rle,
             "area": 100.0, "bbox": [30, 20, 10, 10]},
            {"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed,
             "area": 36.0, "bbox": [2, 2, 6, 6]},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    ann = tmp_path / "coco" / "instances_train.json"
    ann.write_text(json.dumps(data))
    return images, ann, {"rle": rle_mask, "crowd": crowd.astype(bool)}


def test_coco_edges_polygons_and_rle(tmp_path: Path) -> None:
    images, ann, truth = coco_scene(tmp_path)
    coco = M.load_coco(ann)
    edges = M.coco_edges(coco, 1)
    assert edges.shape == (H, W) and edges.dtype == bool
    found = M.coco_masks(coco, 1)
    assert len(found) == 2 and np.array_equal(found[1], truth["rle"])
    polygon = found[0]
    assert polygon[16, 20] and not polygon[30, 20] and not polygon[16, 40]
    assert edges[8, 20] and edges[16, 10] and not edges[16, 20]  # polygon outline, inside
    assert np.array_equal(edges, M.masks_edges([polygon, truth["rle"]], (H, W)))
    assert edges[19, 35] and edges[20, 35] and edges[29, 35] and edges[30, 35]  # RLE square
    crowd = M.coco_edges(coco, 2)
    assert np.array_equal(crowd, label_boundaries(truth["crowd"].astype(np.uint8)))


def test_cli_coco_end_to_end(tmp_path: Path) -> None:
    images, ann, _ = coco_scene(tmp_path)
    out = tmp_path / "masks"
    result = ok(run(["--source", "coco", "--images", images, "--annotations", ann, "--out", out]))
    assert "2 written" in result.stderr and "1 annotated images not found" in result.stderr
    rows = manifest(out)
    assert [(r["mask"], r["masks"]) for r in rows] == [
        ("000000000001.png", 2),
        ("000000000002.png", 1),
    ]
    coco = M.load_coco(ann)
    assert np.array_equal(read_mask(out / "000000000001.png"), M.band(M.coco_edges(coco, 1)))
    assert rows[0]["params"] == {
        "width": 5,
        "annotations": {"name": ann.name, "bytes": ann.stat().st_size},
    }


def test_cli_coco_errors(tmp_path: Path) -> None:
    images, ann, _ = coco_scene(tmp_path)
    out = tmp_path / "masks"
    base = ["--source", "coco", "--images", images, "--out", out]
    assert_one_line_error(run(base), "needs --annotations", code=2)
    assert_one_line_error(run([*base, "--annotations", tmp_path / "none.json"]), "no such file")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(run([*base, "--annotations", bad]), "not valid JSON")
    bad.write_text('{"images": 3}')
    assert_one_line_error(run([*base, "--annotations", bad]), "not a COCO instances file")
    wrong = json.loads(ann.read_text())
    wrong["images"][1]["height"] = H + 1
    bad.write_text(json.dumps(wrong))
    result = run([*base, "--annotations", bad])
    assert result.exit_code == 1
    assert "000000000002.jpg: image is 56x40 but the annotations say 56x41" in result.stderr
    assert "1 written" in result.stderr and "1 failed" in result.stderr
    assert_one_line_error(
        run([*base[:-2], "--out", images / "..", "--annotations", ann]), "hold it"
    )


# --------------------------------------------------------------------------- label / boundary maps


def test_label_and_boundary_map_edges(bsds: Path) -> None:
    labels = np.asarray(Image.open(bsds / "train" / "a_segments.png"))
    edges = M.label_map_edges(bsds / "train" / "a_segments.png")
    assert np.array_equal(edges, label_boundaries(labels))
    assert edges[:, 27].all() and edges[:, 28].all() and edges[4, 10] and not edges[30, 10]
    lines = M.boundary_map_edges(bsds / "train" / "a_boundaries.png")
    assert lines[20].all() and lines[:, 7].all() and lines.sum() == W + H - 1


def test_boundary_maps_in_colour_palette_and_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: not a boundary
    rgba[5, :, 2] = 1  # a faint blue line is one
    assert np.array_equal(M.boundary_map_edges(save(tmp_path / "a.png", rgba)), rgba[..., 2] > 0)
    pal = Image.fromarray((rgba[..., 2] > 0).astype(np.uint8), mode="L").convert("P")
    pal.save(tmp_path / "p.png")
    assert M.boundary_map_edges(tmp_path / "p.png").sum() == W


@pytest.mark.parametrize("source", ["labels", "boundaries"])
def test_cli_maps_end_to_end(bsds: Path, tmp_path: Path, source: str) -> None:
    out = tmp_path / "out"
    ok(run(["--source", source, "--images", bsds, "--out", out, "--width", "3"]))
    read = M.label_map_edges if source == "labels" else M.boundary_map_edges
    suffix = M.MAP_SUFFIXES[source]
    rows = manifest(out)
    assert [r["mask"] for r in rows] == ["train/a.png", "val/b.png"]
    for row in rows:
        stem = (bsds / row["mask"]).with_suffix("")
        expected = M.band(read(stem.with_name(stem.name + suffix)), 3)
        assert np.array_equal(read_mask(out / row["mask"]), expected)
        assert row["params"] == {"width": 3, "map_suffix": suffix}
        assert row["edge_fraction"] == pytest.approx((expected > 0).mean(), abs=1e-6)
        assert (row["width"], row["height"]) == (W, H)


def test_cli_maps_missing_mismatched_and_unreadable(bsds: Path, tmp_path: Path) -> None:
    save(bsds / "train" / "c.jpg", photo(2))  # no map: left out and counted
    save(bsds / "val" / "d.jpg", photo(3))
    save(bsds / "val" / "d_boundaries.png", np.zeros((H + 2, W), np.uint8))  # wrong size
    (bsds / "val" / "e.jpg").write_bytes(b"not a jpeg")
    save(bsds / "val" / "e_boundaries.png", np.zeros((H, W), np.uint8))
    out = tmp_path / "out"
    result = run(["--source", "boundaries", "--images", bsds, "--out", out])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("fcodec: error: ")]
    assert len(errors) == 2 and "Traceback" not in result.output
    assert "d.jpg: image is 56x40 but its edges are 56x42" in errors[0]
    assert "e.jpg: cannot read image" in errors[1]
    assert "2 written, 0 up to date, 2 failed, 1 images without a map" in result.stderr
    assert [r["mask"] for r in manifest(out)] == ["train/a.png", "val/b.png"]


# --------------------------------------------------------------------------- resume, preview


def test_resume_skips_same_settings_and_redoes_others(bsds: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--source", "labels", "--images", bsds, "--out", out]
    ok(run([*args, "--limit", "1"]))
    assert [r["mask"] for r in manifest(out)] == ["train/a.png"]
    first = (out / "train" / "a.png").stat().st_mtime_ns
    result = ok(run(args))
    assert "1 written, 1 up to date" in result.stderr
    before = (out / M.MANIFEST).read_bytes()
    result = ok(run(args))
    assert "0 written, 2 up to date" in result.stderr
    assert (out / M.MANIFEST).read_bytes() == before
    assert (out / "train" / "a.png").stat().st_mtime_ns == first
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    result = ok(run([*args, "--width", "7"]))
    assert "2 written (2 redone: other settings), 0 up to date" in result.stderr
    assert all(r["params"]["width"] == 7 for r in manifest(out))
    assert "2 written" in ok(run([*args, "--width", "7", "--overwrite"])).stderr

    # an interrupted run leaves appended rows (and maybe half a line): read, then compacted
    rows = manifest(out)
    with (out / M.MANIFEST).open("a") as f:
        f.write(json.dumps({**rows[0], "edge_fraction": 0.5}) + "\n" + '{"mask": "val/')
    assert M.read_manifest(out)["train/a.png"]["edge_fraction"] == 0.5
    assert M.pending_items([M.Item(bsds / "train" / "a.jpg", "train/a")], out, "labels", {}) != []
    ok(run([*args, "--width", "7"]))
    assert len(manifest(out)) == 2


def test_preview_overlays(bsds: Path, tmp_path: Path) -> None:
    out, preview = tmp_path / "out", tmp_path / "preview"
    args = ["--source", "boundaries", "--images", bsds, "--out", out, "--preview", preview]
    result = ok(run([*args, "--preview-count", "1"]))
    assert "1 previews in" in result.stderr
    assert sorted(p.relative_to(preview).as_posix() for p in preview.rglob("*.png")) == [
        "train/a.png"
    ]
    with Image.open(preview / "train" / "a.png") as im:
        assert im.mode == "RGB" and im.size == (W, H)
        over = np.asarray(im)
    mask = read_mask(out / "train" / "a.png") > 0
    image = np.asarray(Image.open(bsds / "train" / "a.jpg").convert("RGB"))
    assert (over[mask][:, 0] > 180).all() and (over[mask][:, 1] < 120).all()  # magenta band
    assert (over[~mask] <= image[~mask]).all()  # the rest dimmed
    result = ok(run(args))  # all up to date: previews still written, from the stored masks
    assert "0 written, 2 up to date, 2 previews" in result.stderr
    assert (preview / "val" / "b.png").is_file()
    assert_one_line_error(run([*args[:-1], out]), "--preview must be another folder")
    assert_one_line_error(run([*args[:-2], "--preview-count", "1"]), "needs --preview", code=2)


# --------------------------------------------------------------------------- refusals, errors


def test_refuses_test_sets(tmp_path: Path) -> None:
    kodak = tmp_path / "Kodak24"
    save(kodak / "kodim01.png", photo())
    save(kodak / "kodim01_boundaries.png", np.zeros((H, W), np.uint8))
    out = tmp_path / "out"
    msg = assert_one_line_error(run(["--source", "boundaries", "--images", kodak, "--out", out]))
    assert "refusing" in msg and "kodak" in msg
    images, ann, _ = coco_scene(tmp_path)
    c128 = tmp_path / "coco128" / "instances.json"
    c128.parent.mkdir()
    c128.write_text(ann.read_text())
    args = ["--source", "coco", "--images", images, "--annotations", c128, "--out", out]
    assert_one_line_error(run(args), "refusing", "coco128")
    link = tmp_path / "innocent"
    link.symlink_to(kodak, target_is_directory=True)
    assert_one_line_error(run(["--source", "boundaries", "--images", link, "--out", out]), "kodak")
    assert not out.exists()


def test_usage_and_input_errors(bsds: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_one_line_error(
        run(["--images", bsds, "--out", out]), "Missing option '--source'", code=2
    )
    assert_one_line_error(
        run(["--source", "x", "--images", bsds, "--out", out]), "--source", code=2
    )
    labels = ["--source", "labels", "--images", bsds, "--out", out]
    assert_one_line_error(run([*labels, "--alpha", "0.5"]), "only for --source sam", code=2)
    assert_one_line_error(
        run([*labels, "--annotations", "a.json"]), "only for --source coco", code=2
    )
    assert_one_line_error(run([*labels, "--width", "0"]), "--width must be at least 1", code=2)
    assert_one_line_error(run([*labels, "--limit", "0"]), "--limit", code=2)
    assert_one_line_error(run([*labels[:-3], tmp_path / "none", "--out", out]), "no such directory")
    assert_one_line_error(run([*labels[:-1], bsds]), "must not be --images", code=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(
        run(["--source", "labels", "--images", empty, "--out", out]), "no training"
    )
    save(bsds / "train" / "a.png", photo())
    assert_one_line_error(run(labels), "a.jpg and", "would both write train/a.png")
    assert not out.exists()
