"""COCO bbox mAP of a detector on a set of images (pycocotools).

:func:`fusioncodec.coco.load_coco` reads an instances JSON; :class:`CocoScorer` turns detections
into COCO results (class index i -> i-th category id sorted by id; boxes rescaled to the
annotated image size when a decoded image has another size) and runs ``COCOeval`` on just
the scored images; :func:`psnr` compares a decoded picture with its original.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fusioncodec.coco import load_coco
from fusioncodec.eval.detectors import Detections, Detector

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "CocoScorer",
    "MapResult",
    "category_ids",
    "evaluate",
    "load_coco",
    "score_images",
]


def category_ids(coco: Any) -> list[int]:
    """COCO category ids sorted by id: detector class index i -> ``category_ids[i]``."""
    return sorted(int(c["id"]) for c in coco.dataset["categories"])


@dataclass
class MapResult:
    """mAP@[.5:.95], mAP@.5 and the 12 COCOeval summary numbers of one scored image set."""

    map: float
    map50: float
    stats: list[float]
    n_images: int
    n_dets: int


def evaluate(coco: Any, results: list[dict[str, Any]], image_ids: Sequence[int]) -> MapResult:
    """COCOeval bbox over ``image_ids`` (no detections at all: mAP 0)."""
    from pycocotools.cocoeval import COCOeval

    ids = sorted(set(int(i) for i in image_ids))
    if not results:
        return MapResult(0.0, 0.0, [0.0] * 12, len(ids), 0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        detections = coco.loadRes(results)
        evaluator = COCOeval(coco, detections, "bbox")
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(s) for s in evaluator.stats]
    # COCOeval reports -1 where there is no ground truth; the scored set has no objects.
    return MapResult(max(stats[0], 0.0), max(stats[1], 0.0), stats, len(ids), len(results))


@dataclass
class CocoScorer:
    """Accumulates one detector's results over images, then scores them."""

    coco: Any
    cat_ids: list[int] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cat_ids:
            self.cat_ids = category_ids(self.coco)

    def add(self, image_id: int, dets: Detections, size: tuple[int, int] | None = None) -> None:
        """Record detections of an image; ``size`` (w, h) is the size they were made at."""
        info = self.coco.imgs.get(image_id, {})
        sx = sy = 1.0
        if size is not None and info.get("width") and info.get("height"):
            sx, sy = info["width"] / size[0], info["height"] / size[1]
        self.image_ids.append(int(image_id))
        n_cats = len(self.cat_ids)
        for box, score, cls in zip(dets.boxes, dets.scores, dets.classes, strict=True):
            if not 0 <= cls < n_cats:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            self.results.append(
                {
                    "image_id": int(image_id),
                    "category_id": self.cat_ids[int(cls)],
                    "bbox": [x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy],
                    "score": float(score),
                }
            )

    def score(self) -> MapResult:
        return evaluate(self.coco, self.results, self.image_ids)


def score_images(
    detector: Detector, images: Iterable[tuple[int, Image.Image]], coco: Any
) -> MapResult:
    """Run ``detector`` over ``(image_id, PIL image)`` pairs; COCO bbox mAP of the results."""
    scorer = CocoScorer(coco)
    for image_id, image in images:
        scorer.add(image_id, detector.detect(image), image.size)
    return scorer.score()


def psnr(a: Image.Image, b: Image.Image) -> float | None:
    """PSNR-RGB of two images of the same size (None if the sizes differ)."""
    from fusioncodec.metrics import psnr_rgb

    if a.size != b.size:
        return None
    return psnr_rgb(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
