#!/usr/bin/env bash
# Train the three comparison models side by side on a lent GPU machine (one GPU, 16 cores).
#   scripts/gpu_session.sh start MINUTES   install wheels, launch the runs detached, wait
#   scripts/gpu_session.sh finetune MINUTES [SECONDS]  one joint run from the shipped
#                                           two-layer weights (carried in fusioncodec/models/) instead
#   scripts/gpu_session.sh wait SECONDS    report progress after SECONDS
#   scripts/gpu_session.sh snapshot RUN...  latest checkpoints of RUNs to $OUT (runs go on)
#   scripts/gpu_session.sh collect RUN...  wait for RUNs to end; their weights and logs to $OUT
# Needs .whl/ (compressai, constriction, pytorch-msssim wheels for cp312) and cache/devdata/
# (scripts/pack_training_set.py) carried along. Runs live in /tmp/runs on that machine.
set -u
RUNS=/tmp/runs
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1

progress() {
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  for r in "$RUNS"/*/*/; do
    [ -f "$r/log.jsonl" ] && echo "$(basename "$r"): $(grep -v val_ "$r/log.jsonl" | tail -1)"
    [ -f "$r/log.jsonl" ] && grep val_ "$r/log.jsonl" | tail -1
  done
  tar czf "$OUT/logs.tar.gz" -C "$RUNS" --exclude='*.pt' --exclude='*.npz' . 2>/dev/null
}

install() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  python3 -c "import torch, fusioncodec.codec; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
}

# launch DIR NAME ARGS...: `fcodec train ARGS` detached, in $RUNS/DIR/NAME, log in NAME.out
launch() {
  mkdir -p "$RUNS/$1"
  setsid nohup python3 -m fusioncodec.cli train "${@:3}" --out "$RUNS/$1/$2" "${data[@]}" \
    >"$RUNS/$1/$2.out" 2>&1 </dev/null &
}

# first progress 90 s after the launch, then again after SECONDS
report() {
  sleep 90
  tail -c 600 $RUNS/*/*.out
  progress
  sleep "${1:-0}"
  progress
}

data=(--data cache/devdata/train --masks cache/devdata/train --val cache/devdata/val
  --val-count 4 --validate-minutes 5 --batch 16 --crop 256 --device cuda)

case "$1" in
finetune)
  install
  launch a joint-ft joint --init fusioncodec/models/fusioncodec-default.safetensors --lr 1e-4 \
    --decay-at 0.85 --minutes "$2" --threads 8
  report "${3:-0}"
  ;;
start)
  install
  common=(--lr 2e-4 --minutes "$2" --threads 4)
  launch a joint-m4 joint --m 4 "${common[@]}"
  launch b joint-m2 joint --m 2 "${common[@]}"
  launch c baseline baseline "${common[@]}"
  report "${3:-0}"
  ;;
wait)
  sleep "$2"
  progress
  ;;
snapshot)
  shift
  for run in "$@"; do
    python3 scripts/checkpoint_shards.py split $RUNS/*/"$run"/checkpoint.pt "$OUT" "$run"
    mv "$OUT/$run.json" "$RUNS/"
  done
  progress
  ;;
collect)
  shift
  for run in "$@"; do
    dir=$(ls -d $RUNS/*/"$run")
    while [ ! -f "$dir/done" ]; do sleep 5; done
    python3 scripts/checkpoint_shards.py split "$dir/checkpoint.pt" "$OUT" "$run"
    mv "$OUT/$run.json" "$RUNS/"  # the card data travels inside logs.tar.gz
  done
  for dir in $RUNS/*/*/; do while [ ! -f "$dir/done" ]; do sleep 5; done; done
  progress
  tail -c 400 $RUNS/*/*.out
  ;;
esac
