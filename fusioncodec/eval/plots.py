"""RD plots (PNG bytes) with matplotlib's Agg canvas: no pyplot, no global backend change."""

from __future__ import annotations

import io
from collections.abc import Sequence

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
