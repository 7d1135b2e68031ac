"""Quality against training iterations, from ``fcodec train`` logs (log.jsonl).

    python scripts/reproduce/plot_training.py --out results/training NAME=LOG.jsonl ...

Writes ``quality-vs-iterations.png`` (left: the validation RD points -- real coded files --
of every validation, coloured by step; right: training loss per step) and
``validation.csv`` (one row per run, validation and quality).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

VAL = re.compile(r"val_q([\d.]+)_(bpp|psnr)$")


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(training rows, validation rows) of one log; repeated validations of a step dropped."""
    train, val, seen = [], [], set()
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if any(VAL.match(k) for k in row):
            if row["step"] not in seen:
                seen.add(row["step"])
                val.append(row)
        elif "loss" in row:
            train.append(row)
    return train, val


def val_points(row: dict) -> list[tuple[float, float, float]]:
    """(quality, bpp, psnr) of one validation row."""
    qs = sorted({float(m.group(1)) for k in row if (m := VAL.match(k))})
    return [(q, row[f"val_q{q:g}_bpp"], row[f"val_q{q:g}_psnr"]) for q in qs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", metavar="NAME=LOG")
    parser.add_argument("--out", type=Path, default=Path("results/training"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for spec in args.logs:
        name, _, path = spec.rpartition("=")  # names may hold "="
        runs[name] = read_log(Path(path))
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.6 * len(runs)), squeeze=False)
    rows = []
    for (name, (train, val)), (ax_rd, ax_loss) in zip(runs.items(), axes, strict=True):
        cmap = plt.get_cmap("viridis")
        last = max((r["step"] for r in val), default=1)
        for r in val:
            pts = val_points(r)
            ax_rd.plot(
                [p[1] for p in pts],
                [p[2] for p in pts],
                "o-",
                color=cmap(r["step"] / last),
                label=f"step {r['step']:,} ({r['minutes']:.0f} min)",
            )
            rows += [[name, r["step"], r["minutes"], q, b, p] for q, b, p in pts]
        ax_rd.set(xlabel="bpp (coded, validation)", ylabel="PSNR-RGB (dB)", title=name)
        ax_rd.grid(alpha=0.3)
        ax_rd.legend(fontsize=7)
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8)
        ax_loss.set(xlabel="iteration", ylabel="training loss", yscale="log", title=name)
        ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "quality-vs-iterations.png", dpi=110)
    with (args.out / "validation.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "minutes", "quality", "bpp", "psnr"])
        writer.writerows(rows)
    print(f"wrote {args.out}/quality-vs-iterations.png and validation.csv")


if __name__ == "__main__":
    main()
