"""The ``cpu`` backend: the compiled kernels of ``fastmlp._cpu`` (C with OpenMP, bound
with Cython), with the step's optional arguments handled here."""

from __future__ import annotations

import sys

try:
    from .. import _cpu
except ImportError as exc:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "the compiled extension fastmlp._cpu is missing; reinstall fastmlp with "
        "'pip install .' from a source tree (needs a C compiler)"
    ) from exc

import numpy as np

from .. import bf16
from ..functions import LINEAR
from ..network import Parameters, Workspace, empty_aligned
from ..optim import Optimizer
from ..training import BackpropRunner, HostOrder, NonFiniteLoss
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
bf16.select_hardware(_cpu)

take_rows = _cpu.take_rows
activation_forward = _cpu.activation_forward
activation_backward = _cpu.activation_backward
dense_backward_input = _cpu.dense_backward_input


def dense_forward(x, W, b, out, act=LINEAR, idx=None, bf16=False):
    _cpu.dense_forward(rows_of(x, idx), W, b, out, act, bf16)


def dense_backward_weight(x, g, gW, gb, idx=None, bf16=False):
    _cpu.dense_backward_weight(rows_of(x, idx), g, gW, gb, bf16)


def loss_grad(loss, act, z, a, y, g, row_loss, idx=None, acc=None):
    total, hits = _cpu.loss_grad(loss, act, z, a, rows_of(y, idx), g, row_loss)
    accumulate(acc, total, hits)
    return total, hits


def update(rule, p, g, s1, s2, hyper, l2, n_decayed, out=None, check=None):
    if not update_skipped(check):
        _cpu.update(rule, p, g, s1, s2, hyper, l2, n_decayed, out)


def make_runner(be, net, params, x, y, opt, l2, batch, rng):
    """``fit``'s runner on this backend (the hook of :mod:`fastmlp.training`): whole
    steps in one compiled call, or the Python loop over the same kernels for an
    optimizer whose ``update`` is its own Python code."""
    if type(opt).update is not Optimizer.update:
        return BackpropRunner(be, net, params, x, y, opt, l2, batch, rng)
    return CompiledRunner(net, params, x, y, opt, l2, batch, rng)


class CompiledRunner(HostOrder):
    """Mini-batch backprop with each whole step (gather, forward, loss, backward,
    update) one compiled call, and many steps per :meth:`run`: a whole epoch, or
    as many steps as the callbacks' ``batch_every`` asks for (``chunk``, which
    ``fit`` sets). The GIL is released during a step and Ctrl-C is checked
    between steps.

    It runs the kernels of :func:`fastmlp.step.train_step` in the same order on
    two parameter buffers, as :class:`fastmlp.training.BackpropRunner` does, so
    its weights are bitwise that runner's.
    """

    def __init__(self, net, params, x, y, opt, l2, batch, rng):
        for name, arr in (("x", x), ("y", y)):
            if arr.dtype != net.dtype or not arr.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous {net.dtype}, got "
                                 f"{arr.dtype}")
        self.net, self.params, self.x, self.y = net, params, x, y
        self.opt, self.l2, self.rng = opt, l2, rng
        self.batch = batch
        self.chunk = len(x)
        self.chunk_in_steps = True  # fit may make chunk a number of steps
        self.ws = Workspace(net, batch, backward=True, gather=True)
        self.grad = np.zeros_like(params.flat)
        # Both parameter buffers aligned for the compiled step (Stepper.run).
        if params.flat.ctypes.data % 64:
            flat = empty_aligned(params.flat.shape, params.flat.dtype)
            flat[...] = params.flat
            params.swap(Parameters(net, flat))
        self.spare = Parameters(net, empty_aligned(params.flat.shape, params.flat.dtype))
        self.stats = np.zeros(6)
        self.taken = 0
        self._pending = (0, 0.0, 0, 0)
        self._stepper = None
        self._state = None
        #: None, or a float64 array of threads x len(_cpu.step_phases()) to which
        #: :meth:`run` adds the seconds each thread spends in each part of each step
        #: (for the profiler).
        self.phase = None

    def _stepper_now(self):
        """The compiled step, made anew when the optimizer's state arrays changed."""
        opt, net, ws = self.opt, self.net, self.ws
        rule = opt.kernel_rule()
        opt.ensure_state(self.params.flat)
        if self._stepper is None or opt.state is not self._state:
            state = opt.state
            s1 = state[0] if opt.n_slots > 0 else None
            s2 = state[1] if opt.n_slots > 1 else None
            self._stepper = _cpu.Stepper(net.layers, net.act_ids, net.loss_id, rule,
                                         net.n_weights, net.dtype == np.float64, ws.x, ws.y,
                                         ws.a, ws.g, ws.z, ws.row_loss, self.grad, s1, s2,
                                         net.bf16)
            self._state = state
        return self._stepper

    def run(self, rows, contiguous):
        opt, stats = self.opt, self.stats
        stepper = self._stepper_now()
        steps = -(-len(rows) // self.batch)
        first = opt.iterations + 1
        hyper = np.array([opt.kernel_hyper(first + s) for s in range(steps)], dtype=np.float64)
        stats[:] = 0
        try:
            rc = stepper.run(self.x, self.y, np.ascontiguousarray(rows, dtype=np.intp),
                             self.batch, (self.params.flat, self.spare.flat), 0, hyper,
                             self.l2, stats, self.phase)
        finally:
            # The parameters of the completed steps are kept, whatever happened.
            done = int(stats[0])
            if done % 2:
                self.params.swap(self.spare)
            opt.iterations += done
            self.taken += done
            self._pending = (done, float(stats[1]), int(stats[2]), int(stats[3]))
        result, self._pending = self._pending, (0, 0.0, 0, 0)
        if rc:
            if self.taken:
                self.params.swap(self.spare)
            raise NonFiniteLoss(done * self.batch, stats[4] / stats[5], steps=done)
        return result

    def unreported(self):
        return self._pending

    def record_step(self):
        """The kernel calls of one step (for the profiler), recorded through
        :class:`fastmlp.training.BackpropRunner`, which calls the same kernels
        from Python."""
        runner = BackpropRunner(sys.modules[__name__], self.net, self.params, self.x, self.y,
                                self.opt, self.l2, self.batch, self.rng)
        return runner.record_step()
