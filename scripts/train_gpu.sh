#!/usr/bin/env bash
# Train embedded Fashion-MNIST models on one GPU, each within a time budget, and bring back each
# model's final folder (EMA weights in the shipped format, config.json, train_config.json).
#
#   scripts/train_gpu.sh OUTDIR [DIFFUSION_MINUTES=7] [CNN_MINUTES=2.5]
#
# Env:
#   MODELS   models trained concurrently (default "fashion-dit fashion-unet fashion-cnn", the run that
#            produced the shipped weights); the 28-block DiT alone: MODELS=fashion-dit28
#   COMPILE  1: torch.compile the denoiser (per transformer block); if that run fails before its first
#            checkpoint, the script retries without it for the time left (default 0)
#   INIT     a finished folder of the (single) model to continue from, e.g. one brought back by an
#            earlier session (`--init-from`: weights and step count continue, the optimizer restarts)
#   EVAL     test images to classify uncompressed after training, a quick check of the quality gate
#            (default 0: off; the sweep's `none` setting is the real measurement)
#   DATA     folder with the training IDX files (default .gpu/data if present, else the Debian path)
#   DEVICE   (default cuda) and TRAIN_ARGS (extra arguments), e.g. for a CPU smoke run of the script:
#            DEVICE=cpu TRAIN_ARGS="--tiny --steps 2 --limit 32 --precision fp32" MODELS=fashion-dit28
#
# Chunks: the run folders live in $BIGAIN_TRAIN_WORK (default /tmp/bigain_train) and every run
# passes --resume, so calling this again on the same (still warm) machine continues exactly from the
# newest checkpoint. A later session starts on a bare machine: continue there with INIT pointing at
# the folder brought back (unpacked as below), carried with the working tree.
#
# Output in OUTDIR: per model a log and the final folder as a tar split into parts of at most 15 MiB
# (`cat NAME.tar.part-* | tar x -C DEST` unpacks it; the GPU tool brings back files of up to 16 MiB).
# Needs diffusers (from the wheels in .whl/ when the image lacks it) and the training data: build
# both with scripts/gpu_carry.sh and carry [".whl", ".gpu"]. Runs the package from a private copy of
# src/bigain/{data,models}, so the rest of bigain may be mid-change.
set -uo pipefail
OUTDIR=${1:?usage: scripts/train_gpu.sh OUTDIR [DIFFUSION_MINUTES] [CNN_MINUTES]}
MIN=${2:-7}
MINC=${3:-2.5}
MODELS=${MODELS:-"fashion-dit fashion-unet fashion-cnn"}
if [ -z "${DATA:-}" ]; then
  if [ -d .gpu/data ]; then DATA=$PWD/.gpu/data; else DATA=${BIGAIN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}; fi
fi
PY=${PYTHON:-python3}
WORK=${BIGAIN_TRAIN_WORK:-/tmp/bigain_train}
mkdir -p "$OUTDIR" "$WORK"
export PYTHONUNBUFFERED=1
if ! $PY -c "import diffusers" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
BASE_PYTHONPATH=${PYTHONPATH:-}
PKG=/tmp/bigain_pkg
rm -rf "$PKG" && mkdir -p "$PKG/bigain" && cp -r src/bigain/data src/bigain/models "$PKG/bigain/" && touch "$PKG/bigain/__init__.py"
export PYTHONPATH=$PKG${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
$PY -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"

train() {  # model minutes
  local m=$1 mins=$2 start=$SECONDS extra=()
  [ -n "${INIT:-}" ] && extra+=(--init-from "$INIT")
  local compile=()
  [ "${COMPILE:-0}" = 1 ] && [ "$m" != fashion-cnn ] && compile=(--compile)
  $PY -m bigain.models.train --model "$m" --out "$WORK/$m" --data "$DATA" --device "${DEVICE:-cuda}" --resume \
      --max-minutes "$mins" --log-every 250 --checkpoint-minutes 2 "${compile[@]}" "${extra[@]}" ${TRAIN_ARGS:-} > "$OUTDIR/$m.log" 2>&1
  local rc=$?
  if [ $rc != 0 ] && [ ${#compile[@]} = 1 ] && [ ! -d "$WORK/$m/checkpoints" ]; then
    local left
    left=$(awk -v m="$mins" -v s=$((SECONDS - start)) 'BEGIN { printf "%.2f", m - s / 60 - 0.2 }')
    echo "$m: the compiled run failed (exit $rc); retrying without --compile for $left minutes" | tee -a "$OUTDIR/$m.log"
    $PY -m bigain.models.train --model "$m" --out "$WORK/$m" --data "$DATA" --device "${DEVICE:-cuda}" --resume \
        --max-minutes "$left" --log-every 250 --checkpoint-minutes 2 "${extra[@]}" ${TRAIN_ARGS:-} >> "$OUTDIR/$m.log" 2>&1
    rc=$?
  fi
  echo "$m exited with $rc" | tee -a "$OUTDIR/$m.log"
}
for m in $MODELS; do
  if [ "$m" = fashion-cnn ]; then train "$m" "$MINC" & else train "$m" "$MIN" & fi
done
wait
for m in $MODELS; do
  if [ -f "$WORK/$m/train_config.json" ]; then
    (cd "$WORK/$m" && tar cf - --exclude checkpoints --exclude '*.tmp' .) | split -b 15M - "$OUTDIR/$m.tar.part-"
  fi
  grep -v 'it/s\]\|s/it\]' "$OUTDIR/$m.log" | tail -4
done
if [ "${EVAL:-0}" -gt 0 ]; then  # quick uncompressed accuracy check with the whole package
  for m in $MODELS; do
    [ "$m" = fashion-cnn ] || [ ! -f "$WORK/$m/config.json" ] && continue
    PYTHONPATH=$PWD/src${BASE_PYTHONPATH:+:$BASE_PYTHONPATH} timeout -s KILL "${EVAL_SECONDS:-120}" \
      $PY -m bigain.cli classify --model "$WORK/$m" --limit "$EVAL" --out "$WORK/$m-eval" --batch-size 2400 \
      --images-per-group 32 --dtype bf16 --device "${DEVICE:-cuda}" --no-progress > "$OUTDIR/$m.eval.log" 2>&1
    echo "$m eval exited with $?"; tail -3 "$OUTDIR/$m.eval.log"
  done
fi
ls -la "$OUTDIR"
