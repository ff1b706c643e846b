#!/usr/bin/env bash
# Everything the cuda backend must show on an NVIDIA GPU, in one call, from the
# repository root of a machine with CUDA, numba-cuda, PyTorch and a C compiler:
# build the extension in place, run the cuda tests on the GPU (the gpu-marked
# Fashion-MNIST parity test included), `fastmlp profile` for both backends, and
# the epoch-time and throughput comparison with PyTorch CUDA.
#
#   OUT=results DATA=path/to/fashion-mnist bash benches/gpu_device_run.sh
#
# DATA defaults to .devdata/fashion-mnist (a copy carried beside the sources, which
# .gitignore ignores: `mkdir -p .devdata && cp -r ../shared/data/fashion-mnist .devdata/`),
# else ../shared/data/fashion-mnist. Results go to $OUT (default gpu-results). It takes
# a few minutes: most of it compiling the kernels and the CPU side of the profile.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DATA=${DATA:-}
if [ -z "$DATA" ]; then
    if [ -d .devdata/fashion-mnist ]; then DATA=$PWD/.devdata/fashion-mnist
    else DATA=$PWD/../shared/data/fashion-mnist; fi
fi
# The tests look for the data in ../shared/data.
if [ ! -d ../shared/data/fashion-mnist ] && [ -d "$DATA" ]; then
    mkdir -p ../shared/data && ln -sfn "$DATA" ../shared/data/fashion-mnist
fi

step() { echo; echo "=== $* ($(date +%T))"; }

step machine
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
$PY - <<'PY'
import platform, numpy, numba, torch
from importlib.metadata import version
print("python", platform.python_version(), "numpy", numpy.__version__, "numba", numba.__version__,
      "numba-cuda", version("numba-cuda"), "torch", torch.__version__, "cuda", torch.version.cuda)
PY

step build
$PY setup.py build_ext --inplace -q 2>&1 | tail -3 || exit 1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -m fastmlp info | tee "$OUT/info.txt"

step "cuda tests on the GPU"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -m "not slow" 2>&1 | tail -15 \
    | tee "$OUT/tests.txt"

step "keras recipe parity on Fashion-MNIST (gpu, slow)"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -m slow -rA 2>&1 | tail -8 \
    | tee -a "$OUT/tests.txt"

step "PyTorch CUDA comparison"
$PY benches/gpu_peers.py --data "$DATA" --json "$OUT/peers.json" 2>&1 | tee "$OUT/peers.txt"

step "fastmlp profile"
$PY -m fastmlp profile --backend cpu,cuda --batch-sizes 32,128,1024,8192 \
    --json "$OUT/profile.json" --plot "$OUT/profile.png" 2>&1 | tee "$OUT/profile.txt"
step done
