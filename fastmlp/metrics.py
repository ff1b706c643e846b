"""Classification metrics on integer labels."""

from __future__ import annotations

import numpy as np

from . import _checks


def _pair(y_true, y_pred, n_classes=None):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and of one length, got shapes "
                         f"{y_true.shape} and {y_pred.shape}")
    if n_classes is None:
        top = max(int(np.max(y_true, initial=0)), int(np.max(y_pred, initial=0)))
        n_classes = top + 1
    return (_checks.labels_1d(y_true, n_classes, "y_true"),
            _checks.labels_1d(y_pred, n_classes, "y_pred"), n_classes)


def accuracy(y_true, y_pred) -> float:
    """Fraction of predictions equal to the labels."""
    y_true, y_pred, _ = _pair(y_true, y_pred)
    if y_true.size == 0:
        raise ValueError("accuracy of no samples is undefined")
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, n_classes=None) -> np.ndarray:
    """Counts (n_classes, n_classes): row = true label, column = prediction."""
    y_true, y_pred, n = _pair(y_true, y_pred, n_classes)
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def classification_report(y_true, y_pred, target_names=None, digits=4, output_dict=False):
    """Per-class precision, recall, F1 and support, with macro averages and accuracy.

    Returns a printable table, or with ``output_dict=True`` a dict
    ``{class: {"precision", "recall", "f1", "support"}, "macro avg": {...}, "accuracy": a}``.
    A ratio with a zero denominator counts as 0.
    """
    n = None if target_names is None else len(target_names)
    cm = confusion_matrix(y_true, y_pred, n)
    n = cm.shape[0]
    names = [str(i) for i in range(n)] if target_names is None else [str(t) for t in target_names]
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    report = {name: {"precision": float(p), "recall": float(r), "f1": float(f),
                     "support": int(s)}
              for name, p, r, f, s in zip(names, precision, recall, f1, support)}
    total = int(support.sum())
    report["macro avg"] = {"precision": float(precision.mean()), "recall": float(recall.mean()),
                           "f1": float(f1.mean()), "support": total}
    report["accuracy"] = float(tp.sum() / total) if total else 0.0
    if output_dict:
        return report
    width = max(12, max(len(s) for s in names) + 2)
    lines = [f"{'':>{width}}{'precision':>11}{'recall':>11}{'f1-score':>11}{'support':>10}", ""]
    for name in names + ["macro avg"]:
        if name == "macro avg":
            lines.append("")
        r = report[name]
        lines.append(f"{name:>{width}}{r['precision']:>11.{digits}f}{r['recall']:>11.{digits}f}"
                     f"{r['f1']:>11.{digits}f}{r['support']:>10}")
    lines.insert(-1, f"{'accuracy':>{width}}{'':>22}{report['accuracy']:>11.{digits}f}"
                     f"{total:>10}")
    return "\n".join(lines)


def misclassified(y_true, y_pred) -> np.ndarray:
    """Rows (index, label, prediction) for every wrong prediction, as the lecture lists them."""
    y_true, y_pred, _ = _pair(y_true, y_pred)
    idx = np.flatnonzero(y_true != y_pred)
    return np.stack([idx, y_true[idx], y_pred[idx]], axis=1)
