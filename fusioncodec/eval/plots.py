"""RD and mAP plots as PNG bytes, drawn on matplotlib's Agg canvas (no pyplot, no global
backend change)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from fusioncodec.eval.curves import Curve

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")
YLABELS = {
    "psnr": "PSNR-RGB (dB)",
    "msssim": "MS-SSIM-RGB (dB) = -10 log10(1 - MS-SSIM)",
}
NAMES = {"psnr": "PSNR-RGB", "msssim": "MS-SSIM"}


def rd_plot(curves: Sequence[Curve], metric: str, title: str) -> bytes:
    """PNG of quality (``psnr`` or ``msssim`` in dB) against bpp: a line with markers per
    curve of this run, dashed lines for external curves (anchors, overlays)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = 0
    for i, curve in enumerate(curves):
        xs, ys = curve.points(metric)
        if not xs:
            continue
        pts = sorted(zip(xs, ys, strict=True))
        style = {"linestyle": "--", "linewidth": 1.2, "alpha": 0.85, "markersize": 3}
        if not curve.external:
            style = {"linestyle": "-", "linewidth": 1.6, "markersize": 5}
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker=MARKERS[i % len(MARKERS)],
            label=curve.label,
            **style,
        )
        drawn += 1
    if not drawn:
        why = "no MS-SSIM values (images need > 160 px on the short side)"
        ax.text(0.5, 0.5, why if metric == "msssim" else "no data", ha="center", va="center")
    ax.set_xlabel("rate (bits per pixel)")
    ax.set_ylabel(YLABELS[metric])
    ax.set_title(f"{title}: {NAMES[metric]} vs rate")
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.15)
    ax.minorticks_on()
    if drawn:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def map_plot(
    detector: str,
    curves: dict[str, dict[str, Any]],
    baseline: dict[str, Any],
    overlays: Sequence[tuple[str, dict[str, Any]]],
    anchor: str | None = None,
) -> bytes:
    """PNG of mAP and mAP@.5 against bpp for one detector: this run's curves (one colour per
    codec, shared with its anchor), dashed anchors and overlays, the uncompressed level."""
    from matplotlib import rcParams
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    palette = rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colors: dict[str, str] = {}

    def color(data: dict[str, Any], label: str) -> str:
        key = str(data.get("codec") or label.lower().split(" ")[0])
        return colors.setdefault(key, palette[len(colors) % len(palette)])

    series = [(label, data, False) for label, data in curves.items()]
    series += [(label, data, True) for label, data in overlays]
    for ax, key, title in zip(axes, ("map", "map50"), ("mAP@[.5:.95]", "mAP@.5"), strict=True):
        xmax = 0.0
        for label, data, external in series:
            pairs = sorted(
                (b, m)
                for b, m in zip(data["results"]["bpp"], data["results"][key], strict=True)
                if b is not None
            )
            if not pairs:
                continue
            xs, ys = zip(*pairs, strict=True)
            xmax = max(xmax, max(xs))
            if external:
                role = "anchor" if anchor and label.lower() == anchor.lower() else "overlay"
                ax.plot(
                    xs, ys, color=color(data, label), label=f"{label} ({role})",
                    ls="--", lw=1, marker=".", alpha=0.7,
                )  # fmt: skip
            else:
                ax.plot(xs, ys, color=color(data, label), marker="o", ms=4, label=label)
        bpp = baseline.get("bpp")
        note = f" ({bpp:.2f} bpp)" if bpp else ""
        ax.axhline(baseline[key], color="k", ls=":", lw=1.2, label=f"uncompressed{note}")
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(title)
        ax.set_title(f"{detector}: {title}")
        ax.set_ylim(bottom=0)
        if xmax > 0:
            ax.set_xlim(0, xmax * 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
