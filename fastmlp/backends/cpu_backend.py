"""The ``cpu`` backend: the compiled kernels of ``fastmlp._cpu`` (C with OpenMP, bound
with Cython), with the step's optional arguments handled here."""

from __future__ import annotations

try:
    from .. import _cpu
except ImportError as exc:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "the compiled extension fastmlp._cpu is missing; reinstall fastmlp with "
        "'pip install .' from a source tree (needs a C compiler)"
    ) from exc

from ..functions import LINEAR
from ._host import (  # noqa: F401
    accumulate,
    device,
    empty,
    rows_of,
    to_device,
    to_host,
    update_skipped,
    zeros,
)

name = "cpu"

take_rows = _cpu.take_rows
activation_forward = _cpu.activation_forward
activation_backward = _cpu.activation_backward
dense_backward_input = _cpu.dense_backward_input


def dense_forward(x, W, b, out, act=LINEAR, idx=None):
    _cpu.dense_forward(rows_of(x, idx), W, b, out, act)


def dense_backward_weight(x, g, gW, gb, idx=None):
    _cpu.dense_backward_weight(rows_of(x, idx), g, gW, gb)


def loss_grad(loss, act, z, a, y, g, row_loss, idx=None, acc=None):
    total, hits = _cpu.loss_grad(loss, act, z, a, rows_of(y, idx), g, row_loss)
    accumulate(acc, total, hits)
    return total, hits


def update(rule, p, g, s1, s2, hyper, l2, n_decayed, out=None, check=None):
    if not update_skipped(check):
        _cpu.update(rule, p, g, s1, s2, hyper, l2, n_decayed, out)
