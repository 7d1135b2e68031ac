"""``fcodec eval human``'s plan and report: which codecs run at which qualities with which
weights, the anchors, and the files the sweep's records become (results JSON per codec,
results.csv, BD tables, RD plots). The sweep itself is :mod:`fusioncodec.eval.rd`; the
command line is :mod:`fusioncodec.cli.eval_human`. Bad arguments raise :class:`EvalError`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from fusioncodec.errors import ArgumentError
from fusioncodec.eval import EvalError, classical, curves, runners
from fusioncodec.files import shared_dir
from fusioncodec.messages import error_reason
from fusioncodec.messages import shown_path as show
from fusioncodec.nets.config import checked_quality

DEFAULT_CODECS = ("fusioncodec", "baseline", "jpeg", "webp", "avif", "hevc")
FIXED_OUTPUTS = ("results.csv", "rd-psnr.png", "rd-msssim.png", "bd-rate.md", "bd-rate.json")


def _parse_list(text: str, what: str) -> list[float]:
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise EvalError(f"{what}: {part!r} is not a number") from None
        if not math.isfinite(value):
            raise EvalError(f"{what}: qualities must be finite numbers, got {part!r}")
        if value not in values:
            values.append(value)
    if not values:
        raise EvalError(f"{what}: no qualities given")
    return values


def parse_codecs(text: str | None) -> tuple[list[str], bool]:
    """Requested codecs in order and whether they were given explicitly."""
    if text is None:
        return list(DEFAULT_CODECS) + ["vvc"], False
    names: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in runners.CODECS:
            raise EvalError(f"unknown codec {name!r} (choose from {', '.join(runners.CODECS)})")
        if name not in names:
            names.append(name)
    if not names:
        raise EvalError("--codecs: no codec given")
    return names, True


def qualities(
    codecs: list[str], fc_qualities: str | None, specs: tuple[str, ...]
) -> dict[str, list[float]]:
    chosen: dict[str, list[float]] = {}
    for codec in codecs:
        if codec in runners.LEARNED:
            chosen[codec] = list(runners.LEARNED_QUALITIES)
        else:
            chosen[codec] = list(classical.get(codec).qualities)
    if fc_qualities is not None:
        values = _parse_list(fc_qualities, "--fc-qualities")
        for codec in runners.LEARNED:
            chosen[codec] = values
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().lower()
        if not sep:
            raise EvalError(f"--qualities {spec!r}: use CODEC=LIST, e.g. jpeg=10,50,90")
        if name not in runners.CODECS:
            raise EvalError(
                f"--qualities {spec!r}: unknown codec {name!r} "
                f"(choose from {', '.join(runners.CODECS)})"
            )
        chosen[name] = _parse_list(values, f"--qualities {name}")
    for codec, values in chosen.items():
        if codec in runners.LEARNED:
            bad = [q for q in values if q < 1]
            if bad:
                raise EvalError(f"{codec} qualities must be at least 1, got {bad[0]:g}")
            continue
        info = classical.get(codec)
        lo, hi = info.quality_range
        for q in values:
            if q != int(q) or not lo <= q <= hi:
                raise EvalError(
                    f"{codec} {info.quality_name} must be a whole number from {lo} to {hi}, "
                    f"got {q:g}"
                )
        chosen[codec] = [int(q) for q in values]
    return {codec: chosen[codec] for codec in codecs}


def _model_card(path: Path, kind: str, explicit: bool, what: str) -> dict[str, Any] | None:
    """The card of a weight file, None (skip with a note) if a default file is absent."""
    from fusioncodec.errors import WeightsError
    from fusioncodec.weight_file import read_card

    if not path.exists():
        if explicit:
            raise EvalError(f"{what}: weights not found: {show(path)}")
        return None
    try:
        card = read_card(path)
    except WeightsError as exc:
        raise EvalError(str(exc)) from None
    if card.get("kind") != kind:
        raise EvalError(f"{show(path)} is a {card.get('kind')} model, not a {kind} one ({what})")
    return card


def _levels(card: dict[str, Any]) -> int:
    from fusioncodec.nets import CodecConfig

    try:
        return CodecConfig.from_dict(card["config"]).levels
    except (KeyError, TypeError, ValueError) as exc:
        raise EvalError(
            f"unreadable model config in {card.get('name')}: {error_reason(exc)}"
        ) from None


def check_images(images: list[tuple[str, Path]], scalable: bool) -> int:
    """Open every image's header (cheap); the number of images too small for MS-SSIM."""
    from PIL import Image, UnidentifiedImageError

    from fusioncodec.container import size_problem
    from fusioncodec.metrics import MSSSIM_MIN_SIDE

    small = 0
    for _, path in images:
        try:
            with Image.open(path) as im:
                width, height = im.size
        except UnidentifiedImageError:
            raise EvalError(f"{show(path)}: not an image Pillow can read") from None
        except (OSError, ValueError) as exc:
            raise EvalError(f"{show(path)}: cannot read image ({error_reason(exc)})") from None
        if min(width, height) < MSSSIM_MIN_SIDE:
            small += 1
        if scalable and size_problem(width, height):
            raise EvalError(f"{show(path)}: {width}x{height} is too large for a .fcb file")
    return small


def _curve_file(value: str, shared: Path | None) -> Path | None:
    path = Path(value)
    if path.is_file():
        return path
    if shared is not None and os.sep not in value and "/" not in value:
        base = shared / "anchors" / "kodak"
        for name in (value, f"{value}.json"):
            if (base / name).is_file():
                return base / name
    return None


def _load_external(path: Path, taken: set[str]) -> curves.Curve:
    try:
        curve = curves.load_curve(path)
    except (OSError, ValueError) as exc:
        why = error_reason(exc) if isinstance(exc, ValueError) else f"{path}: {error_reason(exc)}"
        raise EvalError(why) from None
    key, n = curve.key, 2
    while key in taken:
        key, n = f"{curve.key}-{n}", n + 1
    curve.key = key
    if curve.label.lower() != key.lower():
        curve.label = f"{curve.label} [{key}]"
    taken.add(key)
    return curve


class Plan:
    """The codecs that run, their qualities, descriptions and the notes for the user."""

    def __init__(self, spec: runners.ModelSpec) -> None:
        self.spec = spec
        self.run: list[str] = []
        self.skipped: set[str] = set()
        self.notes: list[str] = []
        self.qualities: dict[str, list[float]] = {}
        self.descriptions: dict[str, str] = {}

    def choose(
        self, requested: list[str], explicit: bool, qualities: dict[str, list[float]]
    ) -> None:
        """Keep the codecs that can run here; a missing one is skipped with a note."""
        self.qualities = qualities
        for codec in requested:
            why = runners.missing(codec)
            if why is None:
                self.run.append(codec)
                if codec not in runners.LEARNED:
                    self.descriptions[codec] = runners.description(codec)
                continue
            self.skipped.add(codec)
            if explicit or codec != "vvc":
                self.notes.append(f"{codec} skipped: {why}")
        if "avif" in self.run:
            self.descriptions["avif"] += f" (backend: {classical.avif_backend()})"

    def _skip(self, codec: str, why: str) -> None:
        self.run.remove(codec)
        self.skipped.add(codec)
        self.notes.append(f"{codec} skipped: {why}")

    def learned(self, weights: str | None, baseline_weights: str | None) -> None:
        """Read the learned codecs' cards: check qualities, skip a codec whose default
        weights are absent; CliError when no codec is left."""
        from fusioncodec.weight_file import default_weights

        spec_kw: dict[str, Any] = {}
        scalable = [c for c in runners.SCALABLE if c in self.run]
        if scalable:
            path = Path(weights) if weights else default_weights("scalable")
            card = _model_card(path, "scalable", weights is not None, "fusioncodec")
            for codec in scalable if card is None else ():
                self._skip(codec, f"no weights at {show(path)} (pass --weights)")
            if card is not None:
                checks = [(c, q) for c in scalable for q in self.qualities[c]]
                if self.spec.machine_quality is not None:
                    checks.append(("--machine-quality", self.spec.machine_quality))
                _check_levels(card, checks)
                spec_kw["weights"] = str(path)
                mq = self.spec.machine_quality
                mq_text = "= human quality" if mq is None else f"{mq:g}"
                for codec in scalable:
                    self.descriptions[codec] = (
                        f"{runners.description(codec)}, weights {card['name']}"
                    )
                self.descriptions.setdefault("fusioncodec", "")
                self.descriptions["fusioncodec"] += f"; machine quality {mq_text}"
        if "baseline" in self.run:
            path = Path(baseline_weights) if baseline_weights else default_weights("baseline")
            card = _model_card(path, "baseline", baseline_weights is not None, "baseline")
            if card is None:
                self._skip("baseline", f"no weights at {show(path)} (pass --baseline-weights)")
            else:
                _check_levels(card, [("baseline", q) for q in self.qualities["baseline"]])
                spec_kw["baseline"] = str(path)
                self.descriptions["baseline"] = (
                    f"{runners.description('baseline')}; weights {card['name']}"
                )
        self.spec = dataclasses.replace(self.spec, **spec_kw)
        if not self.run:
            raise EvalError(f"no codec left to run: {'; '.join(self.notes)}")

    def anchors(
        self, folder: Path, anchor_args: tuple[str, ...], overlay_args: tuple[str, ...]
    ) -> tuple[list[str], dict[str, curves.Curve]]:
        """The anchors' keys and the external curves (read now: fail before the sweep)."""
        shared = shared_dir() if shared_dir().is_dir() else None
        taken = set(self.run)
        anchor_keys: list[str] = []
        externals: dict[str, curves.Curve] = {}
        args = list(anchor_args)
        if not args:
            if "baseline" in self.run:
                args.append("baseline")
            if folder.resolve().name.lower() == "kodak" and _curve_file("vtm.json", shared):
                args.append("vtm.json")
            if not args:
                args.append(self.run[0])
        for value in args:
            name = value.strip().lower()
            if name in self.run:
                if name not in anchor_keys:
                    anchor_keys.append(name)
                continue
            if name in self.skipped:
                self.notes.append(f"anchor {name} dropped: the codec was skipped")
                continue
            path = _curve_file(value, shared)
            if path is None:
                raise EvalError(
                    f"--anchor {value}: neither a codec of this run ({', '.join(self.run)}) "
                    "nor a results JSON file"
                )
            curve = _load_external(path, taken)
            externals[curve.key] = curve
            anchor_keys.append(curve.key)
        for value in overlay_args:
            path = _curve_file(value, shared)
            if path is None:
                raise EvalError(f"--overlay {value}: no such results JSON file")
            curve = _load_external(path, taken)
            externals[curve.key] = curve
        return anchor_keys, externals


def _check_levels(card: dict[str, Any], checks: list[tuple[str, float]]) -> None:
    levels = _levels(card)
    for what, q in checks:
        try:
            checked_quality(q, levels, f"{what} quality")
        except ArgumentError as exc:
            raise EvalError(str(exc)) from None


def results(
    folder: Path,
    keys: list[str],
    plan: Plan,
    records: list[dict[str, Any]],
    anchor_keys: list[str],
    externals: dict[str, curves.Curve],
) -> tuple[dict[str, bytes], list[curves.Curve], str]:
    """Every output file's bytes, this run's curves and the BD tables in Markdown."""
    from fusioncodec.eval.plots import rd_plot

    files: dict[str, bytes] = {}
    own: list[curves.Curve] = []
    mq = plan.spec.machine_quality
    for codec in plan.run:
        label = runners.label(codec)
        if codec == "fusioncodec" and mq is not None:
            label = f"{label[:-1]}, machine q {mq:g})"
        mine = [r for r in records if r["codec"] == codec]
        data = curves.results_json(
            codec, label, plan.descriptions[codec], plan.qualities[codec], mine, keys, str(folder)
        )
        files[f"{codec}.json"] = curves.dumps(data).encode()
        own.append(curves.Curve.from_results(codec, data))
    order = {codec: i for i, codec in enumerate(plan.run)}
    records.sort(key=lambda r: (order[r["codec"]], keys.index(r["image"])))
    files["results.csv"] = curves.results_csv(records).encode()

    all_curves = own + list(externals.values())
    by_key = {c.key: c for c in all_curves}
    anchors = [by_key[k] for k in anchor_keys]
    set_name = folder.resolve().name or str(folder)
    title = f"{set_name} ({len(keys)} image{'s' if len(keys) != 1 else ''})"
    rows = curves.bd_table(all_curves, anchors)
    markdown = curves.bd_markdown(rows, all_curves, anchors, f"BD-rates: {title}")
    files["bd-rate.md"] = markdown.encode()
    report = {
        "images": str(folder),
        "n_images": len(keys),
        "anchors": anchor_keys,
        "curves": [
            {"key": c.key, "name": c.label, "source": c.source or f"{c.key}.json"}
            for c in all_curves
        ],
        "rows": rows,
    }
    files["bd-rate.json"] = curves.dumps(report).encode()
    files["rd-psnr.png"] = rd_plot(all_curves, "psnr", title)
    files["rd-msssim.png"] = rd_plot(all_curves, "msssim", title)
    return files, own, markdown


def summary(curves: list[curves.Curve]) -> str:
    lines = [f"{'codec':<22} {'points':>6}  {'bpp':>15}  {'PSNR-RGB (dB)':>15}"]
    for c in curves:
        xs, ys = c.points("psnr")
        if xs:
            lines.append(
                f"{c.key:<22} {len(xs):>6}  {min(xs):>6.3f} - {max(xs):<6.3f}  "
                f"{min(ys):>6.2f} - {max(ys):<6.2f}"
            )
        else:
            lines.append(f"{c.key:<22} {0:>6}")
    return "\n".join(lines) + "\n"
