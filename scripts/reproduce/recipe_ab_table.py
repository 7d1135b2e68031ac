"""Tabulate the recipe A/B (scripts/reproduce/recipe_ab.sh): Kodak BD-rate of each variant.

    python scripts/reproduce/recipe_ab_table.py runs/recipe-ab [--json results/recipe-ab.json]

For each variant with a ``kodak-VARIANT/baseline.json``: BD-rate against VTM
($FUSIONCODEC_SHARED/anchors/kodak/vtm.json) and against the ``before`` variant (the recipe
before 0.3 at the same steps), BD-PSNR against ``before``, and PSNR / bpp at q 1, 4 and 8.
A ``kodak-shipped`` folder (the starting weights, no training) is listed first when present.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from fusioncodec import metrics
from fusioncodec.eval.curves import load_curve

ORDER = ("shipped", "before", "data", "balance", "schedule", "recipe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    shared = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))
    vtm = load_curve(shared / "anchors" / "kodak" / "vtm.json").points("psnr")
    found = {
        p.parent.name.removeprefix("kodak-"): p for p in args.runs.glob("kodak-*/baseline.json")
    }
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    curves = {n: load_curve(found[n]) for n in names}
    before = curves["before"].points("psnr") if "before" in curves else None
    rows = []
    head = "| variant | BD-rate vs VTM | vs before | BD-PSNR vs before | q1 bpp / dB | q4 | q8 |"
    print(head + "\n|---|---:|---:|---:|---|---|---|")
    for name in names:
        curve = curves[name]
        rate, psnr = curve.points("psnr")
        row = {"variant": name, "bd_rate_vtm": metrics.bd_rate(*vtm, rate, psnr)}
        if before:
            row["bd_rate_before"] = metrics.bd_rate(*before, rate, psnr)
            row["bd_psnr_before"] = metrics.bd_psnr(*before, rate, psnr)
        row["points"] = [[round(b, 4), round(p, 3)] for b, p in zip(rate, psnr, strict=True)]
        rows.append(row)
        at = [f"{rate[k]:.3f} / {psnr[k]:.2f}" for k in (0, 3, 7)]
        vs = (
            [f"{row['bd_rate_before']:+.2f}%", f"{row['bd_psnr_before']:+.3f} dB"]
            if before
            else ["", ""]
        )
        print(f"| {name} | {row['bd_rate_vtm']:+.2f}% | {' | '.join(vs)} | {' | '.join(at)} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"variants": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
