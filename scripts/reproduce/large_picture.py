"""Peak memory and time of coding a large picture, tiled (the default) or in one piece.

    python scripts/reproduce/large_picture.py --size 4096x4096 --out runs/large [--untiled | --cli]

Makes a WIDTHxHEIGHT picture from a photo (Lanczos resize of --source, default Kodak's
kodim23), then in separate processes encodes it (both layers, --quality) and decodes each
layer, printing one JSON line per step: seconds, peak resident memory (MB, ru_maxrss of that
process, before the decoded picture is compared), bpp and, for decodes, PSNR against the
picture. ``--untiled`` makes every tile
larger than the picture: the coding before 0.3, for comparison on a picture that fits.
``--cli`` runs each step through ``fcodec encode`` / ``fcodec decode`` instead (the peak of
that command, files in and out included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("FUSIONCODEC_SHARED", "../shared"))


def untile() -> None:
    from fusioncodec import codec, runtime
    from fusioncodec.exact import latent

    codec.TRANSFORM_TILE = runtime.TRANSFORM_TILE = latent.Y_TILE = latent.Z_TILE = 1 << 20


def cli_step(args: argparse.Namespace) -> tuple[dict, Path | None]:
    """One step through ``fcodec`` in a child process: (row, decoded picture's path)."""
    fcodec = [sys.executable, "-m", "fusioncodec.cli"]
    if args.step == "encode":
        command = ["encode", args.picture, "-o", args.fcb, "-q", args.quality, "-f"]
        output = None
    else:
        output = args.fcb.with_name(f"{args.fcb.stem}-{args.step}.png")
        command = ["decode", args.fcb, "--layer", args.step, "-o", output, "-f"]
    start = time.perf_counter()
    subprocess.run([*fcodec, *map(str, command)], check=True, capture_output=True)
    row = {"step": f"{args.step} (fcodec {command[0]})", "tiled": True}
    row["seconds"] = round(time.perf_counter() - start, 1)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return row, output


def step(args: argparse.Namespace) -> dict:
    """One step in this process (encode, or decode of one layer)."""
    import numpy as np
    from PIL import Image

    import fusioncodec
    from fusioncodec.image import read_rgb
    from fusioncodec.metrics import bpp, psnr_rgb

    Image.MAX_IMAGE_PIXELS = None  # our own picture
    if args.cli:
        row, output = cli_step(args)
        decoded = None if output is None else Image.open(output)
        if output is None:
            w, h = Image.open(args.picture).size
            row["bpp"] = round(bpp(args.fcb.stat().st_size, w * h), 4)
        else:
            picture = np.asarray(read_rgb(args.picture))
            row["psnr"] = round(psnr_rgb(picture, np.asarray(decoded.convert("RGB"))), 3)
        return row
    if args.untiled:
        untile()
    codec = fusioncodec.load(device="cpu")
    start = time.perf_counter()
    row: dict = {"step": args.step, "tiled": not args.untiled}
    if args.step == "encode":
        data = codec.encode(args.picture, quality=args.quality)
        args.fcb.write_bytes(data)
        w, h = Image.open(args.picture).size
        row |= {"bpp": round(bpp(len(data), w * h), 4)}
    else:
        decoded = codec.decode(args.fcb, args.step)
    row["seconds"] = round(time.perf_counter() - start, 1)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if args.step != "encode":  # measured after the peak: the reference picture is not counted
        picture = np.asarray(read_rgb(args.picture))
        row["psnr"] = round(psnr_rgb(picture, np.asarray(decoded)), 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4096x4096")
    parser.add_argument("--source", type=Path, default=SHARED / "data/kodak/kodim23.png")
    parser.add_argument("--out", type=Path, default=Path("runs/large"))
    parser.add_argument("--quality", type=float, default=4.0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--untiled", action="store_true")
    mode.add_argument("--cli", action="store_true", help="code through fcodec encode/decode")
    parser.add_argument("--steps", default="encode,machine,human", help="which steps to run")
    parser.add_argument("--step", choices=["encode", "machine", "human"])
    parser.add_argument("--picture", type=Path)
    parser.add_argument("--fcb", type=Path)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args)), flush=True)
        return
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    width, height = (int(v) for v in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    picture = args.out / f"{width}x{height}.png"
    if not picture.exists():
        with Image.open(args.source) as im:
            im.convert("RGB").resize((width, height), Image.Resampling.LANCZOS).save(picture)
    fcb = args.out / f"{width}x{height}{'-untiled' if args.untiled else ''}.fcb"
    common = ["--picture", str(picture), "--fcb", str(fcb), "--quality", str(args.quality)]
    common += ["--untiled"] if args.untiled else []
    common += ["--cli"] if args.cli else []
    for name in args.steps.split(","):
        run = [sys.executable, __file__, "--step", name, *common]
        print(subprocess.run(run, check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
