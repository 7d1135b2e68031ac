"""Fuzz the decoder with hostile .fcb files and print counts by mutation and outcome.

  python scripts/reproduce/fuzz_decoder.py --cases 10000 [--weights W] [--image PATH] [--seed 0]

Mutations and outcomes are defined in fusioncodec/fuzz.py (CI runs a few hundred of them
through hypothesis in tests/test_fuzz.py). Exits 1 when any case is BAD.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fusioncodec.codec import Codec
from fusioncodec.files import shared_dir
from fusioncodec.fuzz import KINDS, judge, mutate
from fusioncodec.image import read_rgb
from fusioncodec.weight_file import default_weights

SHARED = shared_dir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--weights", type=Path, default=default_weights())
    parser.add_argument("--image", type=Path, default=SHARED / "data" / "kodak" / "kodim23.png")
    parser.add_argument("--crop", type=int, default=96, help="side of the coded crop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = Codec.from_file(args.weights, "cpu")
    source = read_rgb(args.image)
    crops = [source.crop((x, 0, x + args.crop, args.crop - 13)) for x in (0, 200)]
    data = codec.encode(crops[0], quality=4.0)
    other = codec.encode(crops[1], quality=6.0)
    pictures = {layer: np.asarray(codec.decode(data, layer)) for layer in ("machine", "human")}
    donor = {"machine": np.asarray(codec.decode(other, "machine"))}
    rng = np.random.default_rng(args.seed)
    counts: dict[str, collections.Counter] = {kind: collections.Counter() for kind in KINDS}
    bad, slowest, start = [], 0.0, time.perf_counter()
    for i in range(args.cases):
        kind = KINDS[i % len(KINDS)]
        case = mutate(data, other, kind, rng)
        result = judge(codec, data, pictures, case, donor)
        slowest = max(slowest, result["seconds"])
        for layer, outcome in result["outcomes"].items():
            counts[kind][outcome.split(":")[0] if outcome.startswith("BAD") else outcome] += 1
            if outcome.startswith("BAD"):
                bad.append(f"{kind} ({case.detail}) {layer}: {outcome}")
    total = time.perf_counter() - start
    print(f"{args.cases} cases x 2 layers, {total:.0f} s, slowest layer decode {slowest:.2f} s")
    print(f"{'mutation':<10} {'cases':>6}  outcomes (layer decodes)")
    for kind in KINDS:
        line = ", ".join(f"{k} {v}" for k, v in sorted(counts[kind].items()))
        print(f"{kind:<10} {sum(counts[kind].values()) // 2:>6}  {line}")
    for line in bad[:20]:
        print("BAD", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
