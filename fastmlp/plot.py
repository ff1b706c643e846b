"""Figures of training and of errors: learning curves, a confusion matrix, and the
misclassified images.

Each function returns a ``matplotlib.figure.Figure`` (made without pyplot, so it
works with no display) and, given ``path``, writes a PNG there atomically.
matplotlib is the ``plot`` extra: ``pip install 'fastmlp[plot]'``.

Example
-------
>>> history = model.fit(x, y, validation_split=0.1, epochs=10)     # doctest: +SKIP
>>> fastmlp.plot.history(history, path="curves.png")
>>> fastmlp.plot.confusion_matrix(y_test, model.predict(x_test),
...                               class_names=fastmlp.datasets.CLASS_NAMES["mnist"])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import metrics
from ._util import atomic_write, integer


def _figure(width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("fastmlp.plot needs matplotlib: pip install 'fastmlp[plot]'") \
            from exc
    return Figure(figsize=(width, height), layout="constrained")


def _finish(fig, path):
    if path is not None:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=110)
    return fig


def history(history: Any, path: str | os.PathLike | None = None,
            keys: Sequence[str] = ("loss", "accuracy")) -> Any:
    """Learning curves: one panel per metric, training and (when recorded) validation,
    against the epoch (from 1).

    Parameters
    ----------
    history : fastmlp.History or dict
        What ``fit`` returned, or its ``history`` dict.
    path : str or path-like, optional
        Write the figure here as a PNG.
    keys : sequence of str
        The metrics to draw (each with its ``val_`` twin).
    """
    curves = getattr(history, "history", history)
    epochs = getattr(history, "epoch", None)
    names = [m for m in keys if m in curves]
    if not names:
        raise ValueError(f"the history has none of {list(keys)}; it has {list(curves)}")
    n = len(curves[names[0]])
    x = np.asarray(epochs if epochs is not None and len(epochs) == n else range(n)) + 1
    fig = _figure(4.2 * len(names), 3.4)
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
        ax.plot(x, curves[name], "o-", label="training")
        if f"val_{name}" in curves:
            ax.plot(x, curves[f"val_{name}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    return _finish(fig, path)


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike,
                     class_names: Sequence[str] | None = None, normalize: bool = False,
                     path: str | os.PathLike | None = None) -> Any:
    """A heatmap of the confusion matrix (rows: true class, columns: predicted), each
    cell labelled with its count (or, with ``normalize``, its fraction of the row).
    """
    cm = metrics.confusion_matrix(y_true, y_pred,
                                  None if class_names is None else len(class_names))
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = max(4.0, 0.55 * k + 2)
    fig = _figure(size + 1, size)
    ax = fig.subplots()
    im = ax.imshow(values, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"confusion matrix (accuracy {acc:.4f})")
    top = values.max() if values.size else 0
    for i in range(k):
        for j in range(k):
            text = f"{values[i, j]:.2f}" if normalize else str(int(values[i, j]))
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] > top / 2 else "black")
    return _finish(fig, path)


def misclassified(x: npt.ArrayLike, y_true: npt.ArrayLike, y_pred: npt.ArrayLike,
                  class_names: Sequence[str] | None = None, n: int = 25,
                  path: str | os.PathLike | None = None,
                  image_shape: tuple[int, int] | None = None) -> Any:
    """A grid of the first ``n`` misclassified images, each titled ``true→predicted``.

    ``x`` holds the images, (N, 28, 28) or flat rows (square images, or
    ``image_shape``).
    """
    n = integer("n", n, 1)
    wrong = metrics.misclassified(y_true, y_pred)
    rows = wrong[:n]
    x = np.asarray(x)
    if len(x) != len(np.asarray(y_true)):
        raise ValueError(f"x has {len(x)} images for {len(np.asarray(y_true))} labels")
    side = int(round(np.sqrt(x[0].size)))
    shape = image_shape or (x.shape[1:] if x.ndim == 3 else (side, side))
    if int(np.prod(shape)) != x[0].size:
        raise ValueError(f"cannot show images of {x[0].size} values as {tuple(shape)}; pass "
                         f"image_shape")
    cols = int(np.ceil(np.sqrt(max(len(rows), 1))))
    lines = int(np.ceil(max(len(rows), 1) / cols))
    fig = _figure(1.7 * cols, 1.9 * lines)
    axes = fig.subplots(lines, cols, squeeze=False).ravel()
    names = (lambda c: str(class_names[c])) if class_names is not None else str
    for ax in axes:
        ax.axis("off")
    for ax, (index, true, pred) in zip(axes, rows):
        ax.imshow(x[index].reshape(shape), cmap="gray_r")
        ax.set_title(f"{names(true)}→{names(pred)}", fontsize=8, color="firebrick")
    fig.suptitle(f"{len(wrong)} misclassified; "
                 f"the first {len(rows)} (true→predicted)")
    return _finish(fig, path)
