#!/usr/bin/env bash
# Regenerate the committed results (README "Results"): Kodak RD, the m comparison,
# coco128 detector mAP (machine layer, human layer, baseline) and the speed bench.
# Run from the repo root with the venv active.
# The m comparison needs the two comparison models, which are not shipped (see README):
# M_MODELS=folder with fusioncodec-m4.safetensors and fusioncodec-m2.safetensors.
set -euo pipefail
S=${FUSIONCODEC_SHARED:-../shared}
A=$S/anchors/kodak
fcodec eval human --images "$S/data/kodak" --codecs fusioncodec,fusioncodec-machine,baseline \
  --anchor vtm --anchor baseline --overlay "$A/measured-pillow-jpeg.json" \
  --overlay "$A/measured-pillow-webp.json" --overlay "$A/measured-pillow-avif.json" \
  --overlay "$A/measured-pillow-hevc.json" --overlay "$A/paper-mbt2018-mean.json" \
  --out results/kodak -f --no-progress
# The human layer over a fixed machine layer: q 2.5 (about 0.13 bpp on coco128, the issue's
# <= 0.15 bpp machine operating point), human quality 1..8 on top.
fcodec eval human --images "$S/data/kodak" --codecs fusioncodec --machine-quality 2.5 \
  --anchor vtm --anchor results/kodak/baseline.json --overlay "$A/measured-pillow-webp.json" \
  --overlay "$A/measured-pillow-avif.json" --overlay results/kodak/fusioncodec.json \
  --out results/kodak-mq2.5 -f --no-progress
if [ -n "${M_MODELS:-}" ]; then
  for m in 4 2; do
    fcodec eval human --images "$S/data/kodak" --codecs fusioncodec --anchor vtm \
      --weights "$M_MODELS/fusioncodec-m$m.safetensors" --out "results/m-compare/m$m" -f --no-progress
  done
fi
fcodec eval machine --images "$S/data/coco128/images" --annotations "$S/data/coco128/instances.json" \
  --codecs uncompressed,fusioncodec-machine --qualities 1,1.5,2,2.5,3,4,6,8 \
  --overlay jpeg --overlay webp --overlay avif --overlay hevc --anchor avif \
  --out results/coco128 -f --no-progress
# The same detectors on the human layer's pictures and on the single-layer baseline.
fcodec eval machine --images "$S/data/coco128/images" --annotations "$S/data/coco128/instances.json" \
  --codecs fusioncodec,baseline --qualities 1,2,3,4,6,8 --overlay results/coco128 \
  --overlay avif --anchor avif --out results/coco128-layers -f --no-progress
fcodec bench --image "$S/data/kodak/kodim01.png" --train --out results/bench.json
python scripts/reproduce/summarize_results.py results > results/summary.json
if [ -n "${M_MODELS:-}" ]; then python scripts/experiments/compare_m.py results/m-compare 4 2; fi
# Quality against crops seen, from the versions measured so far (results/training/versions.csv).
python scripts/reproduce/gate_compute.py --out results/training
