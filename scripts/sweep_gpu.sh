#!/usr/bin/env bash
# The paper-claims sweep on one GPU, time-boxed: fashion-dit and fashion-unet at once, several
# worker processes per model sharing the GPU (`bigain sweep --worker i/n`), then speed + report.
# Every run folder resumes, so running this again (same RUNS) finishes what the budget left.
#
#   scripts/sweep_gpu.sh RUNS OUTDIR [WORK_SECONDS=420]
#
# Env: IMAGES (2000), GEN (2000), STEPS (50), WORKERS (4 per model), DTYPE (bf16), DEVICE (cuda),
#      MODELS ("fashion-dit fashion-unet"), FULL (1: also classify test images 2000..9999 uncompressed,
#      for the model cards; REST_END sets where that range ends). Packs each model's folder without sample PNGs (grids kept) into OUTDIR.
set -uo pipefail
RUNS=${1:?usage: scripts/sweep_gpu.sh RUNS OUTDIR [WORK_SECONDS]}
OUTDIR=${2:?usage: scripts/sweep_gpu.sh RUNS OUTDIR [WORK_SECONDS]}
WORK=${3:-420}
IMAGES=${IMAGES:-2000}
GEN=${GEN:-2000}
STEPS=${STEPS:-50}
WORKERS=${WORKERS:-4}
DTYPE=${DTYPE:-bf16}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-"fashion-dit fashion-unet"}
FULL=${FULL:-1}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$RUNS" "$OUTDIR"
if ! $PY -c "import diffusers" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
$PY -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"

batch() { case $1 in fashion-dit) echo "2400 32 500" ;; *) echo "1200 16 500" ;; esac; }  # rows, images/group, gen batch
common() {  # model -> shared sweep arguments
  read -r B G GB <<<"$(batch "$1")"
  echo --model "builtin:$1" --out "$RUNS/$1" --images "$IMAGES" --gen "$GEN" --steps "$STEPS" \
       --batch-size "$B" --images-per-group "$G" --gen-batch "$GB" --speed-batch "${SPEED_BATCH:-$B}" --dtype "$DTYPE" --device "$DEVICE" --no-progress
}
pids=()
for m in $MODELS; do
  for ((i = 0; i < WORKERS; i++)); do
    timeout -s KILL "$WORK" $PY -m bigain.cli sweep $(common "$m") --phases classify,generate --worker "$i/$WORKERS" \
      > "$RUNS/$m.worker$i.log" 2>&1 &
    pids+=($!)
  done
  if [ "$FULL" = 1 ]; then
    read -r B G GB <<<"$(batch "$m")"
    $PY -c "import numpy as np; np.save('$RUNS/$m.rest.npy', np.arange($IMAGES, ${REST_END:-10000}))"
    timeout -s KILL "$WORK" $PY -m bigain.cli classify --model "builtin:$m" --subset "$RUNS/$m.rest.npy" \
      --out "$RUNS/$m/classify-rest" --batch-size "$B" --images-per-group "$G" --dtype "$DTYPE" --device "$DEVICE" \
      --no-progress > "$RUNS/$m.rest.log" 2>&1 &
    pids+=($!)
  fi
done
wait "${pids[@]}"
echo "workers done after ${SECONDS}s"
for m in $MODELS; do  # speed (interleaved, this device) and the report, one model at a time
  timeout -s KILL "${REPORT_SECONDS:-150}" $PY -m bigain.cli sweep $(common "$m") --phases speed,report > "$RUNS/$m.report.log" 2>&1
  echo "$m report exited with $?"
  cat "$RUNS/$m/report.md" 2>/dev/null
  (cd "$RUNS" && tar czf "$OUTDIR/$m.tgz" --exclude='images' "$m" $m.*.log)
done
echo "all done after ${SECONDS}s"
ls -la "$OUTDIR"
