#!/usr/bin/env bash
# Cross-device check on a lent GPU machine, in one command (issue: portable bitstreams).
# Prepare here (CPU):
#   python scripts/reproduce/portability_check.py corpus --out cache/portability/cpu
#   wheels for cp312 in .whl/: compressai, constriction (see the device README's pip line)
# On the GPU machine (carry cache/portability and .whl):
#   bash scripts/gpu/gpu_portability.sh
#   decodes the CPU-encoded corpus on CUDA under several settings (one line of counts each),
#   then encodes the corpus on CUDA into $OUT/cuda.tgz
# Back here:
#   tar xzf FILES_AT/cuda.tgz -C cache/portability
#   python scripts/reproduce/portability_check.py check cache/portability/cuda   # CUDA -> CPU counts
# DEVICE=cpu runs the same steps on the CPU (how this script was checked before use).
set -u
DEVICE=${DEVICE:-cuda}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
python3 -c "import torch, fusioncodec.codec; print(torch.__version__, torch.cuda.is_available())" \
  || exit 1
C=cache/portability
status=0
for setting in default memory-format float64 noise; do
  python3 scripts/reproduce/portability_check.py check "$C/cpu" --device "$DEVICE" --setting "$setting" \
    | tee -a "$OUT/report.txt" || status=1
done
python3 scripts/reproduce/portability_check.py check "$C/cpu" --device "$DEVICE" --encode-out /tmp/cuda \
  | tee -a "$OUT/report.txt" || status=1
tar czf "$OUT/cuda.tgz" -C /tmp cuda
exit $status
