"""Input scaling and target encoding used by the recipes."""

from __future__ import annotations

import numpy as np

from . import _checks
from ._util import choose, integer

#: Named input scalings: ``unit`` is Keras' x/255, ``lecture`` is x/255*0.99+0.01.
SCALINGS = ("unit", "lecture", "none")


def scale_unit(x, dtype="float32") -> np.ndarray:
    """Pixels 0-255 to [0, 1]: ``x / 255`` (the Keras recipe)."""
    return np.asarray(x, dtype=_checks.float_dtype(dtype)) / 255


def scale_lecture(x, dtype="float64") -> np.ndarray:
    """Pixels 0-255 to [0.01, 1]: ``x / 255 * 0.99 + 0.01`` (the lecture recipe)."""
    return np.asarray(x, dtype=_checks.float_dtype(dtype)) / 255 * 0.99 + 0.01


def scale(x, how, dtype="float32") -> np.ndarray:
    """Apply the scaling named ``how`` (one of ``SCALINGS``)."""
    choose("scaling", how, SCALINGS)
    if how == "unit":
        return scale_unit(x, dtype)
    if how == "lecture":
        return scale_lecture(x, dtype)
    return np.asarray(x, dtype=_checks.float_dtype(dtype))


def one_hot(y, n_classes=10, on=1.0, off=0.0, dtype="float32") -> np.ndarray:
    """Labels (N,) to target rows (N, n_classes) holding ``on`` at the label, ``off`` elsewhere.

    The lecture uses ``on=0.99, off=0.01``.

    Examples
    --------
    >>> one_hot([2, 0], 3)
    array([[0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    """
    n_classes = integer("n_classes", n_classes, 1)
    y = _checks.labels_1d(y, n_classes)
    out = np.full((len(y), n_classes), off, dtype=_checks.float_dtype(dtype))
    out[np.arange(len(y)), y] = on
    return out
