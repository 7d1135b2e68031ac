"""The onnx runtime against the torch runtime: equivalence on Kodak and speed, cold and warm.

    python scripts/reproduce/runtime_compare.py [--kodak DIR] [--qualities 1 3 5 8]
        [--repeat 5] [--out results/runtime/compare.json]

**Equivalence** (every Kodak picture at each quality, both layers): each runtime encodes;
each file decodes in both runtimes. Recorded per file: whether the two encoders wrote the
same bytes, whether the decoded latents (machine and fused human) are the same bytes in both
runtimes, the largest grey-level difference between the runtimes' pictures, and bpp and
PSNR-RGB of the human layer per runtime; then the BD-rate of the onnx runtime's curve
against the torch runtime's (mean over pictures).

**Speed** (the first Kodak picture, 768 x 512, quality 4): cold, a fresh process per run
from the shell (``fcodec encode``, ``fcodec decode --layer machine|human`` and
``python -c 'import fusioncodec'``), ``--repeat`` runs, median wall time and peak RSS;
warm, in one process with the model loaded, the median of ``--repeat`` calls per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fusioncodec.codec import Codec  # noqa: E402
from fusioncodec.files import shared_dir  # noqa: E402
from fusioncodec.image import read_rgb  # noqa: E402
from fusioncodec.metrics import bd_rate, bpp, psnr_rgb  # noqa: E402
from fusioncodec.runtime import OnnxCodec  # noqa: E402

FCODEC = [str(Path(sys.executable).with_name("fcodec"))]
# Wall time and peak RSS of one child process (argv[1:]), from a small launcher.
LAUNCHER = r"""
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"s": time.perf_counter() - start, "rss_mb": usage.ru_maxrss / 1024,
                  "exit": os.waitstatus_to_exitcode(status)}))
"""


def cold(argv: list[str], repeat: int, cwd: Path) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *argv], cwd=cwd, capture_output=True, text=True
        )
        run = json.loads(out.stdout)
        if run["exit"] != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {out.stderr}")
        runs.append(run)
    return {
        "seconds": round(statistics.median(r["s"] for r in runs), 3),
        "peak_rss_mb": round(max(r["rss_mb"] for r in runs)),
        "runs": [round(r["s"], 3) for r in runs],
    }


def warm(codec, image: Image.Image, repeat: int) -> dict:
    data = codec.encode(image, quality=4)
    phases = {
        "encode_machine": lambda: codec.encode(image, ("machine",), 4),
        "encode_both": lambda: codec.encode(image, quality=4),
        "decode_machine": lambda: codec.decode(data, "machine"),
        "decode_human": lambda: codec.decode(data, "human"),
    }
    out = {}
    for name, fn in phases.items():
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = round(statistics.median(times), 3)
    return out


def speed(first: Path, repeat: int) -> dict:
    image = read_rgb(first)
    report: dict = {"picture": first.name, "size": list(image.size), "quality": 4}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image.save(work / "p.png")
        for backend in ("onnx", "torch"):
            flags = ["--backend", backend, "--device", "cpu", "--force"]
            report[backend] = {
                "cold": {
                    "encode": cold(
                        [*FCODEC, "encode", "p.png", "-o", "p.fcb", *flags], repeat, work
                    ),
                    "decode_machine": cold(
                        [*FCODEC, "decode", "p.fcb", "--layer", "machine", "-o", "m.png", *flags],
                        repeat,
                        work,
                    ),
                    "decode_human": cold(
                        [*FCODEC, "decode", "p.fcb", "--layer", "human", "-o", "h.png", *flags],
                        repeat,
                        work,
                    ),
                }
            }
        import_run = [sys.executable, "-c", "import fusioncodec"]
        report["import_fusioncodec"] = cold(import_run, repeat, work)
    for backend, codec in (
        ("onnx", OnnxCodec.from_file(None)),
        ("torch", Codec.from_file(None, "cpu")),
    ):
        report[backend]["warm"] = warm(codec, image, repeat)
    report["warm_ratio_onnx_to_torch"] = {
        k: round(report["onnx"]["warm"][k] / report["torch"]["warm"][k], 2)
        for k in report["onnx"]["warm"]
    }
    return report


def equivalence(pictures: list[Path], qualities: list[float]) -> dict:
    runtimes = {"torch": Codec.from_file(None, "cpu"), "onnx": OnnxCodec.from_file(None)}
    rows = []
    curves: dict[str, dict[str, list]] = {k: {} for k in runtimes}
    for path in pictures:
        image = read_rgb(path)
        reference = np.asarray(image)
        for q in qualities:
            files = {name: codec.encode(image, quality=q) for name, codec in runtimes.items()}
            row = {
                "picture": path.stem,
                "quality": q,
                "same_bytes": files["torch"] == files["onnx"],
            }
            for made_by, data in files.items():
                latents = {
                    n: {
                        layer: c.decode_latent(c.parse(data), layer).tobytes()
                        for layer in ("machine", "human")
                    }
                    for n, c in runtimes.items()
                }
                pictures_ = {n: np.asarray(c.decode(data, "human")) for n, c in runtimes.items()}
                row[f"{made_by}_file"] = {
                    "same_latents": latents["torch"] == latents["onnx"],
                    "grey_levels": int(
                        np.abs(pictures_["torch"].astype(int) - pictures_["onnx"].astype(int)).max()
                    ),
                }
                # each runtime's own round trip: its file, its decoder
                if made_by in pictures_:
                    rate = bpp(len(data), image.width * image.height)
                    quality = psnr_rgb(reference, pictures_[made_by])
                    row[f"{made_by}_bpp"], row[f"{made_by}_psnr"] = (
                        round(rate, 5),
                        round(quality, 4),
                    )
                    curve = curves[made_by].setdefault(path.stem, [])
                    curve.append((rate, quality))
            rows.append(row)
            print(json.dumps(row), flush=True)
    deltas = []
    for name in curves["torch"]:
        torch_curve, onnx_curve = (np.array(sorted(curves[k][name])) for k in ("torch", "onnx"))
        deltas.append(
            bd_rate(torch_curve[:, 0], torch_curve[:, 1], onnx_curve[:, 0], onnx_curve[:, 1])
        )
    return {
        "files": len(rows) * 2,
        "same_bytes": sum(r["same_bytes"] for r in rows),
        "same_latents_all": all(r[f"{k}_file"]["same_latents"] for r in rows for k in runtimes),
        "max_grey_levels": max(r[f"{k}_file"]["grey_levels"] for r in rows for k in runtimes),
        "bd_rate_onnx_vs_torch_percent": round(float(np.mean(deltas)), 4),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kodak", type=Path, default=shared_dir() / "data" / "kodak")
    parser.add_argument("--qualities", type=float, nargs="+", default=[1.0, 3.0, 5.0, 8.0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--skip-equivalence", action="store_true", help="speed only (keeps --out's equivalence)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "runtime" / "compare.json")
    args = parser.parse_args()
    pictures = sorted(args.kodak.glob("kodim*.png"))
    if not pictures:
        raise SystemExit(f"no Kodak pictures in {args.kodak}")
    report = {"date": time.strftime("%Y-%m-%d"), "cpu_threads": os.cpu_count()}
    report["speed"] = speed(pictures[0], args.repeat)
    print(json.dumps(report["speed"], indent=1), flush=True)
    if not args.skip_equivalence:
        report["equivalence"] = equivalence(pictures, args.qualities)
    elif args.out.exists():  # keep the equivalence of an earlier run
        earlier = json.loads(args.out.read_text())
        if "equivalence" in earlier:
            report["equivalence"] = earlier["equivalence"] | {"date": earlier.get("date")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
