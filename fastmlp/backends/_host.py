"""Memory functions of the backends that work on host (NumPy) arrays."""

from __future__ import annotations

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


def synchronize():
    pass
