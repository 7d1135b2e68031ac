"""Quality of the two-layer weights against crops seen in training, and the compute each gate
needs.

    python scripts/reproduce/gate_compute.py [--table results/training/versions.csv]
        [--out results/training]

Reads the measured versions (Kodak BD-rate of the human layer against VTM, real coded files;
coco128 machine-layer BD-rate against AVIF on detector mAP) with the crops seen in training
behind each (all stages, in 256 x 256 equivalents: a 128 px crop counts a quarter), and fits
two curves to the rows marked ``fit`` (one lineage, all at 256 px crops):
``BD = a - b ln(crops)``, which never stops improving (the optimistic reading), and
``BD = floor + k crops^-alpha``, which levels off. From the first it extrapolates the crops
each Kodak gate needs, and how long the crops still missing take on the CPU (``fcodec
train`` on 2 idle cores) and on an H100 (its measured ``fcodec train`` rate); the second says
whether more of the same training reaches the gate at all. Writes ``quality-vs-crops.png``
and ``gate-compute.json``; prints both.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

GATES = {"must (beat WebP)": 85.0, "target (beat AVIF/HEVC)": 45.0}
H100_CROPS_PER_S = 13.5 * 64  # fcodec train, batch 64 x 256^2 (docs/TRAINING.md)
CPU_CROPS_PER_S = 8 / 3.0  # fcodec train joint, batch 8 x 256^2, 3.0 s a step on 2 idle cores
X = "crops_256"


def read_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["version"]]


def fit(rows: list[dict[str, str]]) -> tuple[float, float]:
    """(a, b) of BD = a - b ln(crops) over the rows marked for the fit."""
    points = [
        (math.log(float(r[X])), float(r["kodak_human_vtm"])) for r in rows if r["fit"] == "yes"
    ]
    x, y = np.array(points).T
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(-slope)


def fit_floor(rows: list[dict[str, str]]) -> dict[str, float]:
    """Least-squares ``BD = floor + k (crops / 1e5)^-alpha`` (alpha on a grid) and the log
    fit's residual beside it, over the rows marked for the fit."""
    kept = [r for r in rows if r["fit"] == "yes"]
    t = np.array([float(r[X]) for r in kept]) / 1e5
    y = np.array([float(r["kodak_human_vtm"]) for r in kept])
    best: dict[str, float] = {}
    for alpha in np.linspace(0.05, 5.0, 496):
        design = np.stack([np.ones_like(t), t**-alpha], axis=1)
        (floor, k), *_ = np.linalg.lstsq(design, y, rcond=None)
        residual = float(((design @ (floor, k) - y) ** 2).sum())
        if not best or residual < best["residual"]:
            best = {"floor": float(floor), "k": float(k), "alpha": float(alpha)}
            best["residual"] = residual
    a, b = fit(rows)
    best["log_fit_residual"] = float(((a - b * np.log(t * 1e5) - y) ** 2).sum())
    return best


def extrapolate(
    a: float, b: float, seen: float, cpu_crops_per_s: float
) -> dict[str, dict[str, float]]:
    """Crops at which the log fit reaches each gate, and the time the ones still missing
    after ``seen`` take on the CPU and on an H100."""
    out = {}
    for name, gate in GATES.items():
        crops = math.exp((a - gate) / b)
        missing = max(crops - seen, 0.0)
        out[name] = {
            "gate_bd_rate": gate,
            "crops_256": crops,
            "missing_crops_256": missing,
            "cpu_hours": missing / cpu_crops_per_s / 3600,
            "h100_minutes": missing / H100_CROPS_PER_S / 60,
        }
    return out


def series(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    """(crops seen, value) of the rows that have a value for ``key``."""
    kept = [r for r in rows if r[key].strip()]
    return [float(r[X]) for r in kept], [float(r[key]) for r in kept]


def frame(axes, gates: dict[str, float], at: float, **labels: str) -> None:
    """Gate lines (labelled at x = ``at``), a log time axis, labels and the legend."""
    for name, gate in gates.items():
        axes.axhline(gate, color="green" if "target" in name else "red", lw=0.8)
        axes.text(at, gate, f" {name}", fontsize=7, ha="right", va="bottom")
    axes.set(xscale="log", **labels)
    axes.legend(fontsize=7)


def plot(rows: list[dict[str, str]], a: float, b: float, floor: dict, out: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    crops, human = series(rows, "kodak_human_vtm")
    left.plot(crops, human, "o-", label="human layer")
    left.plot(*series(rows, "kodak_machine_vtm"), "s--", label="machine layer")
    for r in rows:
        where = (float(r[X]), float(r["kodak_human_vtm"]))
        left.annotate(r["version"], where, fontsize=7, xytext=(3, 3), textcoords="offset points")
    grid = np.geomspace(min(crops), 2e7, 200)
    left.plot(grid, a - b * np.log(grid), ":", color="grey", label=f"fit: {a:.0f} - {b:.1f} ln t")
    level = floor["floor"] + floor["k"] * (grid / 1e5) ** -floor["alpha"]
    label = f"fit: {floor['floor']:.0f} + k t^-{floor['alpha']:.2f}"
    left.plot(grid, level, "-.", color="black", lw=0.8, label=label)
    left.set_ylim(0, max(human) * 1.05)
    frame(
        left,
        GATES,
        grid[-1],
        xlabel="crops seen in training (256 x 256 equivalents, all stages)",
        ylabel="Kodak BD-rate vs VTM (%)",
        title="Kodak, human and machine layer (lower is better)",
    )
    for key, label in (("coco_yolox_avif", "YOLOX-Nano"), ("coco_fastestdet_avif", "FastestDet")):
        right.plot(*series(rows, key), "o-", label=label)
    frame(
        right,
        {"must": 50.0},
        max(crops),
        xlabel="crops seen in training (256 x 256 equivalents)",
        ylabel="coco128 BD-rate vs AVIF on mAP (%)",
        title="coco128, machine layer",
    )
    fig.tight_layout()
    fig.savefig(out / "quality-vs-crops.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=Path("results/training/versions.csv"))
    parser.add_argument("--out", type=Path, default=Path("results/training"))
    parser.add_argument(
        "--cpu-crops-per-s",
        type=float,
        default=CPU_CROPS_PER_S,
        help="CPU training rate in 256^2 crops per second (default: 2 idle cores, batch 8)",
    )
    args = parser.parse_args()
    rows = read_table(args.table)
    a, b = fit(rows)
    seen = max(float(r[X]) for r in rows if r["fit"] == "yes")
    gates = extrapolate(a, b, seen, args.cpu_crops_per_s)
    floor = fit_floor(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, a, b, floor, args.out)
    result = {
        "fit": {"a": a, "b": b, "model": "BD = a - b ln(crops_256)", "crops_seen": seen},
        "gates": gates,
        "levelling_fit": {**floor, "model": "BD = floor + k (crops_256 / 1e5)^-alpha"},
    }
    (args.out / "gate-compute.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"log fit: Kodak human-layer BD-rate vs VTM = {a:.1f} - {b:.2f} ln(crops)")
    print(
        f"levelling fit: BD = {floor['floor']:.1f} + {floor['k']:.3g} (crops / 1e5)^"
        f"-{floor['alpha']:.2f} (squared residual {floor['residual']:.2f}; the log fit's "
        f"{floor['log_fit_residual']:.2f})"
    )
    print(f"crops seen so far: {seen:,.0f}")
    print("| gate (log fit) | BD-rate | crops | still missing | CPU hours | H100 minutes |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, g in gates.items():
        print(
            f"| {name} | +{g['gate_bd_rate']:.0f}% | {g['crops_256']:,.0f} | "
            f"{g['missing_crops_256']:,.0f} | {g['cpu_hours']:,.0f} | {g['h100_minutes']:,.0f} |"
        )


if __name__ == "__main__":
    main()
