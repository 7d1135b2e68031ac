#!/usr/bin/env bash
# One GPU slot (15 device-minutes, machine start included) spent on training, end to end.
#
# Here, before the slot (CPU only):
#   scripts/gpu/gpu_train.sh prepare MODEL    MODEL: baseline or joint. Fetches the wheels the GPU
#       machine lacks (.whl/), takes the shipped weight files out of what travels (git rm
#       --cached + .git/info/exclude; only MODEL's starting weights are carried), packs as
#       many training images as fit (cache/gpu-data, source files unchanged) and prints the
#       travel size and the device call to make.
#   scripts/gpu/gpu_train.sh restore          puts the weight files back under git (always run it)
# On the GPU machine, two calls back to back (a call lasts at most 10 minutes):
#   scripts/gpu/gpu_train.sh start MODEL MINUTES WAIT   installs the wheels, measures the step
#       rate on random tensors and on the sampler (train_rate.py, ~1 min), launches
#       `fcodec train MODEL` detached for MINUTES (checkpoints every 2 minutes), and returns
#       after WAIT seconds; every 2 minutes the newest checkpoint goes to $OUT as shards.
#   scripts/gpu/gpu_train.sh finish           waits for the run to end; final shards and logs to $OUT.
# (DEVICE=cpu BATCH=2 INSTALL=0 RATE=0 OUT=DIR try the device side here, on the CPU.)
# Back here: python scripts/gpu/checkpoint_shards.py join FILES_AT MODEL runs/gpu/MODEL/checkpoint.pt
# then `fcodec export` it (docs/TRAINING.md, "A lent GPU").
set -u
RUN=/tmp/gpu-run
DATA=cache/gpu-data
LIMIT=$((64 * 1024 * 1024))

weights_of() { [ "$1" = baseline ] && echo baseline-default || echo fusioncodec-default; }

# bytes that travel: tracked + untracked-not-ignored files, plus the carried paths
travel_size() {
  { git ls-files -z --cached --others --exclude-standard; printf '%s\0' "$@"; } |
    xargs -0 -I{} find {} -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

prepare() {
  local model=$1 name
  name=$(weights_of "$model")
  [ -d .whl ] && ls .whl/compressai-* >/dev/null 2>&1 || {
    for pkg in compressai==1.2.8 constriction==0.5.0 pytorch-msssim==1.0.0 tomli==2.5.0; do
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_34_x86_64 --platform manylinux_2_17_x86_64 \
        -d .whl "$pkg" || exit 1
    done
  }
  mkdir -p .git/info
  for f in fusioncodec/models/*.safetensors; do
    git rm -q --cached --ignore-unmatch "$f"
    grep -qx "/$f" .git/info/exclude 2>/dev/null || echo "/$f" >>.git/info/exclude
  done
  local carry=(.whl "fusioncodec/models/$name.safetensors")
  local budget=$(((LIMIT - $(travel_size "${carry[@]}")) / 1048576 - 1))
  python scripts/gpu/pack_training_set.py --out "$DATA" --budget-mib "$budget" || exit 1
  carry+=("$DATA")
  echo "travels: $(($(travel_size "${carry[@]}") / 1048576)) MiB of 64"
  echo "device call 1: bash scripts/gpu/gpu_train.sh start $model 10.5 540   carry: ${carry[*]}"
  echo "device call 2 (at once): bash scripts/gpu/gpu_train.sh finish"
  echo "then: scripts/gpu/gpu_train.sh restore"
}

restore() {
  git reset -q -- fusioncodec/models
  [ -f .git/info/exclude ] && sed -i '\#^/fusioncodec/models/.*\.safetensors$#d' .git/info/exclude
  git status --short fusioncodec/models
}

install() {
  [ "${INSTALL:-1}" = 1 ] || return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  python3 -c "import torch, fusioncodec.codec; print('torch', torch.__version__, torch.cuda.get_device_name())" ||
    exit 1
}

# newest checkpoint of the run -> $OUT/MODEL-k.safetensors + MODEL.json, and the logs
snapshot() {
  [ -f "$RUN/checkpoint.pt" ] || return 0
  rm -f "$OUT/$1"-*.safetensors
  python3 scripts/gpu/checkpoint_shards.py split "$RUN/checkpoint.pt" "$OUT" "$1"
  cp "$RUN/log.jsonl" "$OUT/$1-log.jsonl" 2>/dev/null
  tail -c 2000 "$RUN.out" >"$OUT/$1-train.txt"
}

start() {
  local model=$1 minutes=$2 wait=$3 name stage
  name=$(weights_of "$model")
  stage=$([ "$model" = baseline ] && echo baseline || echo joint)
  install
  [ "${RATE:-1}" = 1 ] && python3 scripts/gpu/train_rate.py --masks "$DATA/train" --cache \
    /tmp/rate-edges.npz --stages baseline,joint --batch "${BATCH:-64}" --steps 30 \
    --device "${DEVICE:-cuda}" --json "$OUT/rate.json"
  rm -rf "$RUN"
  mkdir -p "$RUN"
  echo "$model" >/tmp/gpu-run.model
  setsid nohup python3 -m fusioncodec.cli train "$stage" --out "$RUN" --init \
    "fusioncodec/models/$name.safetensors" --masks "$DATA/train" --batch "${BATCH:-64}" \
    --crop 256 --minutes "$minutes" --checkpoint-minutes 2 --device "${DEVICE:-cuda}" ${TRAIN_ARGS:-} \
    >"$RUN.out" 2>&1 </dev/null &
  local begun=$SECONDS
  while [ $((SECONDS - begun)) -lt "$wait" ] && [ ! -f "$RUN/done" ]; do
    sleep 10
    [ -f "$RUN/checkpoint.pt" ] && [ "$RUN/checkpoint.pt" -nt "$OUT/$model.json" ] &&
      snapshot "$model"
  done
  snapshot "$model"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
  tail -c 600 "$RUN.out"
}

finish() {
  local model
  model=$(cat /tmp/gpu-run.model) || exit 1
  while [ ! -f "$RUN/done" ] && pgrep -f "fusioncodec.cli train" >/dev/null; do sleep 5; done
  snapshot "$model"
  cat "$RUN/done" 2>/dev/null
  tail -c 600 "$RUN.out"
}

export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
case "${1:-}" in
prepare) prepare "${2:?MODEL: baseline or joint}" ;;
restore) restore ;;
start) start "${2:?MODEL}" "${3:?MINUTES}" "${4:?WAIT seconds}" ;;
finish) finish ;;
*) sed -n '2,20p' "$0"; exit 2 ;;
esac
