"""Results of an evaluation: per-codec results files, CSV rows, curves and BD tables.

* :func:`results_json` turns the records of one codec into CompressAI's results layout
  (``{"name", "description", "results": {"quality", "bpp", "psnr-rgb", "ms-ssim-rgb", ...}}``)
  with the per-image values as in ``shared/anchors/kodak/measured-pillow-*.json``;
* :class:`Curve` is a rate-quality curve of this run or of such a file;
* :func:`bd_table` compares every curve with every anchor (BD-rate at equal PSNR-RGB,
  BD-PSNR at equal rate, BD-rate at equal MS-SSIM in dB) and :func:`bd_markdown` prints it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusioncodec import metrics

CSV_COLUMNS = (
    "image",
    "codec",
    "quality",
    "width",
    "height",
    "bytes",
    "bpp",
    "psnr_rgb",
    "ms_ssim_rgb",
    "ms_ssim_db",
    "machine_bytes",
    "machine_bpp",
    "encode_s",
    "decode_s",
)


# --------------------------------------------------------------------------- results


def _finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null (CompressAI files are strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def dumps(data: Any) -> str:
    return json.dumps(_finite(data), indent=1, allow_nan=False) + "\n"


def _mean(values: Sequence[float | None]) -> float:
    """Mean of the finite values; NaN if there are none (or inf if a value is +inf)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(xs)) if xs else float("nan")


def results_json(
    codec: str,
    label: str,
    description: str,
    qualities: Sequence[float],
    records: Sequence[dict[str, Any]],
    image_keys: Sequence[str],
    images: str,
) -> dict[str, Any]:
    """One codec's records in CompressAI's layout, with per-image values and the qualities."""
    by_q: dict[float, list[dict[str, Any]]] = {float(q): [] for q in qualities}
    per_image: dict[str, list[dict[str, Any]]] = {key: [] for key in image_keys}
    for r in records:
        by_q[float(r["quality"])].append(r)
        entry = {
            "q": r["quality"],
            "bpp": r["bpp"],
            "psnr": r["psnr_rgb"],
            "msssim": r["ms_ssim_rgb"],
            "t": r["encode_s"],
            "t_dec": r["decode_s"],
            "bytes": r["bytes"],
        }
        if r["machine_bpp"] is not None:
            entry["machine_bpp"] = r["machine_bpp"]
        per_image[r["image"]].append(entry)
    rows = [by_q[float(q)] for q in qualities]
    results: dict[str, list[Any]] = {
        "quality": list(qualities),
        "bpp": [_mean([r["bpp"] for r in row]) for row in rows],
        "psnr-rgb": [_mean([r["psnr_rgb"] for r in row]) for row in rows],
        "ms-ssim-rgb": [_mean([r["ms_ssim_rgb"] for r in row]) for row in rows],
        "encoding_time": [_mean([r["encode_s"] for r in row]) for row in rows],
        "decoding_time": [_mean([r["decode_s"] for r in row]) for row in rows],
    }
    if any(r["machine_bpp"] is not None for r in records):
        results["machine-bpp"] = [_mean([r["machine_bpp"] for r in row]) for row in rows]
    return {
        "name": label,
        "description": f"{description}; images: {images} ({len(image_keys)})",
        "codec": codec,
        "n_images": len(image_keys),
        "results": results,
        "per_image": per_image,
    }


def results_csv(records: Sequence[dict[str, Any]]) -> str:
    """One row per image x codec x quality (NaN as an empty cell)."""

    def cell(value: Any) -> Any:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return repr(value)
        return value

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow([cell(r[c]) for c in CSV_COLUMNS])
    return buffer.getvalue()


# --------------------------------------------------------------------------- curves and BD


@dataclass
class Curve:
    """A rate-quality curve: from this run, or read from a results JSON (``external``)."""

    key: str
    label: str
    bpp: list[float]
    psnr: list[float]
    msssim: list[float] | None = None
    external: bool = False
    source: str = ""
    quality: list[Any] = field(default_factory=list)

    @classmethod
    def from_results(
        cls, key: str, data: dict[str, Any], external: bool = False, source: str = ""
    ) -> Curve:
        """From a CompressAI-layout dict; ValueError if ``results.bpp``/``psnr-rgb`` are bad."""
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, dict):
            raise ValueError("not a CompressAI results file (no 'results' object)")

        def numbers(name: str) -> list[float] | None:
            values = results.get(name)
            if values is None:
                return None
            if not isinstance(values, list) or not all(
                v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                for v in values
            ):
                raise ValueError(f"results.{name} is not a list of numbers")
            return [float("nan") if v is None else float(v) for v in values]

        rates, psnr = numbers("bpp"), numbers("psnr-rgb")
        if rates is None or psnr is None:
            raise ValueError("not a CompressAI results file (needs results.bpp and psnr-rgb)")
        if len(rates) != len(psnr) or not rates:
            raise ValueError("results.bpp and results.psnr-rgb differ in length (or are empty)")
        msssim = numbers("ms-ssim-rgb")
        if msssim is not None and (len(msssim) != len(rates) or all(math.isnan(v) for v in msssim)):
            msssim = None
        label = str(data.get("name") or key)
        return cls(
            key,
            label,
            rates,
            psnr,
            msssim,
            external,
            source,
            list(results.get("quality") or []),
        )

    def points(self, metric: str) -> tuple[list[float], list[float]]:
        """(bpp, quality) pairs with finite values; ``metric`` is psnr or msssim (in dB)."""
        if metric == "psnr":
            ys = self.psnr
        elif self.msssim is None:
            return [], []
        else:
            ys = [metrics.msssim_db(v) for v in self.msssim]
        pairs = [
            (x, y) for x, y in zip(self.bpp, ys, strict=True) if math.isfinite(x + y) and x > 0
        ]
        return [x for x, _ in pairs], [y for _, y in pairs]


def load_curve(path: Path, key: str | None = None) -> Curve:
    """A results JSON (CompressAI layout) as an external curve; ValueError/OSError on failure."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    try:
        return Curve.from_results(key or path.stem, data, external=True, source=str(path))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


BD_METRICS = {
    # column name: (quality measure, function, unit)
    "bd_rate_psnr": ("psnr", metrics.bd_rate, "%"),
    "bd_psnr": ("psnr", metrics.bd_psnr, "dB"),
    "bd_rate_msssim": ("msssim", metrics.bd_rate, "%"),
}


def _why(exc: ValueError) -> str:
    text = str(exc)
    if "four" in text:
        return "< 4 points"
    if "share no" in text:
        return "no overlap"
    return "bad values"


def bd_table(curves: Sequence[Curve], anchors: Sequence[Curve]) -> list[dict[str, Any]]:
    """One row per (curve, anchor): each BD measure, or None with a note saying why."""
    rows = []
    for anchor in anchors:
        for curve in curves:
            row: dict[str, Any] = {"curve": curve.key, "anchor": anchor.key, "notes": {}}
            for name, (measure, fn, _) in BD_METRICS.items():
                ra, qa = anchor.points(measure)
                rt, qt = curve.points(measure)
                if measure == "msssim" and (not qa or not qt):
                    row[name], row["notes"][name] = None, "no MS-SSIM"
                    continue
                try:
                    row[name] = fn(ra, qa, rt, qt)
                except ValueError as exc:
                    row[name], row["notes"][name] = None, _why(exc)
            rows.append(row)
    return rows


def bd_markdown(
    rows: Sequence[dict[str, Any]], curves: Sequence[Curve], anchors: Sequence[Curve], title: str
) -> str:
    """The BD tables as Markdown: one table per measure, a row per curve, a column per anchor."""
    cells = {(r["curve"], r["anchor"]): r for r in rows}
    heads = {
        "bd_rate_psnr": "BD-rate (%) at equal PSNR-RGB; negative: fewer bits than the anchor",
        "bd_psnr": "BD-PSNR (dB) at equal rate; positive: better than the anchor",
        "bd_rate_msssim": "BD-rate (%) at equal MS-SSIM (dB); negative: fewer bits",
    }
    lines = [f"# {title}", ""]
    for name, (_, _, unit) in BD_METRICS.items():
        lines += [f"## {heads[name]}", ""]
        lines.append("| curve | " + " | ".join(f"vs {a.key}" for a in anchors) + " |")
        lines.append("|---|" + "---:|" * len(anchors))
        for curve in curves:
            out = []
            for anchor in anchors:
                row = cells[(curve.key, anchor.key)]
                value = row[name]
                if curve.key == anchor.key:
                    out.append("(anchor)")
                elif value is None:
                    out.append(f"n/a ({row['notes'][name]})")
                elif unit == "%":
                    out.append(f"{value:+.1f}%")
                else:
                    out.append(f"{value:+.2f} dB")
            lines.append(f"| {curve.key} | " + " | ".join(out) + " |")
        lines.append("")
    lines.append(
        "Bjontegaard deltas: cubic fits of log-rate against quality (BD-rate) or of quality "
        "against log-rate (BD-PSNR), averaged over the range both curves cover. "
        "MS-SSIM in dB: -10 log10(1 - MS-SSIM)."
    )
    return "\n".join(lines) + "\n"
