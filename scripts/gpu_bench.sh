#!/usr/bin/env bash
# The GPU latency benchmark (benchmarks/gpu_latency.py), prepared for a GPU machine that has torch
# (CUDA) and triton but neither diffusers nor tomesd, and no network.
#
# 1. Here, on a machine with network access to PyPI, once: fill the carried wheel folder .whl/
#    (ignored by git) with what the GPU image lacks, at the versions of this checkout's environment:
#        scripts/gpu_bench.sh wheels
#    which runs, for diffusers, tomesd and importlib_metadata (diffusers' one missing dependency):
#        pip download --no-deps --only-binary=:all: -d .whl diffusers==X tomesd==Y importlib_metadata==Z
#    All three are pure-Python wheels. Check the size that travels (64 MiB limit, tree included):
#        du -sh .whl
# 2. On the GPU machine, one part per call, each well under 7 minutes (the part stops starting new
#    cases after --budget-s, 330 s by default; `timeout` is the hard stop):
#        scripts/gpu_bench.sh sync              OUT   # first: no host sync in a patched forward (every
#                                                     # method x family, sync debug mode "error"), and
#                                                     # CUDA-graph capture of each method (seconds)
#        scripts/gpu_bench.sh eager-unet        OUT   # SD2 and SDXL cases
#        scripts/gpu_bench.sh eager-dit         OUT   # PixArt, DiT-XL/2, SD3-medium, Flux-dev
#        scripts/gpu_bench.sh eager-video       OUT   # Wan 2.1-1.3B 480p; a 4-block stack of Wan 2.1-14B at 720p
#        scripts/gpu_bench.sh compiled-dit      OUT   # every method compiled fullgraph on DiT-XL/2 256 b64
#        scripts/gpu_bench.sh compiled-sd2-512  OUT   # SD2 512 b2 under CUDA graphs (reduce-overhead)
#        scripts/gpu_bench.sh compiled-rest     OUT   # PixArt b2, SD2 1024 b2 (CUDA graphs), SD2 1024 b8
#        scripts/gpu_bench.sh classify          OUT   # diffusion-classifier images/s on the SD2 U-Net
#    with the device tool: run(command="scripts/gpu_bench.sh eager-unet $OUT", carry=[".whl"],
#    timeout_s=540). Compiling a full-size model with Inductor takes about a minute per setting, so
#    the compiled parts are split by case; compiled-rest may need two calls (it resumes).
#    A device session has 15 minutes in all: plan two parts per session, in the order above.
# 3. Every call copies benchmarks/results/gpu-latency.{json,md} into OUT. Copy them back into
#    benchmarks/results/ here before the next call: the JSON travels with the working tree, and
#    finished cases are skipped, so a part cut short by the timeout is completed by running it again.
#    `python benchmarks/gpu_latency.py --report` rewrites the markdown (GPU, versions, targets).
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-}
out=${2:-${OUT:-/tmp/gpu-bench-out}}
PY=${PYTHON:-python3}
LIMIT=${LIMIT:-420}

if [ "$what" = wheels ]; then
  set -e
  PY=${PYTHON:-.venv/bin/python}
  ver() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
  mkdir -p .whl
  $PY -m pip download -q --no-deps --only-binary=:all: -d .whl "diffusers==$(ver diffusers)" \
    "tomesd==$(ver tomesd)" "importlib_metadata==$(ver importlib_metadata)"
  ls -la .whl
  du -sh .whl
  exit 0
fi

case "$what" in
  sync) args=(--part sync) ;;
  eager-unet) args=(--part eager --cases sd2-512-b2 sd2-1024-b2 sd2-1024-b8 sd2-2048-b1 sdxl-1024-b2 sdxl-1024-b8) ;;
  eager-dit) args=(--part eager --cases pixart-1024-b2 pixart-1024-b8 dit-256-b8 dit-256-b64 dit-512-b16 sd3-1024-b2 flux-1024-b1) ;;
  eager-video) args=(--part eager --cases wan1.3b-480p-b1 wan14b-720p-4blocks-b1) ;;
  eager) args=(--part eager) ;;
  compiled) args=(--part compiled --budget-s 200) ;;
  compiled-dit) args=(--part compiled --cases dit-256-b64) ;;
  compiled-sd2-512) args=(--part compiled --cases sd2-512-b2) ;;
  compiled-rest) args=(--part compiled --budget-s 200 --cases pixart-1024-b2 sd2-1024-b2 sd2-1024-b8) ;;
  classify) args=(--part classify) ;;
  report) args=() ;;
  *) echo "usage: scripts/gpu_bench.sh wheels | sync | eager-unet | eager-dit | eager-video | eager | compiled-dit | compiled-sd2-512 |" \
       "compiled-rest | compiled | classify | report [OUT]" >&2; exit 2 ;;
esac

if ! $PY -c "import diffusers, tomesd" 2>/dev/null; then
  if [ ! -d .whl ]; then echo "diffusers/tomesd missing and no .whl folder carried (see the top of this script)" >&2; exit 1; fi
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
rc=0
if [ ${#args[@]} -gt 0 ]; then
  timeout "$LIMIT" $PY benchmarks/gpu_latency.py "${args[@]}" 2>&1 | tee "$out/gpu_latency.log"
  rc=${PIPESTATUS[0]}
fi
$PY benchmarks/gpu_latency.py --report
cp benchmarks/results/gpu-latency.json benchmarks/results/gpu-latency.md "$out/" 2>/dev/null
exit "$rc"
