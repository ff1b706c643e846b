"""``fastmlp train`` and ``fastmlp evaluate``: a recipe, any network, or a saved model
to resume; early stopping, checkpoints, plots, JSON results.

A recipe sets every value; each flag given replaces the recipe's (without
``--recipe``, the keras recipe's values are the base). ``--resume FILE`` goes on
training a saved model (a ``--checkpoint`` file): its network, optimizer and
shuffling state come from the file, ``--epochs`` more epochs are trained.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from .. import callbacks, datasets, metrics, preprocessing, recipes, threads
from .._util import comma_list, write_json
from .._version import __version__
from ..backends import BACKENDS
from ..fitting import TRAINERS
from ..functions import ACTIVATIONS, LOSSES
from ..initializers import INITIALIZERS
from ..model import load
from ..optim import OPTIMIZERS


def add_train_arguments(p):
    p.add_argument("--recipe", choices=tuple(recipes.RECIPES),
                   help="start from this recipe's values (default: keras's, with any "
                        "network flag below)")
    p.add_argument("--data", metavar="DIR",
                   help="folder with the IDX files or CSV pair (default: $FASTMLP_DATA, "
                        "the cache, then download)")
    p.add_argument("--dataset", choices=tuple(datasets.DATASETS),
                   help="default: fashion-mnist when the --data folder's name says "
                        "'fashion', else mnist")
    p.add_argument("--backend", choices=BACKENDS, default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64", "mixed_bfloat16"),
                   help="default: the recipe's (mixed_bfloat16: bfloat16 products)")
    g = p.add_argument_group("network and training (each replaces the recipe's value)")
    g.add_argument("--layers", help="units per layer, inputs first: 784,256,10")
    g.add_argument("--activations", help=f"one per weight layer: {', '.join(ACTIVATIONS)}")
    g.add_argument("--loss", choices=LOSSES)
    g.add_argument("--init", choices=tuple(INITIALIZERS))
    g.add_argument("--optimizer", choices=tuple(OPTIMIZERS))
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--l2", type=float, help="L2 penalty on the weights")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--seed", type=int)
    p.add_argument("--validation-split", type=float, default=0.0, metavar="F")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better val_loss (loss "
                        "without validation) and keep the best epoch's weights")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="save the model after every epoch (resumable with --resume)")
    p.add_argument("--resume", metavar="FILE",
                   help="go on training this saved model for --epochs more epochs")
    p.add_argument("--threads", type=int, help="threads of the cpu backend")
    p.add_argument("--trainer", choices=TRAINERS, default="backprop",
                   help="numerical: the lecture's central differences on every parameter, "
                        "no backprop; lecture-backprop: the same steps by backprop "
                        "(both: the lecture recipe's network only)")
    p.add_argument("--diff-step", type=float, metavar="H",
                   help="step of the numerical trainer's central differences (default 1e-4)")
    p.add_argument("--save", metavar="FILE", help="write the trained model here (.npz)")
    p.add_argument("--json", metavar="FILE", help="write the results here as JSON ('-': "
                   "standard output)")
    p.add_argument("--plot", metavar="DIR", help="draw the learning curves, the confusion "
                   "matrix and misclassified test images as PNGs in DIR (matplotlib)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)


def add_evaluate_arguments(p):
    p.add_argument("model", metavar="FILE")
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--dataset", choices=tuple(datasets.DATASETS),
                   help="default: the one the model was trained on")
    p.add_argument("--backend", choices=BACKENDS, help="default: the model's")
    p.add_argument("--scaling", choices=preprocessing.SCALINGS,
                   help="default: the recipe's the model was trained with")
    p.add_argument("--misclassified", type=int, default=0, metavar="N",
                   help="list the first N misclassified test images")
    p.add_argument("--json", metavar="FILE", help="write the scores, the confusion matrix "
                   "and the per-class report as JSON ('-': standard output)")
    p.add_argument("--plot", metavar="DIR", help="draw the confusion matrix and "
                   "misclassified images as PNGs in DIR (matplotlib)")


def dataset_name(args):
    """--dataset, else guessed from the --data folder's name, else mnist."""
    if args.dataset:
        return args.dataset
    if args.data and "fashion" in os.path.basename(os.path.normpath(args.data)).lower():
        return "fashion-mnist"
    return "mnist"


def recipe_of(args) -> recipes.Recipe:
    """The recipe (keras's by default) with the values of the flags given."""
    base = recipes.get(args.recipe or "keras")
    changes = {}
    if args.layers:
        changes["layers"] = tuple(comma_list(args.layers, "--layers", parse=int, minimum=1))
    if args.activations:
        changes["activations"] = tuple(comma_list(args.activations, "activation",
                                                  ACTIVATIONS))
    for key in ("loss", "init", "l2", "epochs", "batch_size", "seed", "dtype"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.optimizer and args.optimizer != base.optimizer:
        changes["optimizer"], changes["optimizer_args"] = args.optimizer, {}
    if args.lr is not None:
        changes["optimizer_args"] = {**changes.get("optimizer_args", base.optimizer_args),
                                     "lr": args.lr}
    if "layers" in changes and "activations" not in changes \
            and len(changes["layers"]) != len(base.layers):
        raise ValueError(f"--layers gives {len(changes['layers']) - 1} weight layers: pass "
                         f"--activations with one activation each")
    if changes and not args.recipe:
        changes["name"] = "custom"
    return dataclasses.replace(base, **changes)


RESUME_CONFLICTS = ("recipe", "layers", "activations", "loss", "init", "optimizer", "seed",
                    "dtype")


def resumed(args):
    """(model, recipe, fit arguments) to go on training the file of ``--resume``: the
    network, optimizer and shuffling state from the file; the data preparation from
    its recipe; epochs, batch size, L2 and learning rate from the flags."""
    given = [f"--{k}" for k in RESUME_CONFLICTS if getattr(args, k) is not None]
    if given:
        raise ValueError(f"--resume takes the network and optimizer from the file: drop "
                         f"{', '.join(given)}")
    model = load(args.resume, backend=args.backend)
    name = model.meta.get("recipe")
    base = recipes.get(name if name in recipes.RECIPES else "keras")
    recipe = dataclasses.replace(
        base, name=name or "custom", layers=tuple(model.layers),
        scaling=model.meta.get("scaling", base.scaling),
        target_range=tuple(model.meta.get("target_range", base.target_range)))
    fit_args = {"epochs": base.epochs if args.epochs is None else args.epochs,
                "batch_size": args.batch_size or base.batch_size,
                "l2": base.l2 if args.l2 is None else args.l2}
    if args.lr is not None:
        fit_args["lr"] = args.lr
    return model, recipe, fit_args


def _callbacks(args):
    monitor = "val_loss" if args.validation_split else "loss"
    cbs = []
    if args.early_stopping is not None:
        cbs.append(callbacks.EarlyStopping(monitor, patience=args.early_stopping,
                                           restore_best_weights=True))
    if args.checkpoint:
        cbs.append(callbacks.ModelCheckpoint(args.checkpoint))
    return cbs


def train(args, out):
    if args.threads:
        threads.set_num_threads(args.threads)
    args.dataset = dataset_name(args)
    (x, y), (xt, yt) = datasets.load(args.dataset, args.data)
    if args.resume:
        model, recipe, fit_args = resumed(args)
    else:
        recipe = recipe_of(args)
        model = recipe.build(backend=args.backend, dtype=recipe.dtype,
                             n_inputs=None if args.layers else int(np.prod(x.shape[1:])))
        model.meta["target_range"] = list(recipe.target_range)
        fit_args = recipe.fit_args(trainer=args.trainer)
    dtype = model.dtype_policy
    x, xt = recipe.inputs(x, dtype), recipe.inputs(xt, dtype)
    model.meta["dataset"] = args.dataset
    if args.diff_step is not None:
        fit_args["h"] = args.diff_step
    what = f"resuming {args.resume} at epoch {model.epochs_trained + 1}" if args.resume \
        else f"recipe {recipe.name}"
    print(f"fastmlp {__version__}: {what} on {args.dataset} ({len(x)} train, {len(xt)} test), "
          f"backend {model.backend}, {dtype}, {threads.get_num_threads()} threads, trainer "
          f"{args.trainer}", file=out)
    model.summary(print_fn=lambda text: print(text, file=out))
    history = model.fit(x, recipe.targets(y, dtype), validation_split=args.validation_split,
                        verbose=args.verbose, callbacks=_callbacks(args), **fit_args)
    if history.interrupted:
        print(f"\ninterrupted: keeping the weights of {history.steps} completed steps",
              file=out)
    scores, pred, _ = report(model, xt, yt, args.dataset, out)
    if args.save:
        model.save(args.save)
        print(f"model saved to {args.save}", file=out)
    if args.plot:
        plots(args.plot, history, xt, yt, pred, args.dataset, out)
    if args.json:
        write_json(args.json, {
            "recipe": recipe.name, "backend": model.backend, "trainer": args.trainer,
            "dataset": args.dataset, "layers": model.layers, "activations": model.activations,
            "optimizer": model.optimizer.get_config(),
            "dtype": dtype, "threads": threads.get_num_threads(),
            "epochs": len(history.epoch), "epochs_trained": model.epochs_trained,
            "steps": history.steps, "interrupted": history.interrupted,
            "test_accuracy": scores["accuracy"], "test_loss": scores["loss"],
            "epoch_seconds": history.epoch_seconds, "history": history.history,
        }, out)
    return history


def report(model, x_test, y_test, dataset, out, quiet=False):
    """Score the model on the test set; print the scores, the per-class report and the
    confusion matrix. Returns (scores, predicted labels, confusion matrix)."""
    scores = model.evaluate(x_test, y_test)
    pred = model.predict(x_test)
    cm = metrics.confusion_matrix(y_test, pred, model.layers[-1])
    if quiet:
        return scores, pred, cm
    print(f"\ntest loss: {scores['loss']:.4f} - test accuracy: {scores['accuracy']:.4f}",
          file=out)
    names = datasets.CLASS_NAMES.get(dataset)
    if model.layers[-1] == 10 and names:
        print(metrics.classification_report(y_test, pred, target_names=names), file=out)
    print(confusion_text(cm, names if model.layers[-1] == 10 else None), file=out)
    return scores, pred, cm


def confusion_text(cm, names=None) -> str:
    """The confusion matrix as a table (rows: true class, columns: predicted)."""
    k = len(cm)
    labels = [str(i) for i in range(k)]
    width = max(max(len(str(v)) for v in cm.ravel()), max(len(s) for s in labels)) + 1
    lines = ["confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * 6 + "".join(f"{s:>{width}}" for s in labels))
    for i, row in enumerate(cm):
        name = f"  ({names[i]})" if names else ""
        lines.append(f"{labels[i]:>5} " + "".join(f"{v:>{width}}" for v in row) + name)
    return "\n".join(lines)


def plots(folder, history, x_test, y_test, pred, dataset, out):
    """Write the figures of ``fastmlp.plot`` as PNGs into ``folder``."""
    from .. import plot

    os.makedirs(folder, exist_ok=True)
    names = datasets.CLASS_NAMES.get(dataset)
    written = []
    if history is not None and history.epoch:
        written.append(os.path.join(folder, "history.png"))
        plot.history(history, path=written[-1])
    written.append(os.path.join(folder, "confusion_matrix.png"))
    plot.confusion_matrix(y_test, pred, class_names=names, path=written[-1])
    written.append(os.path.join(folder, "misclassified.png"))
    plot.misclassified(x_test, y_test, pred, class_names=names, path=written[-1])
    print("plots: " + ", ".join(written), file=out)


def evaluate(args, out):
    model = load(args.model, backend=args.backend)
    dataset = args.dataset or model.meta.get("dataset", "mnist")
    scaling = args.scaling or model.meta.get("scaling", "unit")
    _, (xt, yt) = datasets.load(dataset, args.data)
    xt = preprocessing.scale(xt, scaling, model.dtype)
    quiet = args.json == "-"
    if not quiet:
        print(f"model {args.model}: layers {model.layers}, backend {model.backend}; "
              f"{dataset} test set ({len(xt)} images), inputs scaled '{scaling}'", file=out)
    scores, pred, cm = report(model, xt, yt, dataset, out, quiet=quiet)
    rows = metrics.misclassified(yt, pred)
    if args.misclassified and not quiet:
        print(f"\n{len(rows)} misclassified; the first {min(len(rows), args.misclassified)} "
              f"(index, label, prediction):", file=out)
        for row in rows[:args.misclassified]:
            print(f"{row[0]:>6} {row[1]:>6} {row[2]:>6}", file=out)
    if args.plot:  # with the JSON on standard output, the list of files goes to stderr
        plots(args.plot, None, xt, yt, pred, dataset, sys.stderr if quiet else out)
    if args.json:
        names = datasets.CLASS_NAMES.get(dataset) if model.layers[-1] == 10 else None
        write_json(args.json, {
            "model": args.model, "dataset": dataset, "samples": len(xt),
            "loss": scores["loss"], "accuracy": scores["accuracy"],
            "misclassified": len(rows),
            "confusion_matrix": cm.tolist(),
            "report": metrics.classification_report(yt, pred, target_names=names,
                                                    output_dict=True),
        }, out)
