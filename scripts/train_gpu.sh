#!/usr/bin/env bash
# Train the three embedded Fashion-MNIST models concurrently on one GPU, each within a time budget,
# and pack each model's final folder (EMA weights, config.json, train_config.json) as a tar in OUTDIR.
#
#   scripts/train_gpu.sh OUTDIR [DIFFUSION_MINUTES=7] [CNN_MINUTES=2.5]
#
# Needs the Fashion-MNIST IDX files (`apt-get install dataset-fashion-mnist`, or set
# BIGAIN_FASHION_MNIST_DIR to a folder holding them) and diffusers (or its wheel in .whl/).
# Runs the package from a private copy of src/bigain/{data,models}, so it needs nothing else of bigain.
set -uo pipefail
OUTDIR=${1:?usage: scripts/train_gpu.sh OUTDIR [DIFFUSION_MINUTES] [CNN_MINUTES]}
MIN=${2:-7}
MINC=${3:-2.5}
DATA=${BIGAIN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
PY=${PYTHON:-python3}
WORK=${BIGAIN_TRAIN_WORK:-/tmp/bigain_train}
mkdir -p "$OUTDIR" "$WORK"
export PYTHONUNBUFFERED=1
if ! $PY -c "import diffusers" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PKG=/tmp/bigain_pkg
rm -rf "$PKG" && mkdir -p "$PKG/bigain" && cp -r src/bigain/data src/bigain/models "$PKG/bigain/" && touch "$PKG/bigain/__init__.py"
export PYTHONPATH=$PKG${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
$PY -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"

train() {  # model minutes extra-args...
  local m=$1 mins=$2; shift 2
  $PY -m bigain.models.train --model "$m" --out "$WORK/$m" --data "$DATA" --device cuda \
      --max-minutes "$mins" --log-every 250 --checkpoint-minutes 3 "$@" > "$OUTDIR/$m.log" 2>&1
  echo "$m exited with $?" | tee -a "$OUTDIR/$m.log"
}
train fashion-dit "$MIN" &
train fashion-unet "$MIN" &
train fashion-cnn "$MINC" &
wait
for m in fashion-dit fashion-unet fashion-cnn; do
  if [ -f "$WORK/$m/train_config.json" ]; then
    (cd "$WORK/$m" && tar cf "$OUTDIR/$m.tar" --exclude checkpoint.pt --exclude '*.tmp' .)
  fi
  grep -v 'it/s\]\|s/it\]' "$OUTDIR/$m.log" | tail -4
done
ls -la "$OUTDIR"
