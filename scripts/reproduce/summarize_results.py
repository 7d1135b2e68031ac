"""Condense the committed evaluation outputs into one JSON for model cards and the README.

    python scripts/reproduce/summarize_results.py results/ > results/summary.json

Reads results/kodak/ (fcodec eval human), results/kodak-*/ (the same with other settings,
e.g. a fixed machine-layer quality), results/coco128/ (fcodec eval machine),
results/coco128-layers/ (the human layer and the baseline under the same detectors),
results/m-compare/summary.json (scripts/experiments/compare_m.py) and results/bench.json
(fcodec bench) when present.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _load(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.exists() else None


def kodak(folder: Path) -> dict:
    out: dict = {"curves": {}, "bd_rate": []}
    for name in ("fusioncodec", "fusioncodec-machine", "baseline"):
        data = _load(folder / f"{name}.json")
        if data:
            r = data["results"]
            keep = ("quality", "bpp", "psnr-rgb", "ms-ssim-rgb", "machine-bpp")
            out["curves"][name] = {k: r[k] for k in keep if k in r}
    table = _load(folder / "bd-rate.json") or {}
    for row in table.get("rows", []):
        if row["curve"] in out["curves"] and row["curve"] != row["anchor"]:
            out["bd_rate"].append(
                {k: row.get(k) for k in ("curve", "anchor", "bd_rate_psnr", "bd_psnr")}
            )
    return out


def _machine_layer(folder: Path) -> dict[str, dict]:
    """Detector -> machine-layer curve: ``*_fusioncodec-machine.json``, or in results made
    before fusioncodec 0.4 ``*_fusioncodec.json`` (the name the machine layer had then, in
    files without a ``codec`` field)."""
    curves = {}
    for path in sorted(folder.glob("*_fusioncodec-machine.json")):
        data = json.loads(path.read_text())
        curves[data["detector"]] = data
    for path in sorted(folder.glob("*_fusioncodec.json")):
        data = json.loads(path.read_text())
        if "codec" not in data:
            curves.setdefault(data["detector"], data)
    return curves


def coco(folder: Path) -> dict:
    out = {}
    for data in _machine_layer(folder).values():
        base = data["uncompressed"]["map"]
        r = data["results"]
        order = np.argsort(r["bpp"])
        bpp, maps = np.asarray(r["bpp"])[order], np.asarray(r["map"])[order]
        at = float(np.interp(0.15, bpp, maps)) if bpp[0] <= 0.15 <= bpp[-1] else None
        out[data["detector"]] = {
            "uncompressed_map": base,
            "quality": r["quality"],
            "bpp": r["bpp"],
            "map": r["map"],
            "map50": r["map50"],
            "map_kept_percent": [100 * m / base for m in r["map"]],
            "map_at_0.15_bpp": at,
            "map_kept_at_0.15_bpp_percent": None if at is None else 100 * at / base,
        }
    bd = _load(folder / "bd-rate.json")
    if bd:
        out["bd_rate"] = bd
    return out


def coco_layers(folder: Path, machine: Path) -> dict:
    """Detector mAP of the human layer and the baseline, and their BD-rate (mAP in place of
    PSNR) against the machine layer; negative: fewer bits than the machine layer."""
    from fusioncodec.metrics import bd_rate

    out: dict = {}
    references = _machine_layer(machine)
    for path in sorted(folder.glob("*_*.json")):
        detector, codec = path.stem.split("_", 1)
        ref = references.get(detector)
        if codec == "uncompressed" or ref is None:
            continue
        r, m = json.loads(path.read_text())["results"], ref["results"]
        try:
            bd = bd_rate(m["bpp"], m["map"], r["bpp"], r["map"])
        except ValueError:  # too few points or no shared mAP range
            bd = None
        out.setdefault(detector, {})[codec] = {
            "quality": r["quality"],
            "bpp": r["bpp"],
            "map": r["map"],
            "bd_rate_vs_machine_layer_percent": bd,
        }
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    summary = {"kodak": kodak(root / "kodak"), "coco128": coco(root / "coco128")}
    variants = {p.name: kodak(p) for p in sorted(root.glob("kodak-*")) if p.is_dir()}
    if variants:
        summary["kodak_variants"] = variants
    if (root / "coco128-layers").is_dir():
        summary["coco128_layers"] = coco_layers(root / "coco128-layers", root / "coco128")
    for key, path in (("m_compare", "m-compare/summary.json"), ("bench", "bench.json")):
        data = _load(root / path)
        if data:
            summary[key] = data
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
