"""Is a change in coco128 detector mAP more than the test set's sampling noise?

  python scripts/experiments/paired_map.py DECODED_A DECODED_B [--halves 60]

DECODED_A and DECODED_B hold the same coco128 pictures decoded two ways (PNG, named by
the image stems). Prints, per detector, mAP(A) - mAP(B) on all images and the spread of that
difference over random halves of the images (sampling without replacement: about the
standard error of the full-set difference).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fusioncodec.eval.coco_map import CocoScorer, evaluate, load_coco
from fusioncodec.eval.detectors import fastestdet, yolox
from fusioncodec.files import shared_dir
from fusioncodec.image import read_rgb

SHARED = shared_dir()


def _difference(coco: object, scorers: list[CocoScorer], subset: list[int]) -> float:
    """mAP of the first scorer's results minus the second's, over ``subset``."""
    keep = {int(i) for i in subset}
    a, b = ([r for r in s.results if r["image_id"] in keep] for s in scorers)
    return evaluate(coco, a, subset).map - evaluate(coco, b, subset).map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--halves", type=int, default=60)
    parser.add_argument("--annotations", type=Path, default=SHARED / "data/coco128/instances.json")
    args = parser.parse_args()
    coco = load_coco(args.annotations)
    by_stem = {Path(info["file_name"]).stem: i for i, info in coco.imgs.items()}
    rng = np.random.default_rng(0)
    for make in (fastestdet, yolox):
        detector = make()
        scorers = []
        for folder in (args.a, args.b):
            scorer = CocoScorer(coco)
            for path in sorted(folder.glob("*.png")):
                image = read_rgb(path)
                scorer.add(by_stem[path.stem], detector.detect(image), image.size)
            scorers.append(scorer)
        ids = sorted(set(scorers[0].image_ids))
        full = _difference(coco, scorers, ids)
        halves = [
            _difference(coco, scorers, sorted(rng.choice(ids, len(ids) // 2, replace=False)))
            for _ in range(args.halves)
        ]
        print(
            f"{detector.name}: mAP(A) - mAP(B) = {full:+.4f} on {len(ids)} images; "
            f"standard error about {np.std(halves):.4f} ({args.halves} random halves)"
        )


if __name__ == "__main__":
    main()
