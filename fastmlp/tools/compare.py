"""The lecture recipe trained by the numerical derivative and by backprop, side by side.

From the same initial weights and the same samples, in the order ``fit``
shuffles them:

* the derivatives at the initial weights: the largest difference between the
  numerical derivative and backprop on a few samples, relative to the largest
  backprop derivative (central differences are off by O(h^2));
* the naive NumPy numerical derivative (the lecture's code) timed on a few
  samples, and the weights it reaches set against the compiled trainer's after
  the same steps;
* seconds per sample, epoch time and test accuracy of the compiled numerical
  trainer, of backprop taking the same steps in the same block order, and of
  backprop as ``fit`` does it (every block stepped from the same point), the
  three alternating when repeated (medians reported);
* the test images the numerical trainer gets wrong (index, label, prediction).

    fastmlp compare --recipe lecture --data ../shared/data/fashion-mnist
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from .. import datasets, metrics, numerical, recipes, threads
from .._util import integer

TRAINERS = (
    ("numerical", "numerical, compiled", dict(trainer="numerical")),
    ("lecture-backprop", "backprop, same block order", dict(trainer="lecture-backprop")),
    ("backprop", "backprop, fit (cpu backend)", dict(trainer="backprop")),
)


def add_arguments(p):
    p.add_argument("--recipe", default="lecture", choices=("lecture",),
                   help="the recipe (the numerical trainer supports the lecture's network)")
    p.add_argument("--data", metavar="DIR", help="folder with the IDX files or CSV pair")
    p.add_argument("--dataset", choices=tuple(datasets.DATASETS),
                   help="default: fashion-mnist when the --data folder's name says "
                        "'fashion', else mnist")
    p.add_argument("--samples", type=int, metavar="N",
                   help="training samples per epoch (default: all)")
    p.add_argument("--naive-samples", type=int, default=3, metavar="N",
                   help="samples to time the naive NumPy numerical derivative on (default 3)")
    p.add_argument("--gradient-samples", type=int, default=10, metavar="N",
                   help="samples to compare the derivatives on (default 10)")
    p.add_argument("--repeats", type=int, default=1, metavar="R",
                   help="epochs per trainer, alternating; medians are reported (default 1)")
    p.add_argument("--diff-step", type=float, default=numerical.DEFAULT_H, metavar="H",
                   help="step h of the central differences (default 1e-4)")
    p.add_argument("--seed", type=int, help="default: the recipe's")
    p.add_argument("--threads", type=int, help="threads of the compiled kernels")
    p.add_argument("--misclassified", type=int, default=20, metavar="N",
                   help="list the first N test images the numerical trainer gets wrong")
    p.add_argument("--json", metavar="FILE", help="write the results here as JSON")


def run(data, dataset, samples=None, naive_samples=3, gradient_samples=10, repeats=1,
        h=numerical.DEFAULT_H, seed=None, misclassified=20, out=None) -> dict:
    """Measure everything the module docstring lists; returns the results as a dict."""
    for name, value, low in (("--samples", samples, 1), ("--naive-samples", naive_samples, 0),
                             ("--gradient-samples", gradient_samples, 0),
                             ("--repeats", repeats, 1), ("--misclassified", misclassified, 0)):
        if value is not None:
            integer(name, value, low)
    h = numerical.check_h(h)
    recipe = recipes.get("lecture")
    (x, y), (xt, yt) = datasets.load(dataset, data)
    x = recipe.inputs(x.reshape(len(x), -1), "float64")
    xt = recipe.inputs(xt.reshape(len(xt), -1), "float64")
    t = recipe.targets(y, "float64")
    n = len(x) if samples is None else min(samples, len(x))
    x, t = x[:n], t[:n]

    def build():
        return recipe.build(seed=seed, n_inputs=x.shape[1])

    start = build()
    # The order fit shuffles the samples in, for the first epoch of a fresh model.
    order = build().shuffle_rng.permutation(n)
    say = (lambda *a: print(*a, file=out)) if out is not None else (lambda *a: None)
    say(f"fastmlp compare: lecture recipe on {dataset}, {n} training samples in the order "
        f"fit shuffles them (seed {start.seed}), float64, "
        f"{_count(threads.get_num_threads(), 'thread')}, h = {h:g}")

    # Derivatives at the initial weights.
    names = start.param_names
    block_worst = dict.fromkeys(names, 0.0)
    for i in order[:gradient_samples]:
        num = numerical.gradients(start, x[i], t[i], h)
        _, bp = start.loss_and_gradients(x[i:i + 1], t[i:i + 1])
        scale = max(np.abs(g).max() for g in bp)
        for name, a, b in zip(names, num, bp):
            block_worst[name] = max(block_worst[name], float(np.abs(a - b).max() / scale))
    grad_diff = max(block_worst.values()) if gradient_samples else None

    # The naive trainer on a few samples, and the compiled one on the same.
    naive_seconds = naive_diff = None
    if naive_samples:
        naive, compiled = build(), build()
        first = order[:naive_samples]
        t0 = time.perf_counter()
        for i in first:
            numerical.naive_step(naive, x[i], t[i], recipe.optimizer_args["lr"], h)
        naive_seconds = (time.perf_counter() - t0) / len(first)
        for i in first:
            numerical.step(compiled, x[i], t[i], recipe.optimizer_args["lr"], h)
        naive_diff = max(float(np.abs(a - b).max())
                         for a, b in zip(naive.get_weights(), compiled.get_weights()))

    # The three trainers, alternating.
    seconds = {key: [] for key, _, _ in TRAINERS}
    accuracy, predictions = {}, {}
    for _ in range(repeats):
        for key, _, kwargs in TRAINERS:
            model = build()
            extra = {"h": h} if key == "numerical" else {}
            history = model.fit(x, t, verbose=0, **recipe.fit_args(), **kwargs, **extra)
            seconds[key].append(history.epoch_seconds[0])
            pred = model.predict(xt)
            predictions[key] = pred
            accuracy[key] = float((pred == yt).mean())

    wrong = metrics.misclassified(yt, predictions["numerical"])
    rows = []
    if naive_seconds is not None:
        rows.append({"trainer": "numerical, naive NumPy", "key": "naive",
                     "seconds_per_sample": naive_seconds, "epoch_seconds": naive_seconds * n,
                     "measured_samples": len(first), "test_accuracy": None})
    for key, label, _ in TRAINERS:
        epoch = statistics.median(seconds[key])
        rows.append({"trainer": label, "key": key, "seconds_per_sample": epoch / n,
                     "epoch_seconds": epoch, "measured_samples": n * repeats,
                     "test_accuracy": accuracy[key]})
    result = {
        "recipe": "lecture", "dataset": dataset, "samples": n, "seed": start.seed, "h": h,
        "threads": threads.get_num_threads(), "repeats": repeats,
        "gradient_samples": gradient_samples, "gradient_max_rel_diff": grad_diff,
        "gradient_max_rel_diff_per_block": block_worst if gradient_samples else None,
        "naive_vs_compiled_max_weight_diff": naive_diff,
        "naive_steps": naive_samples, "trainers": rows, "epoch_seconds_all": seconds,
        "test_samples": len(yt),
        "misclassified": [[int(i), int(a), int(b)] for i, a, b in wrong],
    }
    if out is not None:
        print_report(result, misclassified, out)
    return result


def _count(n, noun):
    return f"{n} {noun}{'s' * (n != 1)}"


def _duration(seconds):
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"


def print_report(r, misclassified, out):
    say = lambda *a: print(*a, file=out)  # noqa: E731
    if r["gradient_max_rel_diff"] is not None:
        blocks = ", ".join(f"{k} {v:.1e}"
                           for k, v in r["gradient_max_rel_diff_per_block"].items())
        say(f"\nderivatives at the initial weights on {r['gradient_samples']} samples: largest "
            f"|numerical - backprop| / largest |backprop| = {r['gradient_max_rel_diff']:.1e} "
            f"({blocks})")
    if r["naive_vs_compiled_max_weight_diff"] is not None:
        say(f"naive and compiled numerical trainers after the same {r['naive_steps']} steps: "
            f"largest weight difference {r['naive_vs_compiled_max_weight_diff']:.1e}")
    say(f"\n{'trainer':<38} {'s/sample':>10} {'epoch of ' + str(r['samples']):>16} "
        f"{'test accuracy':>14}")
    for row in r["trainers"]:
        acc = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
        note = f" ({_count(row['measured_samples'], 'sample')})" if row["key"] == "naive" \
            else ""
        say(f"{row['trainer'] + note:<38} {row['seconds_per_sample']:>10.3g} "
            f"{_duration(row['epoch_seconds']):>16} {acc:>14}")
    by = {row["key"]: row for row in r["trainers"]}
    if "naive" in by:
        say(f"\nthe compiled numerical derivative is "
            f"{by['naive']['seconds_per_sample'] / by['numerical']['seconds_per_sample']:,.0f}x "
            f"faster than the naive one")
    num = by["numerical"]["test_accuracy"]
    say(f"test accuracy, numerical - backprop: "
        f"{100 * (num - by['lecture-backprop']['test_accuracy']):+.2f} points (same block "
        f"order), {100 * (num - by['backprop']['test_accuracy']):+.2f} points (fit, every "
        f"block stepped from the same point)")
    wrong = r["misclassified"]
    shown = wrong[:misclassified]
    say(f"\nthe numerical trainer misclassifies {len(wrong)} of {r['test_samples']} test "
        f"images" + (f"; the first {len(shown)} (index, label, prediction):" if shown else ""))
    for i, a, b in shown:
        say(f"{i:>6} {a:>6} {b:>6}")
