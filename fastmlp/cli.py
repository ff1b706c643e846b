"""The ``fastmlp`` command: train, evaluate, gradcheck, compare, bench, info."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from . import recipes, threads
from ._util import comma_list, write_json
from ._version import __version__
from .backends import BACKENDS, available_backends, default_backends
from .functions import ACTIVATIONS, LOSS_OUTPUTS
from .gradcheck import gradcheck
from .model import MLP
from .tools import bench, compare, machine, profile, train

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------- train
def cmd_train(args, out):
    history = train.train(args, out)
    return EXIT_INTERRUPTED if history.interrupted else 0


# --------------------------------------------------------------------------- evaluate
def cmd_evaluate(args, out):
    train.evaluate(args, out)
    return 0


# --------------------------------------------------------------------------- gradcheck
def gradcheck_networks(recipe_names, pairs=True):
    """(label, MLP arguments) for each network ``fastmlp gradcheck`` checks."""
    nets = []
    for name in recipe_names:
        r = recipes.get(name)
        nets.append((f"recipe {name}", dict(layers=r.layers, activations=r.activations,
                                            loss=r.loss, init=r.init, seed=r.seed)))
    if pairs:
        for loss, outputs in LOSS_OUTPUTS.items():
            for out_act in outputs:
                for hidden in ACTIVATIONS:
                    nets.append((f"{hidden}-{out_act} {loss}",
                                 dict(layers=(13, 9, 7, 5), activations=(hidden, hidden, out_act),
                                      loss=loss, init="xavier", seed=7)))
    return nets


def cmd_gradcheck(args, out):
    backends = comma_list(args.backend or ",".join(default_backends()), "backend", BACKENDS)
    recipe_names = comma_list(args.recipe, "recipe", tuple(recipes.RECIPES)) if args.recipe \
        else []
    rng = np.random.default_rng(args.seed)
    worst_all = 0.0
    print(f"gradcheck: backprop against central differences (eps {args.eps:g}) in float64; "
          f"error = max |numeric - backprop| / max |gradient| per parameter array "
          f"(up to {args.entries} entries each), {args.samples} random samples", file=out)
    print(f"{'backend':<8} {'network':<40} {'worst':>10}  per parameter", file=out)
    for backend in backends:
        for label, cfg in gradcheck_networks(recipe_names, pairs=not args.no_pairs):
            model = MLP(backend=backend, dtype="float64", **cfg)
            x = rng.random((args.samples, cfg["layers"][0]))
            y = rng.integers(0, cfg["layers"][-1], args.samples)
            errors = gradcheck(model, x, y, eps=args.eps, max_entries=args.entries)
            worst = max(errors.values())
            worst_all = max(worst_all, worst)
            detail = " ".join(f"{k}={v:.1e}" for k, v in errors.items())
            flag = "" if worst < args.tol else "  FAIL"
            print(f"{backend:<8} {label:<40} {worst:>10.2e}  {detail}{flag}", file=out)
    verdict = "PASS" if worst_all < args.tol else "FAIL"
    print(f"{verdict}: largest error {worst_all:.2e} (tolerance {args.tol:g})", file=out)
    return 0 if worst_all < args.tol else 1


# --------------------------------------------------------------------------- compare
def cmd_compare(args, out):
    if args.threads:
        threads.set_num_threads(args.threads)
    result = compare.run(args.data, train.dataset_name(args), samples=args.samples,
                         naive_samples=args.naive_samples,
                         gradient_samples=args.gradient_samples, repeats=args.repeats,
                         h=args.diff_step, seed=args.seed, misclassified=args.misclassified,
                         out=out)
    if args.json:
        write_json(args.json, result)
    return 0


# --------------------------------------------------------------------------- bench
def cmd_bench(args, out):
    bench.main_args(args, out)
    return 0


# --------------------------------------------------------------------------- profile
def cmd_profile(args, out):
    profile.main_args(args, out)
    return 0


# --------------------------------------------------------------------------- info
def info_dict():
    info = machine.describe()
    info = {k: info[k] for k in ("fastmlp", "python", "numpy", "platform", "machine",
                                 "cpu_simd", "gemm_kernels", "openmp", "threads", "cpu_count")}
    info["backends"] = {k: ("available" if v is None else v)
                        for k, v in available_backends().items()}
    # The GPU's facts under "gpu..." keys, when the cuda backend loads.
    info.update({("gpu" if k == "gpu" else f"gpu_{k}"): v for k, v in machine.gpu().items()})
    return info


def cmd_info(args, out):
    info = info_dict()
    if args.json:
        print(json.dumps(info, indent=2), file=out)
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "backends":
            for name, state in value.items():
                print(f"{'backend ' + name:<{width + 8}}  {state}", file=out)
        else:
            print(f"{key:<{width + 8}}  {value}", file=out)
    return 0


# --------------------------------------------------------------------------- parser
def build_parser():
    parser = argparse.ArgumentParser(prog="fastmlp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe or any network; report test accuracy",
                       description=train.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a saved model on a test set")
    train.add_evaluate_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("gradcheck", help="check backprop against the numerical derivative")
    p.add_argument("--backend", default=None,
                   help="comma-separated (default: numpy, cpu, and cuda where a GPU is)")
    p.add_argument("--recipe", default=",".join(recipes.RECIPES),
                   help="recipe networks to check, comma-separated ('' for none)")
    p.add_argument("--no-pairs", action="store_true",
                   help="skip the sweep over activation/loss pairs on a small network")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--entries", type=int, default=32)
    p.add_argument("--eps", type=float, default=1e-6)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_gradcheck)

    p = sub.add_parser("compare", help="the lecture recipe by numerical derivative and by "
                       "backprop: speed, agreement, accuracy",
                       description=compare.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_arguments(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="time the cpu backend against NumPy and PyTorch",
                       description=bench.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("profile", help="per-kernel times, GFLOP/s and GB/s of a training "
                       "step on the cpu and cuda backends, by batch size",
                       description=profile.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    profile.add_arguments(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("info", help="version, backends, threads, SIMD level and GPU")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None, out=None):
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        code = args.func(args, out)
    except (OSError, ValueError, TypeError, RuntimeError, FloatingPointError,
            MemoryError) as exc:
        # Bad input, missing or malformed files, failed downloads, a model larger than
        # the memory: one line, no traceback.
        print(f"fastmlp: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fastmlp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.command == "train":
        print(f"done in {time.perf_counter() - start:.1f}s", file=out)
    return code


if __name__ == "__main__":
    sys.exit(main())
