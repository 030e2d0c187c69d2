#!/usr/bin/env bash
# Build the two ignored folders a GPU run carries with the working tree (run this here, once, with
# network access to PyPI and the Debian mirror):
#   .whl/       wheels of what the GPU image lacks: diffusers (pure Python) and importlib_metadata.
#               The image already has torch, triton, numpy, scipy, safetensors, huggingface-hub,
#               pillow, tqdm and matplotlib. Versions follow this checkout's environment.
#   .gpu/data/  the Fashion-MNIST training split as IDX files (Debian's dataset-fashion-mnist; the
#               images recompressed with xz), needed only by training (the test split ships inside
#               the package). DATA=0 skips it.
# Then: run(command="scripts/train_gpu.sh $OUT ...", carry=[".whl", ".gpu"]) and, for the sweep,
# carry=[".whl"]. The working tree plus what is carried must stay under the transfer limit
# (64 MiB): check with `du -shc .whl .gpu` and `git ls-files -z | xargs -0 du -cb | tail -1`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
ver() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: -d .whl "diffusers==$(ver diffusers)" \
  "importlib_metadata==$(ver importlib_metadata)"
if [ "${DATA:-1}" = 1 ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null && dpkg -x dataset-fashion-mnist_*.deb x)
  mkdir -p .gpu/data
  find "$tmp/x" -name 'train-*-idx*' -exec cp {} .gpu/data/ \;
  rm -rf "$tmp"
  # xz instead of gzip: 22.6 instead of 26.4 MB for the images (bigain reads both; about a minute here)
  $PY -c "import gzip, lzma, pathlib; p = pathlib.Path('.gpu/data/train-images-idx3-ubyte.gz'); \
pathlib.Path('.gpu/data/train-images-idx3-ubyte.xz').write_bytes(lzma.compress(gzip.decompress(p.read_bytes()), preset=9 | lzma.PRESET_EXTREME)); p.unlink()"
fi
ls -la .whl .gpu/data 2>/dev/null
du -shc .whl .gpu 2>/dev/null | tail -1
