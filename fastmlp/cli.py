"""The ``fastmlp`` command: train, evaluate, gradcheck, compare, bench, info."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from . import datasets, metrics, preprocessing, recipes, threads
from ._util import comma_list, write_json
from ._version import __version__
from .backends import BACKENDS, available_backends, default_backends
from .functions import ACTIVATIONS, LOSS_OUTPUTS
from .gradcheck import gradcheck
from .model import MLP, TRAINERS, load
from .tools import bench, compare, machine, profile

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _dataset_name(args):
    """--dataset, else guessed from the --data folder's name, else mnist."""
    if args.dataset:
        return args.dataset
    if args.data and "fashion" in os.path.basename(os.path.normpath(args.data)).lower():
        return "fashion-mnist"
    return "mnist"


def _report(model, x_test, y_test, dataset, out):
    scores = model.evaluate(x_test, y_test)
    pred = model.predict(x_test)
    print(f"\ntest loss: {scores['loss']:.4f} - test accuracy: {scores['accuracy']:.4f}",
          file=out)
    names = datasets.CLASS_NAMES.get(dataset)
    if model.layers[-1] == 10 and names:
        print(metrics.classification_report(y_test, pred, target_names=names), file=out)
    return scores, pred


# --------------------------------------------------------------------------- train
def cmd_train(args, out):
    recipe = recipes.get(args.recipe)
    if args.threads:
        threads.set_num_threads(args.threads)
    args.dataset = _dataset_name(args)
    (x, y), (xt, yt) = datasets.load(args.dataset, args.data)
    dtype = args.dtype or recipe.dtype
    x, xt = recipe.inputs(x, dtype), recipe.inputs(xt, dtype)
    model = recipe.build(backend=args.backend, dtype=dtype, seed=args.seed,
                         n_inputs=int(np.prod(x.shape[1:])))
    model.meta["dataset"] = args.dataset
    fit_args = recipe.fit_args(trainer=args.trainer)
    if args.diff_step is not None:
        fit_args["h"] = args.diff_step
    if args.epochs is not None:
        fit_args["epochs"] = args.epochs
    if args.batch_size is not None:
        fit_args["batch_size"] = args.batch_size
    print(f"fastmlp {__version__}: recipe {recipe.name} on {args.dataset} "
          f"({len(x)} train, {len(xt)} test), backend {args.backend}, {dtype}, "
          f"{threads.get_num_threads()} threads, trainer {args.trainer}", file=out)
    model.summary(print_fn=lambda text: print(text, file=out))
    history = model.fit(x, recipe.targets(y, dtype), validation_split=args.validation_split,
                        verbose=args.verbose, **fit_args)
    if history.interrupted:
        print(f"\ninterrupted: keeping the weights of {history.steps} completed steps",
              file=out)
    scores, _ = _report(model, xt, yt, args.dataset, out)
    if args.save:
        model.save(args.save)
        print(f"model saved to {args.save}", file=out)
    if args.json:
        write_json(args.json, {
            "recipe": recipe.name, "backend": args.backend, "trainer": args.trainer,
            "dataset": args.dataset,
            "dtype": dtype, "threads": threads.get_num_threads(),
            "epochs": len(history.epoch), "steps": history.steps,
            "interrupted": history.interrupted,
            "test_accuracy": scores["accuracy"], "test_loss": scores["loss"],
            "epoch_seconds": history.epoch_seconds, "history": history.history,
        })
    return EXIT_INTERRUPTED if history.interrupted else 0


# --------------------------------------------------------------------------- evaluate
def cmd_evaluate(args, out):
    model = load(args.model, backend=args.backend)
    dataset = args.dataset or model.meta.get("dataset", "mnist")
    scaling = args.scaling or model.meta.get("scaling", "unit")
    _, (xt, yt) = datasets.load(dataset, args.data)
    xt = preprocessing.scale(xt, scaling, model.dtype)
    print(f"model {args.model}: layers {model.layers}, backend {model.backend}; "
          f"{dataset} test set ({len(xt)} images), inputs scaled '{scaling}'", file=out)
    _, pred = _report(model, xt, yt, dataset, out)
    if args.misclassified:
        rows = metrics.misclassified(yt, pred)
        print(f"\n{len(rows)} misclassified; the first {min(len(rows), args.misclassified)} "
              f"(index, label, prediction):", file=out)
        for row in rows[:args.misclassified]:
            print(f"{row[0]:>6} {row[1]:>6} {row[2]:>6}", file=out)
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
    result = compare.run(args.data, _dataset_name(args), samples=args.samples,
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

    p = sub.add_parser("train", help="train a recipe and report test accuracy")
    p.add_argument("--recipe", required=True, choices=tuple(recipes.RECIPES))
    p.add_argument("--data", metavar="DIR",
                   help="folder with the IDX files or CSV pair (default: $FASTMLP_DATA, "
                        "the cache, then download)")
    p.add_argument("--dataset", choices=tuple(datasets.DATASETS),
                   help="default: fashion-mnist when the --data folder's name says "
                        "'fashion', else mnist")
    p.add_argument("--backend", choices=BACKENDS, default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), help="default: the recipe's")
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--batch-size", type=int, help="default: the recipe's")
    p.add_argument("--seed", type=int, help="default: the recipe's")
    p.add_argument("--validation-split", type=float, default=0.0, metavar="F")
    p.add_argument("--threads", type=int, help="threads of the cpu backend")
    p.add_argument("--trainer", choices=TRAINERS, default="backprop",
                   help="numerical: the lecture's central differences on every parameter, "
                        "no backprop; lecture-backprop: the same steps by backprop "
                        "(both: the lecture recipe's network only)")
    p.add_argument("--diff-step", type=float, metavar="H",
                   help="step of the numerical trainer's central differences (default 1e-4)")
    p.add_argument("--save", metavar="FILE", help="write the trained model here (.npz)")
    p.add_argument("--json", metavar="FILE", help="write the results here as JSON")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a saved model on a test set")
    p.add_argument("model", metavar="FILE")
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--dataset", choices=tuple(datasets.DATASETS),
                   help="default: the one the model was trained on")
    p.add_argument("--backend", choices=BACKENDS, help="default: the model's")
    p.add_argument("--scaling", choices=preprocessing.SCALINGS,
                   help="default: the recipe's the model was trained with")
    p.add_argument("--misclassified", type=int, default=0, metavar="N",
                   help="list the first N misclassified test images")
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
    except (OSError, ValueError, TypeError, RuntimeError,
            FloatingPointError) as exc:
        # Bad input, missing or malformed files, failed downloads: one line, no traceback.
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
