"""Epoch time of a recipe on several backends, measured side by side in one process.

Each backend trains its own copy of the recipe's model; epochs alternate between the
backends (a warm-up epoch each first), and the table gives medians and ratios to the
first backend named.

    python benches/epoch_time.py --data ../shared/data/fashion-mnist --backends numpy,cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import fastmlp


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="keras")
    p.add_argument("--data", help="folder with the data set (default: the loader's lookup)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--backends", default="numpy,cpu")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per backend")
    p.add_argument("--threads", type=int, help="threads of the cpu backend")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    if args.threads:
        fastmlp.set_num_threads(args.threads)
    recipe = fastmlp.recipes.get(args.recipe)
    (x, y), _ = fastmlp.datasets.load(args.dataset, args.data)
    x, t = recipe.inputs(x), recipe.targets(y)
    backends = args.backends.split(",")
    models = {b: recipe.build(backend=b) for b in backends}
    opts = {b: recipe.make_optimizer() for b in backends}
    fit = recipe.fit_args()
    times = {b: [] for b in backends}
    for rnd in range(args.repeats + 1):
        for b in backends:
            h = models[b].fit(x, t, epochs=1, batch_size=fit["batch_size"], optimizer=opts[b],
                              l2=fit["l2"], verbose=0)
            if rnd:  # round 0 is the warm-up
                times[b].append(h.epoch_seconds[0])
    base = statistics.median(times[backends[0]])
    print(f"recipe {recipe.name}, {len(x)} samples/epoch, batch {fit['batch_size']}, "
          f"{recipe.dtype}; {fastmlp.get_num_threads()} cpu threads; "
          f"{platform.processor() or platform.machine()}, simd {fastmlp.threads.simd_level()}")
    print(f"{'backend':<10}{'median s':>10}{'min s':>10}{'ratio':>8}   epochs (s)")
    rows = {}
    for b in backends:
        med = statistics.median(times[b])
        rows[b] = {"median_s": med, "min_s": min(times[b]), "ratio": med / base,
                   "epochs_s": times[b]}
        print(f"{b:<10}{med:>10.3f}{min(times[b]):>10.3f}{med / base:>8.2f}   "
              + " ".join(f"{s:.3f}" for s in times[b]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"recipe": recipe.name, "threads": fastmlp.get_num_threads(),
                       "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
