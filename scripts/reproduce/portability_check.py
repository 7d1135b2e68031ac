"""Cross-device decoding check: encode a corpus on one device, decode it on another.

  python scripts/reproduce/portability_check.py corpus --out cache/portability/cpu
      encode the corpus here (Kodak and coco128 crops, qualities 1-8, two-layer and
      machine-only files) and record, per layer, the decoded latent's and symbols' digests
      and the decoded picture
  python scripts/reproduce/portability_check.py check cache/portability/cpu --device cuda \
      --encode-out cache/portability/cuda
      decode every file on --device and compare with the record (latent, symbols, largest
      pixel difference); with --encode-out, also encode the corpus on --device into a new
      corpus folder, to be checked back where it came from

Prints one line of counts per check. ``scripts/gpu/gpu_portability.sh`` runs the device side in
one command; tests/test_portability.py runs the same records under CPU settings in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fusioncodec.codec import Codec
from fusioncodec.files import shared_dir
from fusioncodec.portability import SETTINGS, corpus_plan, decode_record, numeric_setting
from fusioncodec.weight_file import default_weights

SHARED = shared_dir()


def _images(shared: Path, kodak: int, coco: int) -> list[tuple[str, Image.Image]]:
    paths = sorted((shared / "data" / "kodak").glob("kodim*.png"))[:kodak]
    paths += sorted((shared / "data" / "coco128" / "images").rglob("*.jpg"))[:coco]
    if not paths:
        sys.exit(f"portability_check: no Kodak/coco128 images under {shared}")
    return [(p.stem, Image.open(p)) for p in paths]


def _write_corpus(codec: Codec, plan: list, out: Path) -> None:
    """Encode ``plan`` with ``codec`` into ``out`` (sources, files, records, decoded pictures)."""
    for sub in ("sources", "files", "decoded"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest = {"device": str(codec.device), "torch": torch.__version__, "files": {}}
    for name, image, quality, layers in plan:
        source = out / "sources" / f"{name.rsplit('-q', 1)[0]}.png"
        if not source.exists():
            image.save(source)
        data = codec.encode(Image.open(source), tuple(layers), quality)
        (out / "files" / f"{name}.fcb").write_bytes(data)
        for layer in layers:
            codec.decode(data, layer).save(out / "decoded" / f"{name}-{layer}.png")
        manifest["files"][name] = {
            "source": source.name,
            "quality": quality,
            "layers": list(layers),
            "record": decode_record(codec, data),
        }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def corpus(args: argparse.Namespace) -> None:
    codec = Codec.from_file(args.weights, args.device)
    plan = corpus_plan(_images(args.shared, args.kodak, args.coco))
    _write_corpus(codec, plan, args.out)
    print(f"wrote {len(plan)} files to {args.out} on {codec.device}")


def check(args: argparse.Namespace) -> int:
    codec = Codec.from_file(args.weights, args.device)
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    counts = {"files": 0, "layer decodes": 0, "failed": 0, "differ": 0}
    worst = 0
    with numeric_setting(codec.model, args.setting):
        for name, entry in manifest["files"].items():
            data = (args.corpus / "files" / f"{name}.fcb").read_bytes()
            record = decode_record(codec, data)
            counts["files"] += 1
            for layer, expected in entry["record"].items():
                counts["layer decodes"] += 1
                if record[layer].startswith("error"):
                    counts["failed"] += 1
                    continue
                if record[layer] != expected:
                    counts["differ"] += 1
                picture = np.asarray(codec.decode(data, layer), dtype=np.int16)
                reference = Image.open(args.corpus / "decoded" / f"{name}-{layer}.png")
                worst = max(worst, int(np.abs(picture - np.asarray(reference, np.int16)).max()))
    origin = f"{manifest['device']} (torch {manifest['torch']})"
    here = f"{codec.device} (torch {torch.__version__}, setting {args.setting})"
    print(
        f"encoded on {origin} -> decoded on {here}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f", largest pixel difference {worst}"
    )
    if args.encode_out:
        plan = [
            (name, Image.open(args.corpus / "sources" / e["source"]), e["quality"], e["layers"])
            for name, e in manifest["files"].items()
        ]
        with numeric_setting(codec.model, args.setting):
            _write_corpus(codec, plan, args.encode_out)
        print(f"encoded {len(plan)} files on {codec.device} into {args.encode_out}")
    return 1 if counts["failed"] or counts["differ"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights", type=Path, default=default_weights())
    common.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("corpus", parents=[common], help="encode the corpus here")
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--shared", type=Path, default=SHARED)
    make.add_argument("--kodak", type=int, default=6)
    make.add_argument("--coco", type=int, default=4)
    verify = sub.add_parser(
        "check", parents=[common], help="decode a corpus and compare with its records"
    )
    verify.add_argument("corpus", type=Path)
    verify.add_argument("--setting", choices=SETTINGS, default="default")
    verify.add_argument("--encode-out", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "corpus":
        corpus(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
