"""Training images with their edge masks, cached once as arrays, served as random crops."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fusioncodec.files import TEST_SETS, atomic_file, image_files
from fusioncodec.image import read_rgb
from fusioncodec.train.edges import edge_band, mask_boundaries
from fusioncodec.train.recipe import DEFAULT_SCALE, HELD_OUT_EVERY, SOURCES

FORBIDDEN = TEST_SETS  # never trained on


def _bsds(root: Path) -> list[tuple[Path, np.ndarray]]:
    """BSDS500 photos with their human boundary maps as edge bands."""
    items = []
    for path in sorted(root.glob("*/*.jpg")):
        boundaries = path.with_name(path.stem + "_boundaries.png")
        if not boundaries.exists():
            continue
        edges = np.asarray(Image.open(boundaries)) > 0
        if edges.ndim == 3:
            edges = edges.any(-1)
        items.append((path, edge_band(edges)))
    return items


def _coco(images_dir: Path, annotations: Path, skip: set[str]) -> list[tuple[Path, np.ndarray]]:
    """COCO photos with the boundaries of their instance masks as edge bands."""
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
        items.append((path, edge_band(mask_boundaries(masks, shape))))
    return items


def _photos(root: Path) -> list[tuple[Path, np.ndarray]]:
    """Photos without edge annotations (sun80, held-out split left out): empty edge masks."""
    items = []
    for path in split_held_out(image_files(root, recursive=True))[0]:
        with Image.open(path) as im:
            items.append((path, np.zeros((im.height, im.width), np.uint8)))
    return items


def _mask_folder(folder: Path) -> list[tuple[Path, np.ndarray]]:
    """Images with the edge masks ``fcodec masks`` wrote into ``folder`` (its manifest)."""
    from fusioncodec.train.masks import read_manifest  # noqa: PLC0415

    rows = read_manifest(folder)
    if not rows:
        raise ValueError(f"{folder} has no manifest.jsonl from 'fcodec masks'")
    items = []
    for key in sorted(rows):
        row = rows[key]
        mask = np.asarray(Image.open(folder / row["mask"])) > 0
        items.append((folder / row["image"], mask.astype(np.uint8)))
    return items


def coco128_names(shared: Path) -> set[str]:
    path = shared / "data" / "coco128" / "instances.json"
    if not path.exists():
        return set()
    return {im["file_name"] for im in json.loads(path.read_text())["images"]}


def split_held_out(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(training, held-out) photos: every ``HELD_OUT_EVERY``-th by name is held out, for good."""
    paths = sorted(paths, key=lambda p: p.name)
    held = paths[::HELD_OUT_EVERY]
    return [p for p in paths if p not in held], held


def held_out_images(train_root: Path) -> list[Path]:
    """The sun80 photos never trained on: validation images for ``fcodec train --val held-out``."""
    return split_held_out(image_files(train_root / "sun80", recursive=True))[1]


def annotated_sources(
    train_root: Path,
    shared: Path | None = None,
    mask_dirs: list[Path] | None = None,
    sources: tuple[str, ...] = SOURCES,
) -> list[tuple[str, Path, np.ndarray]]:
    """(source, image path, edge mask) of every training image, nothing decoded yet.

    With ``mask_dirs``: the folders written by ``fcodec masks`` (SAM, COCO, label maps).
    Otherwise the built-in ``sources`` under ``train_root``: BSDS500 boundary maps, COCO
    instance edges (coco128 images are always left out) and sun80 photos (no edges; used by
    the human layer and the baseline; every 10th photo is held out for validation).
    """
    for root in [train_root, *(mask_dirs or [])]:
        if any(part.lower() in FORBIDDEN for part in Path(root).resolve().parts):
            raise ValueError(f"refusing to train on a test set: {root}")
    if unknown := set(sources) - set(SOURCES):
        raise ValueError(f"unknown training sources {sorted(unknown)}; known: {SOURCES}")
    if mask_dirs:
        return [("masks", *item) for folder in mask_dirs for item in _mask_folder(Path(folder))]
    skip = coco128_names(shared) if shared else set()
    items = []
    if "bsds500" in sources:
        items += [("bsds500", *item) for item in _bsds(train_root / "bsds500")]
    if "coco" in sources:
        for sub in ("coco_tiny", "coco_mini"):
            for ann in sorted((train_root / sub).glob("instances_*.json")):
                items += [("coco", *item) for item in _coco(train_root / sub / "images", ann, skip)]
    if "sun80" in sources and (train_root / "sun80").is_dir():
        items += [("sun80", *item) for item in _photos(train_root / "sun80")]
    if not items:
        raise ValueError(f"no training images under {train_root} (sources: {', '.join(sources)})")
    return items


def build_edge_dataset(
    train_root: Path,
    shared: Path | None = None,
    mask_dirs: list[Path] | None = None,
    sources: tuple[str, ...] = SOURCES,
) -> dict[str, np.ndarray]:
    """The training images of :func:`annotated_sources`, decoded and packed."""
    items = annotated_sources(train_root, shared, mask_dirs, sources)
    return pack([(np.asarray(read_rgb(path)), mask) for _, path, mask in items])


def pack(items: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Flatten variable-size images into one array plus offsets (fast to save and load)."""
    shapes = np.array([img.shape[:2] for img, _ in items], dtype=np.int64)
    images = np.concatenate([img.reshape(-1) for img, _ in items])
    masks = np.concatenate([m.reshape(-1) for _, m in items])
    return {"shapes": shapes, "images": images, "masks": masks}


def unpack(packed: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (image HxWx3, mask HxW) pairs of :func:`pack`, as views of its arrays."""
    shapes = packed["shapes"]
    offsets = np.concatenate([[0], np.cumsum(shapes.prod(1))[:-1]])
    out = []
    for (h, w), o in zip(shapes, offsets, strict=True):
        image = packed["images"][3 * o : 3 * (o + h * w)].reshape(h, w, 3)
        out.append((image, packed["masks"][o : o + h * w].reshape(h, w)))
    return out


@dataclass(frozen=True)
class Picture:
    """One training picture as the sampler cuts it: RGB (H, W, 3) and edge weights (H, W).

    Both are uint8 tensors; the edge weights are 0-255 (a downscaled 0/1 mask is soft).
    """

    image: torch.Tensor
    edges: torch.Tensor

    @property
    def has_edges(self) -> bool:
        return bool(self.edges.any())


def scale_range(short_side: int, crop: int, scale: tuple[float, float]) -> tuple[float, float]:
    """The factors one picture may be shrunk by: ``scale`` raised where needed to keep a crop.

    A picture whose short side is under ``crop / lo`` cannot be shrunk by ``lo``; its range
    starts at the smallest factor that still gives a crop (never above 1).
    """
    lo, hi = scale
    least = crop / short_side
    return min(max(lo, least), 1.0), min(max(hi, least), 1.0)


def shrink(image: torch.Tensor, edges: torch.Tensor, factor: float) -> Picture:
    """Downscale by ``factor`` with an antialiasing filter (bicubic image, bilinear weights)."""
    h, w = image.shape[:2]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size == (h, w):
        return Picture(image, edges)
    x = image.permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(x, size, mode="bicubic", antialias=True)
    m = torch.nn.functional.interpolate(
        edges[None, None].float(), size, mode="bilinear", antialias=True
    )
    as_bytes = lambda t: t.round_().clamp_(0, 255).to(torch.uint8)  # noqa: E731
    return Picture(as_bytes(x[0].permute(1, 2, 0)).contiguous(), as_bytes(m[0, 0]))


def pictures(
    packed: dict[str, np.ndarray],
    crop: int,
    scale: tuple[float, float] = DEFAULT_SCALE,
    versions: int = 4,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[Picture]:
    """Training pictures at random smaller sizes, so source JPEG artifacts fade away.

    Each source picture gives ``versions`` copies shrunk by factors drawn in equal strata of
    its :func:`scale_range`; ``scale=(1, 1)`` keeps the sources as they are (one copy each).
    Pictures too small for ``crop`` are left out. Edge masks (0/1) become 0-255 weights.
    The shrinking runs on ``device``, where the pictures stay.
    """
    rng = np.random.default_rng(seed)
    out = []
    for image, mask in unpack(packed):
        h, w = mask.shape
        if min(h, w) < crop:
            continue
        lo, hi = scale_range(min(h, w), crop, scale)
        copies = 1 if hi - lo < 1e-6 else versions
        strata = (np.arange(copies) + rng.random(copies)) / copies
        img = torch.from_numpy(image).to(device)
        edges = torch.from_numpy(mask).to(device) * 255
        for factor in lo + (hi - lo) * strata:
            picture = shrink(img, edges, float(factor))
            if min(picture.edges.shape) >= crop:
                out.append(picture)
    if not out:
        raise ValueError(f"no training image is at least {crop}x{crop}")
    return out


class CropSampler:
    """Random crops with random horizontal flips, cut where the pictures are (CPU or GPU).

    The random choices are made on the host, the pixels never leave the device and nothing
    waits for it: a batch costs a few kernel launches. ``edges_only`` samples only pictures
    with edge pixels (the machine layer's loss has nothing to learn from the others).
    """

    def __init__(
        self,
        items: list[Picture],
        size: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        edges_only: bool = False,
    ) -> None:
        usable = [p for p in items if min(p.edges.shape) >= size]
        if edges_only:
            usable = [p for p in usable if p.has_edges]
        if not usable:
            raise ValueError(f"no training image is at least {size}x{size}")
        self.items = [Picture(p.image.to(device), p.edges.to(device)) for p in usable]
        self.size = size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` crops: RGB in [0, 1] (N, 3, S, S) channels-last and edge weights (N, 1, S, S)."""
        s, rng = self.size, self.rng
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        flipped: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i in rng.integers(0, len(self.items), n):
            p = self.items[i]
            h, w = p.edges.shape
            top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            cut = (p.image[top : top + s, left : left + s], p.edges[top : top + s, left : left + s])
            (flipped if rng.random() < 0.5 else kept).append(cut)
        groups = [[torch.stack(g) for g in zip(*kept, strict=True)]] if kept else []
        if flipped:
            groups.append([torch.stack(g).flip(2) for g in zip(*flipped, strict=True)])
        images, edges = (torch.cat(g) if len(g) > 1 else g[0] for g in zip(*groups, strict=True))
        x = images.permute(0, 3, 1, 2).float().div_(255)  # NHWC storage: channels-last already
        return x, edges[:, None].float().div_(255)


def load_or_build(
    cache: Path,
    train_root: Path,
    shared: Path | None,
    mask_dirs: list[Path] | None = None,
    sources: tuple[str, ...] = SOURCES,
) -> dict[str, np.ndarray]:
    """The packed training set, built once and cached at ``cache`` (an .npz file)."""
    if cache.exists():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    packed = build_edge_dataset(train_root, shared, mask_dirs, sources)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(cache) as tmp, tmp.open("wb") as f:
        np.savez(f, **packed)
    return packed


__all__ = ["CropSampler", "Picture", "build_edge_dataset", "load_or_build", "pictures", "tqdm"]
