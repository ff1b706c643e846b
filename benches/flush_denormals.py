"""Epoch times with subnormal floats kept and flushed (fastmlp.set_flush_denormals).

Two models of the keras recipe train on Fashion-MNIST in one process, epoch by
epoch in turn, one with subnormals flushed to zero and one without, so that both
see the same moments of a shared machine. Prints each epoch's pair of times,
their ratio, the medians of the ratios over the early, middle and late epochs, and
each model's test accuracy at the end.

    python benches/flush_denormals.py [epochs] [--data FOLDER]
"""

import argparse
import pathlib

import numpy as np

import fastmlp
from fastmlp import datasets, recipes

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("epochs", nargs="?", type=int, default=16)
    ap.add_argument("--data", default=str(DATA), help="the Fashion-MNIST folder")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    (x, y), (xt, yt) = datasets.load("fashion-mnist", path=args.data, download=False,
                                     verbose=False)
    recipe = recipes.get("keras")
    X, Y = recipe.inputs(x), recipe.targets(y)
    models = {"flushed": recipe.build(), "kept": recipe.build()}
    fit_args = recipe.fit_args()
    fit_args.update(epochs=1, verbose=0, batch_size=args.batch_size)
    ratios = []
    try:
        for epoch in range(1, args.epochs + 1):
            seconds = {}
            for name, model in models.items():
                fastmlp.set_flush_denormals(name == "flushed")
                seconds[name] = model.fit(X, Y, **fit_args).epoch_seconds[-1]
            ratios.append(seconds["flushed"] / seconds["kept"])
            print(f"epoch {epoch:2d}: flushed {seconds['flushed']:.3f} s, kept "
                  f"{seconds['kept']:.3f} s, flushed/kept {ratios[-1]:.3f}", flush=True)
    finally:
        fastmlp.set_flush_denormals(False)
    thirds = np.array_split(np.array(ratios), 3)
    print("median flushed/kept by thirds of the run:",
          ", ".join(f"{np.median(t):.3f}" for t in thirds if t.size))
    Xt = recipe.inputs(xt)
    for name, model in models.items():
        print(f"{name}: test accuracy {np.mean(np.asarray(model.predict(Xt)) == yt):.4f}")


if __name__ == "__main__":
    main()
