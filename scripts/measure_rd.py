"""Real-coded RD measurement on a folder of images (default: Kodak from ../shared).

For each quality: encode every image into a two-layer .fcb file, decode both layers, and
(optionally) code it with the single-layer baseline.  bpp comes from real byte counts.
Prints and writes JSON in CompressAI's results layout plus BD-rates against VTM.

    python scripts/measure_rd.py --out results/kodak-rd.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fusioncodec.codec import Codec, SingleLayerRunner
from fusioncodec.container import Container
from fusioncodec.eval.metrics import bd_rate, bpp, psnr_rgb
from fusioncodec.weights import default_weights, load


def main() -> None:
    shared = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=Path, default=shared / "data" / "kodak")
    ap.add_argument("--weights", type=Path, default=default_weights("scalable"))
    ap.add_argument("--baseline", type=Path, default=default_weights("baseline"))
    ap.add_argument("--qualities", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    qualities = [float(q) for q in args.qualities.split(",")]
    paths = sorted(args.images.glob("*.png"))[: args.limit or None]
    codec = Codec(load(args.weights), "cpu")
    baseline = SingleLayerRunner(load(args.baseline), "cpu") if args.baseline.exists() else None
    rows = {k: [] for k in ("human", "machine", "baseline")}
    for q in qualities:
        acc = {k: {"bpp": [], "psnr": []} for k in rows}
        acc["human"]["machine_bpp"] = []
        enc_t = dec_t = 0.0
        for path in tqdm(paths, desc=f"q={q}"):
            image = Image.open(path).convert("RGB")
            ref = np.asarray(image)
            w, h = image.size
            t = time.perf_counter()
            data = codec.encode(image, quality=q)
            enc_t += time.perf_counter() - t
            container = Container.from_bytes(data)
            t = time.perf_counter()
            human = np.asarray(codec.decode(container, "human"))
            dec_t += time.perf_counter() - t
            machine = np.asarray(codec.decode(container, "machine"))
            stripped = container.without_human().to_bytes()
            acc["human"]["bpp"].append(bpp(len(data), w, h))
            acc["human"]["psnr"].append(psnr_rgb(ref, human))
            acc["human"]["machine_bpp"].append(bpp(len(stripped), w, h))
            acc["machine"]["bpp"].append(bpp(len(stripped), w, h))
            acc["machine"]["psnr"].append(psnr_rgb(ref, machine))
            if baseline is not None:
                payload = baseline.encode(image, q)
                out = np.asarray(baseline.decode(payload, w, h, q))
                acc["baseline"]["bpp"].append(bpp(len(payload), w, h))
                acc["baseline"]["psnr"].append(psnr_rgb(ref, out))
        for k, v in acc.items():
            if v["bpp"]:
                rows[k].append({"quality": q, **{m: float(np.mean(x)) for m, x in v.items()}})
        rows["human"][-1]["encode_s"] = enc_t / len(paths)
        rows["human"][-1]["decode_human_s"] = dec_t / len(paths)
        print(json.dumps({k: v[-1] for k, v in rows.items() if v}))
    vtm = json.loads((shared / "anchors" / "kodak" / "vtm.json").read_text())["results"]
    report = {"images": str(args.images), "n_images": len(paths), "weights": args.weights.name}
    for k, v in rows.items():
        if not v:
            continue
        report[k] = {
            "name": f"fusioncodec-{k}",
            "results": {
                "quality": [r["quality"] for r in v],
                "bpp": [r["bpp"] for r in v],
                "psnr-rgb": [r["psnr"] for r in v],
            },
        }
        if len(v) >= 4:
            try:
                report[k]["bd_rate_vs_vtm"] = bd_rate(
                    vtm["bpp"], vtm["psnr-rgb"], [r["bpp"] for r in v], [r["psnr"] for r in v]
                )
            except ValueError as exc:
                report[k]["bd_rate_vs_vtm"] = str(exc)
    if rows["baseline"] and len(rows["human"]) >= 4:
        b, hmn = rows["baseline"], rows["human"]
        try:
            report["scalability_cost_bd_rate"] = bd_rate(
                [r["bpp"] for r in b],
                [r["psnr"] for r in b],
                [r["bpp"] for r in hmn],
                [r["psnr"] for r in hmn],
            )
        except ValueError as exc:
            report["scalability_cost_bd_rate"] = str(exc)
    report["timing"] = [
        {k: r[k] for k in ("quality", "encode_s", "decode_human_s")} for r in rows["human"]
    ]
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
