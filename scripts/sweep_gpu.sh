#!/usr/bin/env bash
# The paper-claims sweep on one GPU, time-boxed: several models at once, several worker processes
# per model sharing the GPU (`bigain sweep --worker i/n`), then speed + report per model.
# Every run folder resumes, so running this again (same RUNS) finishes what the budget left.
#
#   scripts/sweep_gpu.sh RUNS OUTDIR [WORK_SECONDS=420]
#
# Env: IMAGES (2000), GEN (2000), STEPS (50), WORKERS (4 per model), DTYPE (bf16), DEVICE (cuda),
#      GRID (paper: the pre-registered grid of benchmarks/results/paper-claims.md; default: the
#      first sweep's), SEEDS (0,1,2: sample seeds), FID_BOOT (1000),
#      MODELS ("fashion-dit28 fashion-dit fashion-unet"; an entry MODEL:PLACEMENT runs a declared
#      secondary placement into RUNS/MODEL-PLACEMENT, e.g. fashion-unet:levels12 fashion-dit:blocks123),
#      FULL (1: also classify test images 2000..9999 uncompressed, for the model cards; REST_END
#      sets where that range ends), KEEP_IMAGES (0: pack run folders without sample PNGs),
#      REPORT_SECONDS (240: bound on each run folder's speed + report phase; a rerun continues it).
# Packs each run folder (without PNGs and per-sample features; the report's FID comparisons are
# kept in fid_tests.json) into OUTDIR as MODEL.tgz. Between sessions: unpack the tgz files into a
# folder of the checkout that git ignores (e.g. `.gpu/runs`), carry it, and pass it as RUNS:
# classification resumes image by image, complete sample sets are not redone (their scores are
# kept), and an incomplete sample set starts again.
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
MODELS=${MODELS:-"fashion-dit28 fashion-dit fashion-unet"}
GRID=${GRID:-paper}
SEEDS=${SEEDS:-0,1,2}
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

batch() { case $1 in fashion-dit*) echo "2400 32 500" ;; *) echo "1200 16 500" ;; esac; }  # rows, images/group, gen batch
dir_of() { local m=${1%%:*} p=${1#*:}; [ "$p" = "$1" ] && echo "$m" || echo "$m-$p"; }
common() {  # model[:placement] -> shared sweep arguments
  local m=${1%%:*} p=${1#*:}
  [ "$p" = "$1" ] && p=default
  read -r B G GB <<<"$(batch "$m")"
  echo --model "builtin:$m" --out "$RUNS/$(dir_of "$1")" --grid "$GRID" --seeds "$SEEDS" --images "$IMAGES" --gen "$GEN" \
       --steps "$STEPS" --batch-size "$B" --images-per-group "$G" --gen-batch "$GB" --speed-batch "${SPEED_BATCH:-$B}" \
       --dtype "$DTYPE" --device "$DEVICE" --fid-boot "${FID_BOOT:-1000}" --no-progress \
       $([ "$p" != default ] && echo --placement "$p")
}
pids=()
for spec in $MODELS; do
  d=$(dir_of "$spec") m=${spec%%:*}
  for ((i = 0; i < WORKERS; i++)); do
    timeout -s KILL "$WORK" $PY -m bigain.cli sweep $(common "$spec") --phases classify,generate --worker "$i/$WORKERS" \
      > "$RUNS/$d.worker$i.log" 2>&1 &
    pids+=($!)
  done
  if [ "$FULL" = 1 ] && [ "$d" = "$m" ]; then
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
for spec in $MODELS; do  # speed (interleaved, this device) and the report, one run folder at a time
  d=$(dir_of "$spec")
  timeout -s KILL "${REPORT_SECONDS:-240}" $PY -m bigain.cli sweep $(common "$spec") --phases speed,report > "$RUNS/$d.report.log" 2>&1
  echo "$d report exited with $?"
  cat "$RUNS/$d/report.md" 2>/dev/null
  ex=(--exclude=features.npy)
  [ "${KEEP_IMAGES:-0}" = 1 ] || ex+=(--exclude=images)
  (cd "$RUNS" && tar czf "$OUTDIR/$d.tgz" "${ex[@]}" "$d" $d.*.log)
done
echo "all done after ${SECONDS}s"
ls -la "$OUTDIR"
