"""Training images with their edge masks, cached once as arrays, served as random crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fusioncodec.train.edges import edge_band, label_boundaries, mask_boundaries

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FORBIDDEN = ("kodak", "coco128")  # test sets: never trained on


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _bsds(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    items = []
    for path in sorted(root.glob("*/*.jpg")):
        boundaries = path.with_name(path.stem + "_boundaries.png")
        if not boundaries.exists():
            continue
        image = _rgb(path)
        edges = np.asarray(Image.open(boundaries)) > 0
        if edges.ndim == 3:
            edges = edges.any(-1)
        items.append((image, edge_band(edges)))
    return items


def _coco(
    images_dir: Path, annotations: Path, skip: set[str]
) -> list[tuple[np.ndarray, np.ndarray]]:
    import contextlib
    import io

    from pycocotools.coco import COCO  # noqa: PLC0415 - heavy, only for this source

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(annotations))
    items = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        path = images_dir / info["file_name"]
        if info["file_name"] in skip or not path.exists():
            continue
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        masks = (coco.annToMask(a) for a in anns)
        shape = (info["height"], info["width"])
        items.append((_rgb(path), edge_band(mask_boundaries(masks, shape))))
    return items


def _label_maps(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    items = []
    for path in sorted(root.glob("*/*_segments.png")):
        image_path = path.with_name(path.name.replace("_segments.png", ".jpg"))
        if image_path.exists():
            labels = np.asarray(Image.open(path))
            items.append((_rgb(image_path), edge_band(label_boundaries(labels))))
    return items


def _mask_folder(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images with the edge masks ``fcodec masks`` wrote into ``folder`` (its manifest)."""
    from fusioncodec.train.masks import read_manifest  # noqa: PLC0415

    rows = read_manifest(folder)
    if not rows:
        raise ValueError(f"{folder} has no manifest.jsonl from 'fcodec masks'")
    items = []
    for key in sorted(rows):
        row = rows[key]
        mask = np.asarray(Image.open(folder / row["mask"])) > 0
        items.append((_rgb(folder / row["image"]), mask.astype(np.uint8)))
    return items


def coco128_names(shared: Path) -> set[str]:
    path = shared / "data" / "coco128" / "instances.json"
    if not path.exists():
        return set()
    return {im["file_name"] for im in json.loads(path.read_text())["images"]}


def build_edge_dataset(
    train_root: Path, shared: Path | None = None, mask_dirs: list[Path] | None = None
) -> dict[str, np.ndarray]:
    """Training images with edge masks.

    With ``mask_dirs``: the folders written by ``fcodec masks`` (SAM, COCO, label maps).
    Otherwise the built-in sources under ``train_root``: BSDS500 boundary maps and COCO
    instance edges (coco128 images are always left out).
    """
    for root in [train_root, *(mask_dirs or [])]:
        if any(part.lower() in FORBIDDEN for part in Path(root).resolve().parts):
            raise ValueError(f"refusing to train on a test set: {root}")
    if mask_dirs:
        return pack([item for folder in mask_dirs for item in _mask_folder(Path(folder))])
    skip = coco128_names(shared) if shared else set()
    items = _bsds(train_root / "bsds500")
    for sub in ("coco_tiny", "coco_mini"):
        for ann in sorted((train_root / sub).glob("instances_*.json")):
            items += _coco(train_root / sub / "images", ann, skip)
    return pack(items)


def pack(items: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Flatten variable-size images into one array plus offsets (fast to save and load)."""
    shapes = np.array([img.shape[:2] for img, _ in items], dtype=np.int64)
    images = np.concatenate([img.reshape(-1) for img, _ in items])
    masks = np.concatenate([m.reshape(-1) for _, m in items])
    return {"shapes": shapes, "images": images, "masks": masks}


class CropSampler:
    """Random crops with random horizontal flips from packed images (RGB + mask)."""

    def __init__(self, packed: dict[str, np.ndarray], size: int, seed: int = 0) -> None:
        self.shapes = packed["shapes"]
        self.images, self.masks = packed["images"], packed["masks"]
        pixels = self.shapes.prod(1)
        self.offsets = np.concatenate([[0], np.cumsum(pixels)[:-1]])
        keep = (self.shapes >= size).all(1)
        self.usable = np.flatnonzero(keep)
        if len(self.usable) == 0:
            raise ValueError(f"no training image is at least {size}x{size}")
        self.size = size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.usable)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.size
        xs = np.empty((n, s, s, 3), np.uint8)
        ms = np.empty((n, s, s), np.uint8)
        for k, i in enumerate(self.rng.choice(self.usable, n)):
            h, w = self.shapes[i]
            o = self.offsets[i]
            img = self.images[3 * o : 3 * (o + h * w)].reshape(h, w, 3)
            mask = self.masks[o : o + h * w].reshape(h, w)
            top, left = self.rng.integers(0, h - s + 1), self.rng.integers(0, w - s + 1)
            xs[k] = img[top : top + s, left : left + s]
            ms[k] = mask[top : top + s, left : left + s]
            if self.rng.random() < 0.5:
                xs[k], ms[k] = xs[k, :, ::-1], ms[k, :, ::-1]
        x = torch.from_numpy(xs).permute(0, 3, 1, 2).float().div_(255)
        m = torch.from_numpy(ms)[:, None].float()
        return x.contiguous(memory_format=torch.channels_last), m


def load_or_build(
    cache: Path, train_root: Path, shared: Path | None, mask_dirs: list[Path] | None = None
) -> dict[str, np.ndarray]:
    """The packed training set, built once and cached at ``cache`` (an .npz file)."""
    if cache.exists():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    packed = build_edge_dataset(train_root, shared, mask_dirs)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **packed)
    tmp.replace(cache)
    return packed


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


__all__ = ["CropSampler", "build_edge_dataset", "load_or_build", "image_files", "tqdm"]
