"""What the backends that work on host (NumPy) arrays share: memory functions and
the optional arguments of the step's kernels (see ``fastmlp.backends``)."""

from __future__ import annotations

import math

import numpy as np

device = False
empty = np.empty
zeros = np.zeros


def to_device(a):
    return a


def to_host(d, out=None):
    if out is None:
        return d
    if out is not d:
        np.copyto(out, d)
    return out


def rows_of(a, idx):
    """``a`` itself, or its rows ``idx`` (a new array: not on the training path, where
    the host runners gather each batch into their workspace)."""
    return a if idx is None else np.take(a, idx, axis=0)


def accumulate(acc, total, hits):
    """Add a batch's loss sum and hits to row ``s`` of the accumulator ``acc = (array, s)``."""
    if acc is not None:
        arr, s = acc
        arr[s, 0] += total
        arr[s, 1] += hits


def update_skipped(check) -> bool:
    """The guard of a checked update, ``check = (acc, s, flag)``: True (and the flag set
    to ``s + 1`` if it was clear) when an earlier step was flagged or step ``s``'s loss
    sum ``acc[s, 0]`` is not finite."""
    if check is None:
        return False
    acc, s, flag = check
    if flag[0] != 0:
        return True
    if not math.isfinite(acc[s, 0]):
        flag[0] = s + 1
        return True
    return False
