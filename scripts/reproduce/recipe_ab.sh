#!/usr/bin/env bash
# A/B of the training recipe on the CPU: each change of the 0.3 recipe against the recipe
# before it, at equal steps, from the shipped baseline, then Kodak with real files
# (BD-rate vs VTM and the per-quality points).
#
#   scripts/reproduce/recipe_ab.sh STEPS [VARIANT...]     (default: all five, in this order)
#
#   before    the recipe before 0.3: pictures as they are (BSDS500 + COCO), uniform q
#             without weights, lr 2e-4 dropped 10x at 80%, no moving average
#   data      + pictures shrunk by 0.5-0.9 (antialiased) and sun80 (held-out split kept out)
#   balance   + every quality level drawn equally often, losses weighted by lambda^-e
#   schedule  + cosine decay from 1e-4 (the warm-restart lr) and a moving average (0.999)
#   recipe    all of them: `fcodec train`'s defaults
#
# Every variant uses the same seed, batch 8 x 256^2 and --threads (default 2). Results go to
# $RUNS (default runs/recipe-ab): a run folder, weights/VARIANT.safetensors and kodak-VARIANT/
# per variant; `python scripts/reproduce/recipe_ab_table.py $RUNS` tabulates them.
set -euo pipefail
S=${FUSIONCODEC_SHARED:-../shared}
RUNS=${RUNS:-runs/recipe-ab}
STEPS=${1:?usage: scripts/reproduce/recipe_ab.sh STEPS [VARIANT...]}
shift
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(before data balance schedule recipe)
old_data=(--scale 1:1 --sources bsds500,coco)
old_balance=(--balance off)
old_schedule=(--schedule step --ema 0 --lr 2e-4)
for v in "${variants[@]}"; do
  case $v in
  before) args=("${old_data[@]}" "${old_balance[@]}" "${old_schedule[@]}") ;;
  data) args=("${old_balance[@]}" "${old_schedule[@]}") ;;
  balance) args=("${old_data[@]}" "${old_schedule[@]}") ;;
  schedule) args=("${old_data[@]}" "${old_balance[@]}") ;;
  recipe) args=() ;;
  *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  if [ ! -f "$RUNS/$v/done" ]; then
    fcodec train baseline --init fusioncodec/models/baseline-default.safetensors \
      --out "$RUNS/$v" --steps "$STEPS" --minutes 100000 --batch 8 --crop 256 --seed 1 \
      --threads "${THREADS:-2}" "${args[@]}"
  fi
  fcodec export "$RUNS/$v/checkpoint.pt" --kind baseline --name "$v" --out "$RUNS/weights" \
    --notes "recipe A/B variant '$v': $STEPS steps at batch 8 x 256^2 from baseline-default" -f
  fcodec eval human --images "$S/data/kodak" --codecs baseline \
    --baseline-weights "$RUNS/weights/$v.safetensors" --anchor vtm --out "$RUNS/kodak-$v" -f
done
