#!/usr/bin/env bash
# Install a repaired wheel into a fresh virtual environment and train with it, where
# there is no C compiler and no system OpenMP runtime: a private mount namespace
# covers gcc, cc, c++ and the system's libgomp with empty files, so that only the
# wheel's own copy of libgomp can load.
#
#   sudo bash scripts/check_wheel_without_compiler.sh wheelhouse/fastmlp-*.whl
#
# Needs root (for unshare --mount) and pip's access to PyPI for NumPy.
set -euo pipefail
WHEEL=$(realpath "$1")
PYTHON=${PYTHON:-python3}
exec unshare --mount --propagation private bash -s "$WHEEL" "$PYTHON" <<'INNER'
set -euo pipefail
WHEEL=$1 PYTHON=$2
for f in /usr/bin/gcc* /usr/bin/cc /usr/bin/c++ /usr/bin/g++* /usr/bin/x86_64-linux-gnu-gcc* \
         /usr/bin/clang* /usr/lib/x86_64-linux-gnu/libgomp.so*; do
    [ -e "$f" ] && mount --bind /dev/null "$f"
done
echo "== no compiler: $(gcc --version 2>&1 | head -1 || true)"
echo "== system libgomp: $(wc -c < /usr/lib/x86_64-linux-gnu/libgomp.so.1) bytes"
VENV=$(mktemp -d)/venv
"$PYTHON" -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet --only-binary=:all: "$WHEEL"
echo "== installed: $(pip list 2>/dev/null | grep -iE '^(fastmlp|numpy) ' | tr -s ' ' | paste -sd, -)"
cd "$(mktemp -d)"
python - <<'PY'
import glob, os
import numpy as np
import fastmlp
import fastmlp._cpu as ext
libs = glob.glob(os.path.join(os.path.dirname(fastmlp.__file__), os.pardir, "fastmlp.libs", "*"))
print("== bundled:", [os.path.basename(p) for p in libs])
with open("/proc/self/maps") as f:
    gomp = sorted({line.split()[-1] for line in f if "libgomp" in line})
print("== libgomp loaded from:", gomp)
print("== openmp:", fastmlp.threads.openmp_enabled(), "threads:", fastmlp.get_num_threads(),
      "simd:", fastmlp.threads.gemm_level())
rng = np.random.default_rng(0)
x = rng.random((2000, 64)).astype(np.float32)
y = (x[:, :8].sum(1) > 4).astype(int)
m = fastmlp.MLP([64, 32, 2], ["relu", "softmax"], seed=0)
h = m.fit(x, y, epochs=5, batch_size=64, optimizer="adam", verbose=0)
print("== trained: loss", [round(v, 4) for v in h.history["loss"]],
      "accuracy", m.evaluate(x, y)["accuracy"])
PY
INNER
