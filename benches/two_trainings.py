"""Two trainings at once: each training's epoch against the same training alone.

Runs the keras recipe (float32, batch 128, the cpu backend at every core) on
Fashion-MNIST in worker processes: first one alone, then two at once, then one alone
again; each worker fits one epoch ``--epochs`` times and reports the seconds of the
epochs after its first. The ratio is the median epoch of the pair over the median
solo epoch (before and after together). Issue 13 asks for at most 2.3.

    python benches/two_trainings.py --data ../shared/data/fashion-mnist [--epochs 6]
        [--out benches/results/two-trainings-<machine>.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

WORKER = """
import json, sys
import fastmlp
from fastmlp import datasets, recipes
(x, y), _ = datasets.load("fashion-mnist", sys.argv[1], download=False, verbose=False)
r = recipes.get("keras")
model, opt = r.build(), r.make_optimizer()
x, t = r.inputs(x.reshape(len(x), -1)), r.targets(y)
seconds = []
for _ in range(int(sys.argv[2])):
    h = model.fit(x, t, epochs=1, batch_size=r.batch_size, optimizer=opt, verbose=0)
    seconds.append(h.epoch_seconds[0])
print(json.dumps(seconds[1:]))
"""


def run_workers(n: int, data: str, epochs: int) -> list:
    """Start n workers at once; each one's epoch seconds after its first. They run in
    the temporary folder, so that they import the installed fastmlp and not a source
    tree in the current folder."""
    data = os.path.abspath(data)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, data, str(epochs)],
                              stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
             for _ in range(n)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a worker failed (exit {p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def measure(data: str, epochs: int) -> dict:
    before = run_workers(1, data, epochs)[0]
    pair = run_workers(2, data, epochs)
    after = run_workers(1, data, epochs)[0]
    solo = statistics.median(before + after)
    both = statistics.median(pair[0] + pair[1])
    return {"solo_before_s": before, "pair_a_s": pair[0], "pair_b_s": pair[1],
            "solo_after_s": after, "solo_median_s": solo, "pair_median_s": both,
            "ratio": both / solo}


def report(res: dict) -> str:
    def row(xs):
        return " ".join(f"{x:.3f}" for x in xs)

    return "\n".join([
        f"solo (before):  {row(res['solo_before_s'])} s",
        f"pair, A:        {row(res['pair_a_s'])} s",
        f"pair, B:        {row(res['pair_b_s'])} s",
        f"solo (after):   {row(res['solo_after_s'])} s",
        "",
        f"medians: solo {res['solo_median_s']:.3f} s, pair {res['pair_median_s']:.3f} s: "
        f"each training's epoch {res['ratio']:.2f}x its solo epoch."])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the Fashion-MNIST folder")
    p.add_argument("--epochs", type=int, default=6, help="epochs per worker (the first "
                   "is a warm-up)")
    p.add_argument("--out", help="also write the report to this file")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first is a warm-up)")
    text = report(measure(args.data, args.epochs))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
