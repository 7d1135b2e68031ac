"""The benchmark report as a readable table, or as JSON."""

from __future__ import annotations

import json
from typing import Any

from fusioncodec.eval.bench.options import WARM_PHASES


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _fmt(value: Any, spec: str, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{unit}"


def _row(
    label: str,
    r: dict[str, Any],
    cuda: bool,
    has_cai: bool,
    ref: dict[str, Any] | None = None,
    ratio: float | None = None,
) -> str:
    text = (
        f"{label:<27}{_fmt(r.get('seconds'), '.4f'):>10}{_fmt(r.get('mp_per_s'), '.4g'):>10}"
        f"{_fmt(r.get('peak_rss_mb'), '.0f', ' MB'):>11}"
    )
    if cuda:
        text += f"{_fmt(r.get('cuda_max_allocated_mb'), '.0f', ' MB'):>11}"
    if has_cai and ref is not None:
        text += f"{_fmt(ref.get('seconds'), '.4f', ' s'):>14}{_fmt(ratio, '.2f', 'x'):>9}"
    return text


def format_report(report: dict[str, Any]) -> str:
    """The report as a readable table."""
    img = report["image"]
    lines = [
        f"fcodec bench: {img['source']} {img['width']}x{img['height']} "
        f"({img['megapixels']:.3f} MP, padded {img['padded_width']}x{img['padded_height']}), "
        f"quality {report['quality']:g}, weights {report['weights']['name']}",
        f"torch {report['torch']}, {_plural(report['cpu']['torch_threads'], 'thread')} on "
        f"{report['cpu']['count']} CPUs ({report['cpu']['model']}), "
        f"load average {report['cpu']['load_average']}; warm = median of {report['repeat']}",
    ]
    params = report["weights"].get("parameters")
    if params:
        lines.append(
            f"parameters: machine {params['machine_codec']:,}, additional "
            f"{params['additional_codec']:,}, human decoder {params['human_decoder']:,}, "
            f"total {params['total']:,}"
        )
    for name, dev in report["devices"].items():
        cuda = name == "cuda"
        title = f"{name} ({dev['name']})" if cuda else name
        lines += ["", f"== {title} =="]
        cai = dev.get("compressai", {})
        has_cai = "skipped" not in cai
        head = f"{'phase':<27}{'seconds':>10}{'MP/s':>10}{'peak RSS':>11}"
        if cuda:
            head += f"{'CUDA max':>11}"
        if has_cai:
            head += f"{'mbt2018-mean':>14}{'ratio':>9}"
        lines.append(head)

        lines.append(_row("model load", dev["load"], cuda, has_cai))
        for phase in WARM_PHASES:
            ref = cai.get("encode" if phase.startswith("encode") else "decode") if has_cai else None
            ratio = cai.get("ratio", {}).get(phase) if has_cai else None
            label = f"warm {phase.replace('_', ' ')}"
            lines.append(_row(label, dev["warm"][phase], cuda, has_cai, ref, ratio))
        for phase, r in (dev.get("cold") or {}).items():
            lines.append(_row(f"cold {phase.replace('_', ' ')} (CLI)", r, cuda, has_cai))

        rate = dev["rate"]
        lines += ["", f"{'rate':<10}{'coded bits':>12}{'estimated':>14}{'overhead':>10}{'bpp':>9}"]
        for kind in ("machine", "human"):
            r = rate[kind]
            lines.append(
                f"{kind:<10}{r['coded_bits']:>12}{_fmt(r['estimated_bits'], '.0f'):>14}"
                f"{_fmt(r['overhead_percent'], '+.2f', '%'):>10}{_fmt(r['bpp'], '.4f'):>9}"
            )
        lines.append(
            f"header {rate['header_bytes']} bytes, file {rate['file_bytes']} bytes "
            f"({rate['bpp']:.4f} bpp)"
        )
        if has_cai:
            lines.append(
                f"compressai {cai['model']} (N={cai['N']}, M={cai['M']}, {cai['weights']}): "
                f"{cai['coded_bytes']} bytes ({cai['bpp']:.4f} bpp); ratio = fusioncodec "
                "seconds / compressai seconds (above 1: fusioncodec slower)"
            )
        else:
            lines.append(f"compressai skipped: {cai.get('skipped')}")
        train = dev.get("train")
        if train:
            lines += _training_lines(train)
    cold_cli = report.get("cold_cli")
    if cold_cli:
        lines += [
            "",
            f"cold CLI ({cold_cli['command']}): --help {cold_cli['help']['seconds']:.3f} s, "
            f"info {cold_cli['info']['seconds']:.3f} s; python -c 'import fusioncodec.codec' "
            f"{cold_cli['import_codec']['seconds']:.3f} s",
        ]
    lines.append(f"memory: warm {report['memory_method']['warm']}; cold per child process")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _training_lines(train: dict[str, Any]) -> list[str]:
    """Crops/s of every stage in each precision, and bf16's speed-up."""
    lines = [
        f"training (batch {train['batch']} x {train['crop']}^2, {train['threads']} threads, "
        f"native bf16: {'yes' if train['native_bf16'] else 'no'}, "
        f"default {train['default_precision']}), crops/s:"
    ]
    for precision, stages in train["precisions"].items():
        speeds = ", ".join(f"{k} {v['crops_per_s']:.2f}" for k, v in stages.items())
        lines.append(f"  {precision}: {speeds}")
    if "bf16_speedup" in train:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in train["bf16_speedup"].items())
        lines.append(f"  bf16 speed-up (fp32 s / bf16 s): {ratios}")
    return lines


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, allow_nan=False)
