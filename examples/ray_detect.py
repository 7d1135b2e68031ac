"""Server side on Ray: decode the machine layers of a folder of .fcb files on workers, run a
COCO detector on them in the same pipeline and write COCO-format detections.

    python examples/ray_detect.py FCB_DIR --annotations instances.json [--detector yolox]
        [--out detections.json] [--workers 2] [--address auto]

Nothing is written but the detections: pictures go from the decoding workers to the
detecting workers through Ray's object store. The mAP printed at the end is the one
``fcodec eval machine`` reports for the same files and detector.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from fusioncodec.distributed import machine_layers
from fusioncodec.eval.boxes import Detections


class Detect:
    """A Ray actor: loads the detector once, detects on one decoded picture per call."""

    def __init__(self, spec: str) -> None:
        from fusioncodec.eval.detectors import resolve

        self.detector = resolve(spec, threads=1)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        rows: dict[str, list[Any]] = {"name": [], "width": [], "height": [], "detections": []}
        for name, pixels in zip(batch["name"], batch["image"], strict=True):
            found = self.detector.detect(Image.fromarray(np.asarray(pixels, np.uint8), "RGB"))
            rows["name"].append(name)
            rows["width"].append(pixels.shape[1])
            rows["height"].append(pixels.shape[0])
            rows["detections"].append(
                json.dumps([found.boxes.tolist(), found.scores.tolist(), found.classes.tolist()])
            )
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fcb_dir", help="folder (or URI) of .fcb files")
    parser.add_argument("--annotations", required=True, help="COCO instances JSON")
    parser.add_argument("--detector", default="yolox", help="yolox, fastestdet or a spec")
    parser.add_argument("--out", default="detections.json", help="COCO results JSON")
    parser.add_argument("--workers", type=int, default=2, help="decoding workers")
    parser.add_argument("--address", default=None, help="Ray cluster (default: start one)")
    parser.add_argument("--weights", default=None, help="fusioncodec weights")
    args = parser.parse_args()

    import ray

    from fusioncodec.coco import load_coco
    from fusioncodec.eval.coco_map import CocoScorer
    from fusioncodec.eval.machine import annotated_stems, stem_key

    pictures = machine_layers(
        args.fcb_dir, weights=args.weights, workers=args.workers, address=args.address
    )
    detected = pictures.map_batches(
        Detect,
        fn_constructor_kwargs={"spec": args.detector},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    coco = load_coco(args.annotations)
    stems = annotated_stems(coco)
    scorer = CocoScorer(coco)
    for row in sorted(detected.iter_rows(), key=lambda r: r["name"]):
        image_id = stems.get(stem_key(row["name"]))
        if image_id is None:
            continue  # not annotated
        boxes, scores, classes = json.loads(row["detections"])
        found = Detections(
            np.asarray(boxes, np.float64).reshape(-1, 4),
            np.asarray(scores, np.float64),
            np.asarray(classes, np.int64),
        )
        scorer.add(image_id, found, (int(row["width"]), int(row["height"])))
    Path(args.out).write_text(json.dumps(scorer.results))
    result = scorer.score()
    print(
        f"{args.detector}: {result.n_images} images, {result.n_dets} detections, "
        f"mAP {result.map:.4f}, mAP@.5 {result.map50:.4f} -> {args.out}"
    )


if __name__ == "__main__":
    main()
