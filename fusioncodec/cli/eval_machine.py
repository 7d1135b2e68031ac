"""``fcodec eval machine``: detector COCO mAP against bpp, for fusioncodec and other codecs.

Every image of ``--images`` that the annotation file lists (matched by file-name stem) is
coded and decoded by each codec at each quality; each detector runs on the decoded pictures
and pycocotools scores its boxes (bbox mAP@[.5:.95] and mAP@.5).  The uncompressed baseline
(the source files as given, bpp = file size) is always measured.  ``--decoded DIR`` scores
folders of pictures decoded by any other codec the same way.

Outputs in ``--out``: ``<detector>_<codec>.json`` in the layout of
``shared/anchors/coco128/*.json`` (so curves overlay and can serve as BD-rate anchors),
``results.csv``, ``map-<detector>.png`` and ``bd-rate.md`` / ``bd-rate.json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fusioncodec.cli.common import (
    CliError,
    baseline_loader,
    codec_loader,
    device_option,
    show,
    weights_option,
)
from fusioncodec.files import is_image, shared_dir, write_atomic
from fusioncodec.messages import error_reason

if TYPE_CHECKING:
    from PIL import Image

    from fusioncodec.codec import Codec, SingleLayerRunner
    from fusioncodec.eval.detectors import Detector

    # (image, quality) -> (bytes counted for the rate, decoded image)
    Roundtrip = Callable[[Image.Image, float], tuple[int, Image.Image]]

LEARNED = ("fusioncodec", "fusioncodec-human", "baseline")  # quality sweep: --qualities
BUILTIN_CODECS = ("uncompressed", *LEARNED, "jpeg", "webp", "avif", "hevc")
# Default quality sweeps: those of the shared coco128 anchors, so the curves line up.
CLASSICAL_QUALITIES = {
    "jpeg": (1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 75, 90),
    "webp": (0, 2, 5, 10, 15, 20, 30, 50, 75, 90),
    "avif": (0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 75),
    "hevc": (0, 3, 6, 10, 15, 20, 25, 30, 40, 50),
}
LABELS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "hevc": "HEVC"}
DESCRIPTIONS = {
    "jpeg": "JPEG, Pillow/libjpeg(-turbo) defaults (4:2:0, no optimize), quality sweep",
    "webp": "WebP lossy, Pillow/libwebp defaults (method 4, 4:2:0)",
    "avif": "AVIF, Pillow (libavif), 4:2:0",
    "hevc": "HEIC (HEVC intra), pillow-heif/libheif + x265 defaults, 4:2:0",
    "fusioncodec": "fusioncodec machine layer only (.fcb file with header)",
    "fusioncodec-human": "fusioncodec human layer (.fcb file with both layers and header)",
    "baseline": "single-layer learned codec (the standard LIC; rate: payload bytes)",
}
DEFAULT_ANCHOR = "jpeg"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Source:
    """An annotated image: COCO id, file, pixels of the original."""

    image_id: int
    path: Path
    stem: str


@dataclass
class Point:
    """One (codec, quality) point: per-detector mAP over the scored images."""

    codec: str
    quality: Any
    bpp: float | None
    psnr: float | None
    n_images: int
    scores: dict[str, Any] = field(default_factory=dict)  # detector name -> MapResult
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Curve:
    codec: str
    label: str
    description: str
    points: list[Point] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def _parse_list(text: str, what: str, cast: Callable[[str], Any]) -> list[Any]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise CliError(f"{what}: empty list")
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise CliError(f"{what}: not a comma list of numbers: {text!r}") from None


def _stem_key(name: str) -> str:
    """``000000000009.machine.png`` -> ``000000000009`` (the part before the first dot)."""
    return Path(name).name.split(".")[0]


def _image_files(directory: Path) -> list[Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise CliError(f"{show(directory)}: cannot list: {error_reason(exc)}") from None
    return [p for p in entries if is_image(p) and p.is_file()]


def _match(files: Sequence[Path], stems: dict[str, int]) -> dict[int, Path]:
    """Annotation image id -> file, by exact stem, else by the name up to its first dot."""
    found: dict[int, Path] = {}
    for path in files:
        key = path.stem if path.stem in stems else _stem_key(path.name)
        if key in stems and stems[key] not in found:
            found[stems[key]] = path
    return found


def _open(path: Path) -> Image.Image:
    from PIL import Image

    if path.suffix.lower() in (".heic", ".heif"):
        with suppress(ImportError):
            import pillow_heif

            pillow_heif.register_heif_opener()
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except Exception as exc:  # Pillow's plugins raise many exception types
        raise CliError(f"{show(path)}: cannot read image ({error_reason(exc)})") from None


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _write(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise CliError(f"{show(path)}: cannot write: {error_reason(exc)}") from None


def _write_json(path: Path, data: Any) -> None:
    _write(path, (json.dumps(data, indent=1) + "\n").encode())


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


# --------------------------------------------------------------------------- codecs


class _Classical:
    """Round trip through ``fusioncodec.eval.classical`` when it has the codec, else Pillow."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.shared: Any = None
        try:
            from fusioncodec.eval import classical

            codec = classical.get(name)
            if all(hasattr(codec, a) for a in ("encode", "decode", "missing")):
                self.shared = codec
        except Exception:  # absent or different: use the built-in Pillow round trip
            self.shared = None

    @property
    def description(self) -> str:
        text = getattr(self.shared, "description", None)
        return text if isinstance(text, str) and text else DESCRIPTIONS.get(self.name, self.name)

    def check(self) -> None:
        if self.shared is not None:
            why = self.shared.missing()
            if why:
                raise CliError(f"{self.name}: {why}")
            return
        from fusioncodec.eval.coco_map import CLASSICAL, check_classical

        if self.name not in CLASSICAL:
            raise CliError(f"unknown codec {self.name!r}")
        try:
            check_classical(self.name)
        except ValueError as exc:
            raise CliError(f"{self.name}: {exc}") from None

    def roundtrip(self, image: Image.Image, quality: int) -> tuple[int, Image.Image]:
        if self.shared is None:
            from fusioncodec.eval.coco_map import roundtrip

            return roundtrip(image, self.name, quality)
        from PIL import Image

        data = self.shared.encode(image, quality)
        decoded = self.shared.decode(data, image.width, image.height)
        return len(data), Image.fromarray(decoded).convert("RGB")


def _learned_runner(
    name: str, get_codec: Callable[[], Codec], get_baseline: Callable[[], SingleLayerRunner]
) -> tuple[str, Roundtrip]:
    """Load a learned codec (fatal CliError on failure): its model name and a round trip
    ``(image, quality) -> (bytes counted for the rate, decoded image)``."""
    if name != "baseline":
        codec = get_codec()
        layers = ("machine",) if name == "fusioncodec" else ("machine", "human")

        def scalable(image: Image.Image, q: float) -> tuple[int, Image.Image]:
            data = codec.encode(image, layers=layers, quality=q)
            return len(data), codec.decode(data, layers[-1])

        return codec.name, scalable
    runner = get_baseline()

    def single(image: Image.Image, q: float) -> tuple[int, Image.Image]:
        payload = runner.encode(image, q)
        return len(payload), runner.decode(payload, image.width, image.height, q)

    return runner.loaded.name, single


def _known_codecs() -> tuple[str, ...]:
    names = list(BUILTIN_CODECS)
    with suppress(Exception):
        from fusioncodec.eval import classical

        names += [n for n in classical.CLASSICAL if n not in names]
    return tuple(names)


# --------------------------------------------------------------------------- bpp files


def _read_json(path: Path) -> Any:
    """The JSON in ``path``; a one-line CliError if it cannot be read or is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{show(path)}: cannot read: {error_reason(exc)}") from None
    except (ValueError, UnicodeDecodeError):
        raise CliError(f"{show(path)}: not valid JSON") from None


def _load_bpp(path: Path, stems: dict[str, int]) -> float | dict[int, float]:
    """A ``--bpp-json`` file: one number, {"bpp": x}, or {image name or stem: bpp}."""
    data = _read_json(path)
    if isinstance(data, dict) and isinstance(data.get("bpp"), int | float):
        data = data["bpp"]
    if isinstance(data, dict):
        data = data.get("per_image", data.get("images", data))

    def rate(value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise CliError(f"{show(path)}: bpp must be a positive number, got {value}")
        return float(value)

    if isinstance(data, int | float) and not isinstance(data, bool):
        return rate(data)
    if isinstance(data, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()
    ):
        per_image: dict[int, float] = {}
        for name, value in data.items():
            key = Path(name).stem if Path(name).stem in stems else _stem_key(name)
            if key in stems:
                per_image[stems[key]] = rate(value)
        return per_image
    raise CliError(f'{show(path)}: expected a number, {{"bpp": x}} or {{image name: bpp, ...}}')


# --------------------------------------------------------------------------- anchors


def _read_anchor(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or not all(k in results for k in ("bpp", "map", "map50")):
        raise CliError(f"{show(path)}: not an mAP curve (needs results.bpp, .map, .map50)")
    return data


def _anchor_dir() -> Path:
    return shared_dir() / "anchors" / "coco128"


def _external_curves(spec: str, detector: str) -> list[tuple[str, dict[str, Any]]]:
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
                data = _read_anchor(file)
            except CliError:  # the uncompressed baseline, or not a curve
                continue
            out.append((str(data.get("name") or file.stem[len(detector) + 1 :]), data))
        return out
    if path.suffix.lower() == ".json" or path.is_file():
        if not path.is_file():
            raise CliError(f"{show(path)}: no such file")
        data = _read_anchor(path)
        if data.get("detector", detector) != detector:
            return []
        return [(str(data.get("name") or path.stem), data)]
    candidate = _anchor_dir() / f"{detector}_{spec.lower()}.json"
    if candidate.is_file():
        data = _read_anchor(candidate)
        return [(str(data.get("name") or spec), data)]
    return []


# --------------------------------------------------------------------------- the sweep


@dataclass
class Sweep:
    detectors: list[Detector]
    coco: Any
    sources: list[Source]
    progress: bool

    def run_point(
        self,
        codec: str,
        quality: Any,
        images: Iterator[tuple[Source, Image.Image, int | None, Image.Image | None]],
        total: int,
        bpp_override: float | dict[int, float] | None = None,
    ) -> Point:
        """Detect on every decoded image; ``images`` yields (source, decoded, bytes, original)."""
        from tqdm import tqdm

        from fusioncodec.eval.coco_map import CocoScorer, psnr
        from fusioncodec.eval.detectors import DetectorError

        scorers = {d.name: CocoScorer(self.coco) for d in self.detectors}
        seconds = {d.name: 0.0 for d in self.detectors}
        bpps: list[float] = []
        psnrs: list[float] = []
        ids: list[int] = []
        desc = f"{codec} {quality}" if quality is not None else codec
        bar = tqdm(
            images, total=total, desc=desc, file=sys.stderr, disable=not self.progress, leave=False
        )
        for source, decoded, n_bytes, original in bar:
            ids.append(source.image_id)
            if n_bytes is not None and original is not None:
                bpps.append(8.0 * n_bytes / (original.width * original.height))
            if original is not None:
                value = psnr(original, decoded)
                if value is not None:
                    psnrs.append(value)
            for detector in self.detectors:
                start = time.perf_counter()
                try:
                    dets = detector.detect(decoded)
                except DetectorError as exc:
                    raise CliError(str(exc)) from None
                seconds[detector.name] += time.perf_counter() - start
                scorers[detector.name].add(source.image_id, dets, decoded.size)
        bar.close()
        if isinstance(bpp_override, float):
            bpp: float | None = bpp_override
        elif isinstance(bpp_override, dict):
            missing = [i for i in ids if i not in bpp_override]
            if missing:
                name = self.coco.imgs[missing[0]]["file_name"]
                raise CliError(f"--bpp-json has no bpp for {name} ({len(missing)} images lack one)")
            bpp = _mean([bpp_override[i] for i in ids])
        else:
            bpp = _mean(bpps) if bpps else None
        point = Point(codec, quality, bpp, _finite(_mean(psnrs)) if psnrs else None, len(ids))
        for name, scorer in scorers.items():
            point.scores[name] = scorer.score()
            point.seconds[name] = seconds[name]
        return point


# --------------------------------------------------------------------------- outputs


def _uncompressed_json(
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
        "note": "source images as given; bpp = source file size",
    }


def _curve_json(
    detector: Detector,
    curve: Curve,
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
            "note": "source images as given; bpp = source file size",
        },
        "results": results,
    }
    for key in ("map", "map50"):
        target = 0.9 * data["uncompressed"][key]
        data[f"bpp_at_90pct_{key}"] = bpp_at_fraction(results["bpp"], results[key], target)
    return data


def _plot(
    path: Path,
    detector: str,
    curves: dict[str, dict[str, Any]],
    baseline: dict[str, Any],
    overlays: list[tuple[str, dict[str, Any]]],
    anchor: str | None = None,
) -> bool:
    """mAP and mAP@.5 against bpp (False if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    palette = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colors: dict[str, str] = {}

    def color(name: str) -> str:  # one colour per codec: a run's curve and its anchor match
        key = name.lower().split(" ")[0]
        return colors.setdefault(key, palette[len(colors) % len(palette)])

    xmax = 0.0
    series = [(label, data, False) for label, data in curves.items()]
    series += [(label, data, True) for label, data in overlays]
    for ax, key, title in zip(axes, ("map", "map50"), ("mAP@[.5:.95]", "mAP@.5"), strict=True):
        for label, data, is_anchor in series:
            pairs = sorted(
                (b, m)
                for b, m in zip(data["results"]["bpp"], data["results"][key], strict=True)
                if b is not None
            )
            if not pairs:
                continue
            xs, ys = zip(*pairs, strict=True)
            xmax = max(xmax, max(xs))
            if is_anchor:
                style = {"ls": "--", "lw": 1, "marker": ".", "alpha": 0.7}
                role = "anchor" if anchor and label.lower() == anchor.lower() else "overlay"
                ax.plot(xs, ys, color=color(label), label=f"{label} ({role})", **style)
            else:
                ax.plot(xs, ys, color=color(label), marker="o", ms=4, label=label)
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
    plt.close(fig)
    _write(path, buffer.getvalue())
    return True


def _anchor_curve(
    anchor_spec: str, detector: str, curves: dict[str, dict[str, Any]]
) -> tuple[str, dict[str, Any]] | None:
    """(label, curve) of the BD-rate anchor: a coded curve of this run, else an external one."""
    for codec, data in curves.items():
        if anchor_spec.lower() in (codec.lower(), str(data.get("name")).lower()):
            return codec, data
    found = _external_curves(anchor_spec, detector)
    return found[0] if found else None


def _bd_rows(
    detector: str,
    curves: dict[str, dict[str, Any]],
    anchor_spec: str,
    anchor: tuple[str, dict[str, Any]] | None,
    n_images: int,
) -> list[dict[str, Any]]:
    """BD-rate rows of every coded curve against ``anchor`` (from :func:`_anchor_curve`)."""
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


def _bd_markdown(rows: list[dict[str, Any]]) -> str:
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


# --------------------------------------------------------------------------- the command


@click.command("machine")
@click.option(
    "--images",
    "images_dir",
    required=True,
    metavar="DIR",
    help="Original images; files are matched to the annotations' file names by stem.",
)
@click.option(
    "--annotations",
    required=True,
    metavar="FILE",
    help="COCO instances JSON (e.g. shared/data/coco128/instances.json).",
)
@click.option(
    "--detector",
    "detector_specs",
    multiple=True,
    metavar="SPEC",
    help="yolox, fastestdet, NAME:MODEL.onnx, plugin.py[:MODEL.onnx] or "
    "module:factory[:MODEL.onnx]; repeatable. Default: yolox and fastestdet "
    "from $FUSIONCODEC_SHARED/detectors.",
)
@click.option(
    "--codecs",
    default=None,
    metavar="LIST",
    help="Comma list of uncompressed, fusioncodec (machine layer), fusioncodec-human (both "
    "layers, human decoder), baseline (single-layer LIC), jpeg, webp, avif, hevc. "
    "Default: uncompressed,fusioncodec (uncompressed only with --decoded). "
    "The uncompressed images are always scored.",
)
@click.option(
    "--qualities",
    default="1,2,3,4,5,6,7,8",
    show_default=True,
    metavar="LIST",
    help="Qualities of fusioncodec, fusioncodec-human and baseline.",
)
@click.option(
    "--classical-qualities",
    default=None,
    metavar="LIST",
    help="Qualities for jpeg/webp/avif/hevc. Default: the sweeps of the shared anchors.",
)
@weights_option
@click.option(
    "--baseline-weights",
    default=None,
    metavar="PATH",
    help="Single-layer baseline weights (codec 'baseline'). Default: the shipped baseline.",
)
@device_option
@click.option(
    "--decoded",
    "decoded_dirs",
    multiple=True,
    metavar="DIR",
    help="Score a folder of images decoded by any codec (matched by stem, the part of the "
    "name before the first dot); repeat for several rate points of one curve.",
)
@click.option(
    "--bpp-json",
    "bpp_files",
    multiple=True,
    metavar="FILE",
    help="Bits per pixel of a --decoded folder (in the same order): a number, "
    '{"bpp": x} or {image name: bpp}. Default: DIR/bpp.json if present.',
)
@click.option(
    "--label",
    default="decoded",
    metavar="NAME",
    show_default=True,
    help="Curve name for the --decoded folders.",
)
@click.option("--limit", type=int, default=None, metavar="N", help="Only the first N images.")
@click.option(
    "--jobs",
    "-j",
    type=int,
    default=0,
    show_default=True,
    metavar="N",
    help="CPU threads for the detectors and the codec (0: all cores).",
)
@click.option(
    "--out",
    "out_dir",
    default="eval-machine",
    show_default=True,
    metavar="DIR",
    help="Output folder.",
)
@click.option(
    "--overlay",
    multiple=True,
    metavar="JSON|DIR|NAME",
    help="Extra curves on the plots: anchor JSON files, a folder of <detector>_*.json, "
    "or a codec name from $FUSIONCODEC_SHARED/anchors/coco128; repeatable.",
)
@click.option(
    "--anchor",
    default=DEFAULT_ANCHOR,
    show_default=True,
    metavar="NAME|JSON",
    help="BD-rate anchor: a codec of this run, an anchor JSON, or a codec name from "
    "$FUSIONCODEC_SHARED/anchors/coco128.",
)
@click.option("--force", "-f", is_flag=True, help="Overwrite existing outputs in --out.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on stderr. Default: when stderr is a terminal.",
)
def machine(
    images_dir: str,
    annotations: str,
    detector_specs: tuple[str, ...],
    codecs: str | None,
    qualities: str,
    classical_qualities: str | None,
    weights: str | None,
    baseline_weights: str | None,
    device: str,
    decoded_dirs: tuple[str, ...],
    bpp_files: tuple[str, ...],
    label: str,
    limit: int | None,
    jobs: int,
    out_dir: str,
    overlay: tuple[str, ...],
    anchor: str,
    force: bool,
    progress: bool | None,
) -> None:
    """Detector COCO mAP against bpp, with machine-task BD-rates.

    Each detector (onnxruntime) scores the uncompressed images, every codec's quality
    sweep and any --decoded folders; results go to --out as <detector>_<codec>.json
    (the layout of shared/anchors/coco128), results.csv, map-<detector>.png and
    bd-rate.md/.json. See docs/DETECTORS.md for plugging in another detector.
    """
    # ---- check every option before any work
    images_path, ann_path, out_path = Path(images_dir), Path(annotations), Path(out_dir)
    if not images_path.is_dir():
        raise CliError(f"{show(images_path)}: no such directory (--images)")
    if not ann_path.is_file():
        raise CliError(f"{show(ann_path)}: no such file (--annotations)")
    if limit is not None and limit < 1:
        raise CliError(f"--limit must be at least 1, got {limit}")
    if jobs < 0:
        raise CliError(f"--jobs must be 0 (all cores) or more, got {jobs}")
    if out_path.exists() and not out_path.is_dir():
        raise CliError(f"{show(out_path)}: not a directory (--out)")
    if not label or "/" in label or os.sep in label or label.startswith("."):
        raise CliError(f"--label {label!r}: use a plain name (it names output files)")

    known = _known_codecs()
    if codecs is None:
        codec_list = ["uncompressed"] if decoded_dirs else ["uncompressed", "fusioncodec"]
    else:
        codec_list = [c.strip().lower() for c in codecs.split(",") if c.strip()]
        if not codec_list:
            raise CliError("--codecs: empty list")
    for name in codec_list:
        if name not in known:
            raise CliError(f"--codecs: unknown codec {name!r} (use {', '.join(known)})")
    codec_list = list(dict.fromkeys(codec_list))
    if label in codec_list or label == "uncompressed":
        raise CliError(f"--label {label!r} is also a codec name; choose another")
    fc_qualities = _parse_list(qualities, "--qualities", float)
    for q in fc_qualities:
        if not (math.isfinite(q) and q >= 1):
            raise CliError(f"--qualities: quality must be a finite number of at least 1, got {q}")
    cl_qualities = (
        _parse_list(classical_qualities, "--classical-qualities", int)
        if classical_qualities
        else None
    )
    if bpp_files and len(bpp_files) != len(decoded_dirs):
        raise CliError(
            f"--bpp-json given {len(bpp_files)} times for {len(decoded_dirs)} --decoded folders; "
            "give one per folder, in the same order"
        )
    for directory in decoded_dirs:
        if not Path(directory).is_dir():
            raise CliError(f"{show(directory)}: no such directory (--decoded)")
    for file in bpp_files:
        if not Path(file).is_file():
            raise CliError(f"{show(file)}: no such file (--bpp-json)")

    for spec in (anchor, *overlay):
        path = Path(spec)
        if path.is_file():
            _read_anchor(path)
        elif path.suffix.lower() == ".json" or (os.sep in spec and not path.is_dir()):
            raise CliError(f"{show(path)}: no such file (--anchor/--overlay)")

    from fusioncodec.eval.coco_map import load_coco
    from fusioncodec.eval.detectors import DetectorError, resolve

    specs = detector_specs or ("yolox", "fastestdet")
    try:
        detectors = [resolve(spec, threads=jobs) for spec in specs]
        for detector in detectors:
            detector.session()
    except DetectorError as exc:
        raise CliError(str(exc)) from None
    names = [d.name for d in detectors]
    if len(set(names)) != len(names):
        raise CliError(f"two detectors share a name ({', '.join(names)}); name them apart")

    try:
        coco = load_coco(ann_path)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{show(ann_path)}: cannot read: {error_reason(exc)}") from None
    stems: dict[str, int] = {}
    for info in coco.dataset["images"]:
        stems.setdefault(Path(str(info.get("file_name", ""))).stem, int(info["id"]))

    files = _image_files(images_path)
    if not files:
        raise CliError(f"{show(images_path)}: no images in this folder")
    matched = _match(files, stems)
    if not matched:
        raise CliError(
            f"{show(images_path)}: none of its {len(files)} images is listed in "
            f"{show(ann_path)} (matched by file-name stem)"
        )
    sources = sorted(
        (Source(i, p, _stem_key(p.name)) for i, p in matched.items()), key=lambda s: s.path.name
    )
    if limit is not None:
        sources = sources[:limit]

    classical = {}
    for name in codec_list:
        if name not in ("uncompressed", *LEARNED):
            classical[name] = _Classical(name)
            classical[name].check()

    decoded_sets = []
    for k, directory in enumerate(decoded_dirs):
        found = _match(_image_files(Path(directory)), stems)
        chosen = [s for s in sources if s.image_id in found]
        if not chosen:
            raise CliError(
                f"{show(directory)}: none of its images matches one of the {len(sources)} "
                "images scored (matched by stem)"
            )
        if len(chosen) < len(sources):
            click.echo(
                f"fcodec: warning: {show(directory)} has {len(chosen)} of the "
                f"{len(sources)} images; scoring those",
                err=True,
            )
        bpp_file = Path(bpp_files[k]) if bpp_files else Path(directory) / "bpp.json"
        override = _load_bpp(bpp_file, stems) if bpp_file.is_file() else None
        if isinstance(override, dict):
            lacking = [s for s in chosen if s.image_id not in override]
            if lacking:
                raise CliError(
                    f"{show(bpp_file)}: no bpp for {lacking[0].path.name} "
                    f"({len(lacking)} of the {len(chosen)} images lack one)"
                )
        decoded_sets.append((Path(directory), chosen, found, override))

    planned = ["results.csv", "bd-rate.md", "bd-rate.json"]
    curve_names = [c for c in codec_list if c != "uncompressed"] + ([label] if decoded_dirs else [])
    for det in names:
        planned += [f"{det}_uncompressed.json", f"map-{det}.png"]
        planned += [f"{det}_{c}.json" for c in curve_names]
    if not force:
        existing = [p for p in planned if (out_path / p).exists()]
        if existing:
            raise CliError(
                f"{show(out_path / existing[0])}: already exists (use --force to overwrite)"
            )
    # fatal errors (weights, qualities) before any work
    get_codec = codec_loader(weights, device, fc_qualities)  # loaded once, on first use
    get_baseline = baseline_loader(baseline_weights, device, fc_qualities)
    runners = {
        name: _learned_runner(name, get_codec, get_baseline)
        for name in LEARNED
        if name in codec_list
    }
    if runners and jobs:
        import torch

        torch.set_num_threads(jobs)
    try:
        out_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{show(out_path)}: cannot create directory: {error_reason(exc)}") from None

    show_bar = progress if progress is not None else sys.stderr.isatty()
    sweep = Sweep(detectors, coco, sources, show_bar)

    # ---- measure
    def originals(
        subset: Sequence[Source],
    ) -> Iterator[tuple[Source, Image.Image, int, Image.Image]]:
        for source in subset:
            image = _open(source.path)
            yield source, image, source.path.stat().st_size, image

    baseline = sweep.run_point("uncompressed", None, originals(sources), len(sources))
    _report(baseline, names)
    curves: dict[str, Curve] = {}

    for name, (model_name, roundtrip) in runners.items():
        curve = curves[name] = Curve(name, name, f"{DESCRIPTIONS[name]}, model {model_name}")
        for q in fc_qualities:

            def coded(
                q: float = q, name: str = name, roundtrip: Roundtrip = roundtrip
            ) -> Iterator[tuple[Source, Image.Image, int, Image.Image]]:
                for source in sources:
                    image = _open(source.path)
                    try:
                        n_bytes, decoded = roundtrip(image, q)
                    except (ValueError, RuntimeError, MemoryError) as exc:
                        raise CliError(
                            f"{show(source.path)}: {name} failed at quality {q:g}: "
                            f"{error_reason(exc)}"
                        ) from None
                    yield source, decoded.convert("RGB"), n_bytes, image

            point = sweep.run_point(name, q, coded(), len(sources))
            curve.points.append(point)
            _report(point, names)

    for name, runner in classical.items():
        curve = curves[name] = Curve(name, LABELS.get(name, name.upper()), runner.description)
        for q in cl_qualities or CLASSICAL_QUALITIES.get(name, (10, 30, 50, 70, 90)):

            def coded_classical(
                q: int = q, runner: _Classical = runner
            ) -> Iterator[tuple[Source, Image.Image, int, Image.Image]]:
                for source in sources:
                    image = _open(source.path)
                    try:
                        n_bytes, decoded = runner.roundtrip(image, q)
                    except (ValueError, OSError, RuntimeError) as exc:
                        raise CliError(
                            f"{show(source.path)}: {runner.name} failed at quality {q}: "
                            f"{error_reason(exc)}"
                        ) from None
                    yield source, decoded, n_bytes, image

            point = sweep.run_point(name, q, coded_classical(), len(sources))
            curve.points.append(point)
            _report(point, names)

    if decoded_sets:
        curve = curves[label] = Curve(label, label, "images decoded by another codec")
        for directory, chosen, found, override in decoded_sets:

            def third_party(
                chosen: Sequence[Source] = chosen, found: dict[int, Path] = found
            ) -> Iterator[tuple[Source, Image.Image, None, Image.Image]]:
                for source in chosen:
                    yield source, _open(found[source.image_id]), None, _open(source.path)

            point = sweep.run_point(label, directory.name, third_party(), len(chosen), override)
            if override is None:
                click.echo(
                    f"fcodec: warning: no bpp for {show(directory)} (give --bpp-json); "
                    "its point is left off the plot and BD-rates",
                    err=True,
                )
            curve.points.append(point)
            _report(point, names)
        curve.points.sort(key=lambda p: (p.bpp is None, p.bpp or 0.0))

    # ---- write
    rows: list[dict[str, Any]] = []
    bd_rows: list[dict[str, Any]] = []
    written: list[str] = []
    for detector in detectors:
        det = detector.name
        base_json = _uncompressed_json(detector, baseline, images_path, ann_path)
        _write_json(out_path / f"{det}_uncompressed.json", base_json)
        written.append(f"{det}_uncompressed.json")
        curve_data: dict[str, dict[str, Any]] = {}
        for codec_name, curve in curves.items():
            data = _curve_json(detector, curve, baseline, images_path, ann_path)
            curve_data[codec_name] = data
            _write_json(out_path / f"{det}_{codec_name}.json", data)
            written.append(f"{det}_{codec_name}.json")
        for point in [baseline] + [p for c in curves.values() for p in c.points]:
            score = point.scores[det]
            rows.append(
                {
                    "detector": det,
                    "codec": point.codec,
                    "quality": "" if point.quality is None else point.quality,
                    "bpp": "" if point.bpp is None else f"{point.bpp:.6f}",
                    "map": f"{score.map:.6f}",
                    "map50": f"{score.map50:.6f}",
                    "psnr_rgb": "" if point.psnr is None else f"{point.psnr:.4f}",
                    "n_images": score.n_images,
                    "n_dets": score.n_dets,
                    "seconds": f"{point.seconds[det]:.2f}",
                }
            )
        overlays: list[tuple[str, dict[str, Any]]] = []
        for spec in overlay:
            try:
                overlays += _external_curves(spec, det)
            except (OSError, ValueError) as exc:
                raise CliError(f"--overlay {spec}: {error_reason(exc)}") from None
        found = _anchor_curve(anchor, det, curve_data)
        anchor_label = found[0] if found else None
        if _plot(out_path / f"map-{det}.png", det, curve_data, base_json, overlays, anchor_label):
            written.append(f"map-{det}.png")
        elif detector is detectors[0]:
            click.echo("fcodec: warning: matplotlib is not installed; no plots", err=True)
        if curve_data:
            bd_rows += _bd_rows(det, curve_data, anchor, found, len(sources))

    buffer = io.StringIO()
    fields = ["detector", "codec", "quality", "bpp", "map", "map50", "psnr_rgb"]
    writer = csv.DictWriter(buffer, fieldnames=[*fields, "n_images", "n_dets", "seconds"])
    writer.writeheader()
    writer.writerows(rows)
    _write(out_path / "results.csv", buffer.getvalue().encode())
    _write_json(out_path / "bd-rate.json", bd_rows)
    _write(out_path / "bd-rate.md", _bd_markdown(bd_rows).encode())
    written += ["results.csv", "bd-rate.json", "bd-rate.md"]
    if bd_rows:
        click.echo(_bd_markdown(bd_rows).split("\n", 4)[4].rstrip())
    else:
        click.echo("no BD-rate: no coded curve other than the anchor")
    click.echo(f"wrote {len(written)} files to {show(out_path)}", err=True)


def _report(point: Point, detectors: Sequence[str]) -> None:
    """One stdout line per point: codec, quality, bpp and each detector's mAP / mAP@.5."""
    if point.quality is None:
        quality = ""
    elif isinstance(point.quality, int | float):
        quality = f" q={point.quality:g}"
    else:
        quality = f" {point.quality}"
    bpp = "   n/a" if point.bpp is None else f"{point.bpp:6.3f}"
    scores = "  ".join(
        f"{d} {point.scores[d].map:.4f}/{point.scores[d].map50:.4f}" for d in detectors
    )
    click.echo(f"{point.codec}{quality}: {bpp} bpp, {point.n_images} images, mAP/mAP50 {scores}")
