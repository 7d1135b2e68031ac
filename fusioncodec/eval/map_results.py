"""``fcodec eval machine``'s results: curves in the layout of ``shared/anchors/coco128``
(so curves overlay and serve as BD-rate anchors), the anchors and overlays they are compared
with, and machine-task BD-rates (mAP in place of PSNR).
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusioncodec.eval import EvalError
from fusioncodec.eval.machine import Log, MapCurve, Point, Run, read_json
from fusioncodec.files import shared_dir
from fusioncodec.messages import error_reason
from fusioncodec.messages import shown_path as show

if TYPE_CHECKING:
    from fusioncodec.eval.detectors import Detector

UNCOMPRESSED_NOTE = "source images as given; bpp = source file size"


def bpp_at_fraction(bpps: Sequence[float], maps: Sequence[float], target: float) -> float | None:
    """Lowest bpp where the curve (in bpp order) first reaches ``target``; log-linear."""
    pairs = sorted((b, m) for b, m in zip(bpps, maps, strict=True) if b is not None and b > 0)
    for i, (b, m) in enumerate(pairs):
        if m >= target:
            if i == 0:
                return b
            b0, m0 = pairs[i - 1]
            f = (target - m0) / (m - m0)
            return float(math.exp(math.log(b0) + f * (math.log(b) - math.log(b0))))
    return None


def read_anchor(path: Path) -> dict[str, Any]:
    data = read_json(path)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not all(k in results for k in ("bpp", "map", "map50")):
        raise EvalError(f"{show(path)}: not an mAP curve (needs results.bpp, .map, .map50)")
    return data


def anchor_dir() -> Path:
    return shared_dir() / "anchors" / "coco128"


def external_curves(spec: str, detector: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, anchor JSON) pairs that ``spec`` names for ``detector``.

    ``spec`` is a JSON file (used when its ``detector`` matches or is absent), a folder
    (its ``<detector>_*.json`` curves) or a codec name (``shared/anchors/coco128``).
    """
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.glob(f"{detector}_*.json"))
        out = []
        for file in files:
            try:
                data = read_anchor(file)
            except EvalError:  # the uncompressed baseline, or not a curve
                continue
            out.append((str(data.get("name") or file.stem[len(detector) + 1 :]), data))
        return out
    if path.suffix.lower() == ".json" or path.is_file():
        if not path.is_file():
            raise EvalError(f"{show(path)}: no such file")
        data = read_anchor(path)
        if data.get("detector", detector) != detector:
            return []
        return [(str(data.get("name") or path.stem), data)]
    candidate = anchor_dir() / f"{detector}_{spec.lower()}.json"
    if candidate.is_file():
        data = read_anchor(candidate)
        return [(str(data.get("name") or spec), data)]
    return []


def uncompressed_json(
    detector: Detector, point: Point, images: Path, annotations: Path
) -> dict[str, Any]:
    score = point.scores[detector.name]
    return {
        "name": detector.name,
        "codec": "uncompressed",
        "weights": str(detector.onnx_path),
        "images": str(images),
        "ann": str(annotations),
        "n_images": score.n_images,
        "n_dets": score.n_dets,
        "settings": detector.settings,
        "seconds": round(point.seconds[detector.name], 2),
        "map": score.map,
        "map50": score.map50,
        "stats": score.stats,
        "bpp": point.bpp,
        "note": UNCOMPRESSED_NOTE,
    }


def curve_json(
    detector: Detector,
    curve: MapCurve,
    baseline: Point,
    images: Path,
    annotations: Path,
) -> dict[str, Any]:
    name = detector.name
    base = baseline.scores[name]
    points = curve.points
    results = {
        "quality": [p.quality for p in points],
        "bpp": [p.bpp for p in points],
        "map": [p.scores[name].map for p in points],
        "map50": [p.scores[name].map50 for p in points],
        "psnr-rgb": [p.psnr for p in points],
        "n_dets": [p.scores[name].n_dets for p in points],
    }
    data: dict[str, Any] = {
        "name": curve.label,
        "codec": curve.codec,
        "description": (
            f"{curve.description}; detector {name} ({detector.onnx_path}); images {images} "
            f"({base.n_images} annotated); fcodec eval machine"
        ),
        "detector": name,
        "weights": str(detector.onnx_path),
        "settings": detector.settings,
        "n_images": points[0].n_images if points else 0,
        "ann": str(annotations),
        "uncompressed": {
            "bpp": baseline.bpp,
            "map": base.map,
            "map50": base.map50,
            "note": UNCOMPRESSED_NOTE,
        },
        "results": results,
    }
    for key in ("map", "map50"):
        target = 0.9 * data["uncompressed"][key]
        data[f"bpp_at_90pct_{key}"] = bpp_at_fraction(results["bpp"], results[key], target)
    return data


def anchor_curve(
    anchor_spec: str, detector: str, curves: dict[str, dict[str, Any]]
) -> tuple[str, dict[str, Any]] | None:
    """(label, curve) of the BD-rate anchor: a coded curve of this run, else an external one."""
    for codec, data in curves.items():
        if anchor_spec.lower() in (codec.lower(), str(data.get("name")).lower()):
            return codec, data
    found = external_curves(anchor_spec, detector)
    return found[0] if found else None


def bd_rows(
    detector: str,
    curves: dict[str, dict[str, Any]],
    anchor_spec: str,
    anchor: tuple[str, dict[str, Any]] | None,
    n_images: int,
) -> list[dict[str, Any]]:
    """BD-rate rows of every coded curve against ``anchor`` (from :func:`anchor_curve`)."""
    from fusioncodec.metrics import bd_rate

    rows = []
    for codec, data in curves.items():
        if anchor is not None and data is anchor[1]:
            continue
        row: dict[str, Any] = {
            "detector": detector,
            "codec": codec,
            "anchor": anchor[0] if anchor else anchor_spec,
        }
        if anchor is None:
            row["error"] = f"no anchor curve {anchor_spec!r} for {detector}"
            rows.append(row)
            continue
        a = anchor[1]
        if a.get("n_images") not in (None, n_images):
            row["note"] = f"anchor measured on {a['n_images']} images, this run on {n_images}"
        for key in ("map", "map50"):
            pts = [
                (b, m)
                for b, m in zip(data["results"]["bpp"], data["results"][key], strict=True)
                if b is not None and b > 0
            ]
            ref = [
                (b, m)
                for b, m in zip(a["results"]["bpp"], a["results"][key], strict=True)
                if b is not None and b > 0
            ]
            try:
                if not pts:
                    raise ValueError("no bpp for this curve (give --bpp-json)")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # polyfit's RankWarning on flat curves
                    value = bd_rate(
                        [b for b, _ in ref],
                        [m for _, m in ref],
                        [b for b, _ in pts],
                        [m for _, m in pts],
                    )
                row[f"bd_rate_{key}"] = value if math.isfinite(value) else None
            except (ValueError, TypeError) as exc:  # numpy's LinAlgError is a ValueError
                row[f"bd_rate_{key}"] = None
                row.setdefault("error", error_reason(exc))
        rows.append(row)
    return rows


def bd_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Machine-task BD-rate",
        "",
        "Bjontegaard delta rate (%) at equal detector mAP (mAP takes the place of PSNR); "
        "negative = fewer bits than the anchor for the same mAP.",
        "",
        "| detector | codec | anchor | BD-rate mAP@[.5:.95] | BD-rate mAP@.5 | note |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.1f}%"

    for row in rows:
        note = "; ".join(str(row[k]) for k in ("error", "note") if row.get(k))
        lines.append(
            f"| {row['detector']} | {row['codec']} | {row['anchor']} | "
            f"{fmt(row.get('bd_rate_map'))} | {fmt(row.get('bd_rate_map50'))} | {note} |"
        )
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "detector", "codec", "quality", "bpp", "map", "map50", "psnr_rgb", "n_images", "n_dets",
    "seconds",
)  # fmt: skip


def csv_rows(detector: str, points: Sequence[Point]) -> list[dict[str, Any]]:
    """One results.csv row per point, for one detector."""
    rows = []
    for point in points:
        score = point.scores[detector]
        rows.append(
            {
                "detector": detector,
                "codec": point.codec,
                "quality": "" if point.quality is None else point.quality,
                "bpp": "" if point.bpp is None else f"{point.bpp:.6f}",
                "map": f"{score.map:.6f}",
                "map50": f"{score.map50:.6f}",
                "psnr_rgb": "" if point.psnr is None else f"{point.psnr:.4f}",
                "n_images": score.n_images,
                "n_dets": score.n_dets,
                "seconds": f"{point.seconds[detector]:.2f}",
            }
        )
    return rows


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_results(
    run: Run,
    baseline: Point,
    curves: dict[str, MapCurve],
    compare: tuple[str, Sequence[str]],
    write: Callable[[Path, bytes | str], None],
    log: Log,
) -> None:
    """Per detector: the curves' JSON, the plot and the BD rows; then the tables.
    ``compare``: the BD-rate anchor and the overlays; ``write(path, data)`` writes a file."""
    anchor, overlay = compare
    plots = importlib.util.find_spec("matplotlib") is not None
    if not plots:
        log("fcodec: warning: matplotlib is not installed; no plots", err=True)
    rows: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    written = 0
    points = [baseline] + [p for c in curves.values() for p in c.points]
    for detector in run.detectors:
        det = detector.name
        base = uncompressed_json(detector, baseline, run.images, run.annotations)
        write(run.out / f"{det}_uncompressed.json", json.dumps(base, indent=1) + "\n")
        data = {
            name: curve_json(detector, curve, baseline, run.images, run.annotations)
            for name, curve in curves.items()
        }
        for name, curve_data in data.items():
            write(run.out / f"{det}_{name}.json", json.dumps(curve_data, indent=1) + "\n")
        written += 1 + len(data)
        rows += csv_rows(det, points)
        overlays = [found for spec in overlay for found in external_curves(spec, det)]
        found = anchor_curve(anchor, det, data)
        if plots:
            from fusioncodec.eval.plots import map_plot

            label = found[0] if found else None
            write(run.out / f"map-{det}.png", map_plot(det, data, base, overlays, label))
            written += 1
        if data:
            table += bd_rows(det, data, anchor, found, len(run.sources))
    markdown = bd_markdown(table)
    write(run.out / "results.csv", results_csv(rows))
    write(run.out / "bd-rate.json", json.dumps(table, indent=1) + "\n")
    write(run.out / "bd-rate.md", markdown)
    if table:
        log(markdown.split("\n", 4)[4].rstrip())
    else:
        log("no BD-rate: no coded curve other than the anchor")
    log(f"wrote {written + 3} files to {show(run.out)}", err=True)
