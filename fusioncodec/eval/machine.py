"""``fcodec eval machine``'s sweep: detectors on coded pictures, scored against COCO boxes.

Every annotated image (matched to the annotation file by file-name stem) is coded and
decoded by each codec at each quality (:mod:`fusioncodec.eval.runners`); each detector runs
on the decoded pictures and pycocotools scores its boxes (bbox mAP@[.5:.95] and mAP@.5).
The uncompressed pictures (bpp: the source file size) are always scored, and folders of
pictures decoded by any other codec can be scored the same way. The results files, BD
tables and plots are :mod:`fusioncodec.eval.map_results`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusioncodec.eval import EvalError, runners
from fusioncodec.messages import error_reason
from fusioncodec.messages import shown_path as show
from fusioncodec.metrics import bpp

if TYPE_CHECKING:
    from PIL import Image

    from fusioncodec.eval.detectors import Detector

    # one scored picture: (source, decoded picture, bytes for the rate or None, original)
    Picture = tuple["Source", Image.Image, int | None, Image.Image | None]

Log = Callable[..., None]  # click.echo: a line on stdout, or on stderr with err=True
CODECS = ("uncompressed", *runners.CODECS)
DEFAULT_CODECS = ("uncompressed", "fusioncodec-machine")
# Default quality sweeps: those of the shared coco128 anchors, so the curves line up.
CLASSICAL_QUALITIES = {
    "jpeg": (1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 75, 90),
    "webp": (0, 2, 5, 10, 15, 20, 30, 50, 75, 90),
    "avif": (0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 75),
    "hevc": (0, 3, 6, 10, 15, 20, 25, 30, 40, 50),
}
RENAMED = {"fusioncodec-human": "fusioncodec"}  # names before fusioncodec 0.4


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Source:
    """An annotated image: COCO id, file, and the stem it was matched by."""

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
class MapCurve:
    """The points of one codec (or of the --decoded folders) against one set of images."""

    codec: str
    label: str
    description: str
    points: list[Point] = field(default_factory=list)


def check_codecs(text: str | None, decoded: bool) -> list[str]:
    """``--codecs`` as a list of known names (default: uncompressed and the machine layer,
    or uncompressed alone when folders of decoded pictures are scored)."""
    if text is None:
        return ["uncompressed"] if decoded else list(DEFAULT_CODECS)
    names = [c.strip().lower() for c in text.split(",") if c.strip()]
    if not names:
        raise EvalError("--codecs: empty list")
    for name in names:
        if name in RENAMED:
            raise EvalError(f"--codecs: {name!r} is now called {RENAMED[name]!r}")
        if name not in CODECS:
            raise EvalError(f"--codecs: unknown codec {name!r} (use {', '.join(CODECS)})")
    return list(dict.fromkeys(names))


@dataclass
class Run:
    """What one ``eval machine`` run measures, gathered while the options are checked."""

    images: Path
    annotations: Path
    out: Path
    codecs: list[str]
    fc_qualities: list[float]
    cl_qualities: list[int] | None
    label: str
    detectors: list[Any] = field(default_factory=list)
    coco: Any = None
    stems: dict[str, int] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    decoded: list[tuple[Path, list[Source], dict[int, Path], Any]] = field(default_factory=list)
    roundtrips: dict[str, tuple[str, runners.Runner]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]


# --------------------------------------------------------------------------- images


def stem_key(name: str) -> str:
    """``000000000009.machine.png`` -> ``000000000009`` (the part before the first dot)."""
    return Path(name).name.split(".")[0]


def image_files(directory: Path) -> list[Path]:
    from fusioncodec.files import image_files as listed

    try:
        return listed(directory)
    except OSError as exc:
        raise EvalError(f"{show(directory)}: cannot list: {error_reason(exc)}") from None


def match(files: Sequence[Path], stems: dict[str, int]) -> dict[int, Path]:
    """Annotation image id -> file, by exact stem, else by the name up to its first dot."""
    found: dict[int, Path] = {}
    for path in files:
        key = path.stem if path.stem in stems else stem_key(path.name)
        if key in stems and stems[key] not in found:
            found[stems[key]] = path
    return found


def annotated_stems(coco: Any) -> dict[str, int]:
    """File-name stem -> image id of every image in the annotations."""
    stems: dict[str, int] = {}
    for info in coco.dataset["images"]:
        stems.setdefault(Path(str(info.get("file_name", ""))).stem, int(info["id"]))
    return stems


def sources(
    images: Path, annotations: Path, stems: dict[str, int], limit: int | None
) -> list[Source]:
    """The annotated images of a folder, sorted by name (the first ``limit``)."""
    files = image_files(images)
    if not files:
        raise EvalError(f"{show(images)}: no images in this folder")
    matched = match(files, stems)
    if not matched:
        raise EvalError(
            f"{show(images)}: none of its {len(files)} images is listed in "
            f"{show(annotations)} (matched by file-name stem)"
        )
    found = sorted(
        (Source(i, p, stem_key(p.name)) for i, p in matched.items()), key=lambda s: s.path.name
    )
    return found if limit is None else found[:limit]


def open_rgb(path: Path) -> Image.Image:
    """An image file as RGB (HEIF too when pillow-heif is here); EvalError if unreadable."""
    from fusioncodec.image import enable_optional_formats, read_rgb

    enable_optional_formats()
    try:
        return read_rgb(path)
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many exception types
        raise EvalError(f"{show(path)}: cannot read image ({error_reason(exc)})") from None


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a one-line EvalError if it cannot be read or is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvalError(f"{show(path)}: cannot read: {error_reason(exc)}") from None
    except (ValueError, UnicodeDecodeError):
        raise EvalError(f"{show(path)}: not valid JSON") from None


def load_bpp(path: Path, stems: dict[str, int]) -> float | dict[int, float]:
    """A ``--bpp-json`` file: one number, {"bpp": x}, or {image name or stem: bpp}."""
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("bpp"), int | float):
        data = data["bpp"]
    if isinstance(data, dict):
        data = data.get("per_image", data.get("images", data))

    def rate(value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise EvalError(f"{show(path)}: bpp must be a positive number, got {value}")
        return float(value)

    if isinstance(data, int | float) and not isinstance(data, bool):
        return rate(data)
    if isinstance(data, dict) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()
    ):
        per_image: dict[int, float] = {}
        for name, value in data.items():
            key = Path(name).stem if Path(name).stem in stems else stem_key(name)
            if key in stems:
                per_image[stems[key]] = rate(value)
        return per_image
    raise EvalError(f'{show(path)}: expected a number, {{"bpp": x}} or {{image name: bpp, ...}}')


# --------------------------------------------------------------------------- pictures


def originals(subset: Sequence[Source]) -> Iterator[Picture]:
    """The source files as given (bpp: the file size)."""
    for source in subset:
        image = open_rgb(source.path)
        yield source, image, source.path.stat().st_size, image


def coded(
    subset: Sequence[Source], name: str, roundtrip: runners.Runner, quality: float
) -> Iterator[Picture]:
    """Each picture coded for real by ``roundtrip`` at ``quality``."""
    from PIL import Image

    for source in subset:
        image = open_rgb(source.path)
        try:
            result = roundtrip(image, quality)
        except (ValueError, OSError, RuntimeError, MemoryError) as exc:
            raise EvalError(
                f"{show(source.path)}: {name} failed at quality {quality:g}: {error_reason(exc)}"
            ) from None
        yield source, Image.fromarray(result.decoded, "RGB"), result.size, image


def decoded_elsewhere(subset: Sequence[Source], found: dict[int, Path]) -> Iterator[Picture]:
    """Pictures another codec decoded (no bytes known here)."""
    for source in subset:
        yield source, open_rgb(found[source.image_id]), None, open_rgb(source.path)


# --------------------------------------------------------------------------- the sweep


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


@dataclass
class Sweep:
    """The detectors and the annotated images every point is scored on."""

    detectors: list[Detector]
    coco: Any
    sources: list[Source]
    progress: bool

    def run_point(
        self,
        codec: str,
        quality: Any,
        pictures: Iterator[Picture],
        total: int,
        bpp_override: float | dict[int, float] | None = None,
    ) -> Point:
        """Detect on every decoded picture and score each detector's boxes."""
        from tqdm import tqdm

        from fusioncodec.eval.coco_map import CocoScorer, psnr

        scorers = {d.name: CocoScorer(self.coco) for d in self.detectors}
        seconds = {d.name: 0.0 for d in self.detectors}
        bpps: list[float] = []
        psnrs: list[float] = []
        ids: list[int] = []
        desc = f"{codec} {quality}" if quality is not None else codec
        bar = tqdm(
            pictures,
            total=total,
            desc=desc,
            file=sys.stderr,
            disable=not self.progress,
            leave=False,
        )
        for source, decoded, n_bytes, original in bar:
            ids.append(source.image_id)
            if n_bytes is not None and original is not None:
                bpps.append(bpp(n_bytes, original.width * original.height))
            value = psnr(original, decoded) if original is not None else None
            if value is not None:
                psnrs.append(value)
            for detector in self.detectors:
                start = time.perf_counter()
                dets = detector.detect(decoded)
                seconds[detector.name] += time.perf_counter() - start
                scorers[detector.name].add(source.image_id, dets, decoded.size)
        bar.close()
        mean_psnr = _mean(psnrs) if psnrs else None
        if mean_psnr is not None and not math.isfinite(mean_psnr):
            mean_psnr = None
        point = Point(codec, quality, self._bpp(ids, bpps, bpp_override), mean_psnr, len(ids))
        for name, scorer in scorers.items():
            point.scores[name] = scorer.score()
            point.seconds[name] = seconds[name]
        return point

    def _bpp(
        self, ids: list[int], bpps: list[float], override: float | dict[int, float] | None
    ) -> float | None:
        if isinstance(override, float):
            return override
        if isinstance(override, dict):
            missing = [i for i in ids if i not in override]
            if missing:
                name = self.coco.imgs[missing[0]]["file_name"]
                raise EvalError(
                    f"--bpp-json has no bpp for {name} ({len(missing)} images lack one)"
                )
            return _mean([override[i] for i in ids])
        return _mean(bpps) if bpps else None


def report_line(point: Point, detectors: Sequence[str]) -> str:
    """codec, quality, bpp and each detector's mAP / mAP@.5 of one point."""
    if point.quality is None:
        quality = ""
    elif isinstance(point.quality, int | float):
        quality = f" q={point.quality:g}"
    else:
        quality = f" {point.quality}"
    rate = "   n/a" if point.bpp is None else f"{point.bpp:6.3f}"
    scores = "  ".join(
        f"{d} {point.scores[d].map:.4f}/{point.scores[d].map50:.4f}" for d in detectors
    )
    return f"{point.codec}{quality}: {rate} bpp, {point.n_images} images, mAP/mAP50 {scores}"


def classical_qualities(name: str, given: Sequence[int] | None) -> Sequence[int]:
    """The qualities of a classical codec: those given, else the shared anchors' sweep."""
    if given:
        return given
    with suppress(KeyError):
        return CLASSICAL_QUALITIES[name]
    from fusioncodec.eval import classical

    return classical.get(name).qualities


def measure(run: Run, sweep: Sweep, log: Log) -> dict[str, MapCurve]:
    """Every codec's points, then the --decoded folders' curve."""
    curves: dict[str, MapCurve] = {}
    for name, (description, roundtrip) in run.roundtrips.items():
        curve = curves[name] = MapCurve(name, runners.label(name), description)
        learned = name in runners.LEARNED
        qualities = run.fc_qualities if learned else classical_qualities(name, run.cl_qualities)
        for q in qualities:
            pictures = coded(run.sources, name, roundtrip, q if learned else int(q))
            point = sweep.run_point(name, q, pictures, len(run.sources))
            curve.points.append(point)
            log(report_line(point, run.names))
    if run.decoded:
        curve = curves[run.label] = MapCurve(
            run.label, run.label, "images decoded by another codec"
        )
        for directory, chosen, found, override in run.decoded:
            pictures = decoded_elsewhere(chosen, found)
            point = sweep.run_point(run.label, directory.name, pictures, len(chosen), override)
            if override is None:
                log(
                    f"fcodec: warning: no bpp for {show(directory)} (give --bpp-json); "
                    "its point is left off the plot and BD-rates",
                    err=True,
                )
            curve.points.append(point)
            log(report_line(point, run.names))
        curve.points.sort(key=lambda p: (p.bpp is None, p.bpp or 0.0))
    return curves
