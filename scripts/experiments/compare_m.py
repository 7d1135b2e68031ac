"""The m comparison: Kodak RD of two-layer models that differ only in m, plus their sizes.

    python scripts/experiments/compare_m.py results/m-compare 4 2

Reads FOLDER/m<M>/fusioncodec.json (``fcodec eval human``) for each M and writes
FOLDER/summary.json and FOLDER/summary.md: parameters per part, the RD points, BD-rate
against VTM and against the first M.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from fusioncodec.metrics import bd_psnr, bd_rate
from fusioncodec.nets import CodecConfig, ScalableCodec, count_parameters


def main() -> None:
    folder, ms = Path(sys.argv[1]), [int(m) for m in sys.argv[2:]]
    shared = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))
    vtm = json.loads((shared / "anchors/kodak/vtm.json").read_text())["results"]
    curves = {m: json.loads((folder / f"m{m}/fusioncodec.json").read_text())["results"] for m in ms}
    ref = curves[ms[0]]
    rows = []
    for m in ms:
        model = ScalableCodec(CodecConfig(m=m, conditioned=False))
        r = curves[m]
        rows.append(
            {
                "m": m,
                "parameters": {
                    "machine_codec": count_parameters(model.machine),
                    "additional_codec": count_parameters(model.additional),
                    "human_decoder": count_parameters(model.human),
                    "total": count_parameters(model),
                },
                "bpp": r["bpp"],
                "psnr-rgb": r["psnr-rgb"],
                "bd_rate_vs_vtm": round(
                    bd_rate(vtm["bpp"], vtm["psnr-rgb"], r["bpp"], r["psnr-rgb"]), 2
                ),
                f"bd_rate_vs_m{ms[0]}": round(
                    bd_rate(ref["bpp"], ref["psnr-rgb"], r["bpp"], r["psnr-rgb"]), 2
                ),
                f"bd_psnr_vs_m{ms[0]}": round(
                    bd_psnr(ref["bpp"], ref["psnr-rgb"], r["bpp"], r["psnr-rgb"]), 3
                ),
            }
        )
    (folder / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        f"| m | additional codec | total parameters | BD-rate vs VTM | BD-rate vs m={ms[0]} |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        p = row["parameters"]
        lines.append(
            f"| {row['m']} | {p['additional_codec']:,} | {p['total']:,} | "
            f"{row['bd_rate_vs_vtm']:+.1f}% | {row[f'bd_rate_vs_m{ms[0]}']:+.1f}% |"
        )
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
