#!/usr/bin/env bash
# A long fuzzing run of tests/test_fuzz.py: fresh random seeds (not CI's fixed ones) and
# many examples per target, with hypothesis's statistics (examples run, passing,
# failing, invalid) per target. Run from anywhere, with fastmlp and its test extras
# installed:
#     bash benches/fuzz_long.sh [EXAMPLES]      # default 5000 per target
# A failure prints the shrunk input and a @reproduce_failure line to replay it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "${TMPDIR:-/tmp}"  # import the installed fastmlp, not the source folder
FUZZ_LONG=1 FUZZ_EXAMPLES="${1:-5000}" pytest -q -p no:cacheprovider \
    --hypothesis-show-statistics "$here/tests/test_fuzz.py"
