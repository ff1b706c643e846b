"""``fit``'s loop, written once above every way of training.

A *runner* takes the steps; :func:`run_epochs` drives it epoch by epoch, keeps
the :class:`History`, shows progress, and turns a non-finite loss or a Ctrl-C
into the documented outcome. The runners:

* :class:`BackpropRunner`: mini-batch backprop on a host backend (``numpy``,
  ``cpu``), one :func:`fastmlp.step.train_step` per call;
* ``fastmlp.numerical.LectureRunner``: the lecture's per-sample steps, compiled;
* ``fastmlp.backends.cuda.Trainer``: whole epochs resident on the GPU.

A backend module may offer ``make_runner(net, params, x, y, opt, l2, batch, rng)``
to train its own way (a whole step, or many steps, in one compiled call); ``fit``
uses it instead of :class:`BackpropRunner`.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Protocol

import numpy as np

from . import step
from .callbacks import CallbackList
from .network import Parameters, Workspace


class NonFiniteLoss(Exception):
    """A step met a non-finite loss ``offset`` samples into its block of samples,
    after ``steps`` completed steps of the block (default: ``offset``). The
    runner has already put back the parameters that gave the last finite loss."""

    def __init__(self, offset, loss, steps=None):
        super().__init__(offset, loss)
        self.offset, self.loss = offset, loss
        self.steps = offset if steps is None else steps


class Runner(Protocol):
    """What :func:`run_epochs` needs of a way of training.

    ``batch`` is the samples per step and ``chunk`` the samples per :meth:`run`
    call (a whole epoch for a runner that queues an epoch's steps on a device).
    A runner with a true ``chunk_in_steps`` attribute lets ``fit`` lower ``chunk``
    to the callbacks' ``batch_every`` steps.
    """

    batch: int
    chunk: int

    def new_order(self, shuffle: bool):
        """This epoch's order of the training samples (drawn from the model's
        shuffling stream, or in order)."""

    def run(self, rows, contiguous: bool) -> tuple:
        """Step through the samples ``rows`` of the order; returns ``(steps, loss sum,
        hits, samples)``. Raises :class:`NonFiniteLoss` after restoring the
        parameters that gave the last finite loss."""

    def unreported(self) -> tuple:
        """After Ctrl-C: what completed inside the interrupted :meth:`run`, as it
        returns (the parameters kept are those of the completed steps)."""


class HostOrder:
    """Runners on the host draw each epoch's order from the model's shuffling stream."""

    def new_order(self, shuffle):
        n = len(self.x)
        return self.rng.permutation(n).astype(np.intp, copy=False) \
            if shuffle else np.arange(n, dtype=np.intp)


class BackpropRunner(HostOrder):
    """One mini-batch backprop step per call, on two parameter buffers.

    Each update reads the current buffer and writes the other, so the weights
    before the last step are always at hand, without a copy.
    """

    def __init__(self, be, net, params, x, y, opt, l2, batch, rng):
        self.be, self.net, self.params = be, net, params
        self.x, self.y, self.opt, self.l2, self.rng = x, y, opt, l2, rng
        self.batch = self.chunk = batch
        self.ws = Workspace(net, batch, backward=True, gather=True)
        self.grads = Parameters(net, np.zeros_like(params.flat))
        self.spare = Parameters(net, np.empty_like(params.flat))
        self.taken = 0

    def run(self, rows, contiguous):
        be, m = self.be, len(rows)
        ws = self.ws.views(m)
        if contiguous:
            np.copyto(ws.x, self.x[rows[0]:rows[0] + m])
            np.copyto(ws.y, self.y[rows[0]:rows[0] + m])
        else:
            be.take_rows(self.x, rows, ws.x)
            be.take_rows(self.y, rows, ws.y)
        # An interruption inside the update leaves the current buffer intact.
        t, h = step.train_step(be, self.net, self.params, self.grads, ws.x, ws.y, ws,
                               self.opt, self.l2, self.spare)
        if not math.isfinite(t):
            if self.taken:
                self.params.swap(self.spare)
            raise NonFiniteLoss(0, t / m)
        self.params.swap(self.spare)
        self.taken += 1
        return 1, t, h, m

    def unreported(self):
        return 0, 0.0, 0, 0

    def record_step(self):
        """Run one step on the first batch of a shuffled order through a
        :class:`fastmlp.step.Recorder`; returns its kernel calls (for the profiler)."""
        rec = step.Recorder(self.be)
        be, self.be = self.be, rec
        try:
            self.run(self.new_order(True)[:self.batch], contiguous=False)
        finally:
            self.be = be
        return rec.calls


class History:
    """What ``fit`` measured, epoch by epoch.

    Attributes
    ----------
    history : dict
        ``"loss"`` and ``"accuracy"`` (training, averaged over the epoch's
        steps), and ``"val_loss"``, ``"val_accuracy"`` with validation data.
    epoch_seconds : list of float
        Wall-clock seconds of each epoch's training steps.
    epoch : list of int
        Epoch numbers, from 0 over the model's life: a second ``fit`` goes on
        from the first one's last epoch.
    interrupted : bool
        True when Ctrl-C stopped ``fit``; the last entries then describe the
        steps of the unfinished epoch that completed.
    steps : int
        Training steps completed.
    """

    def __init__(self):
        self.history = {"loss": [], "accuracy": []}
        self.epoch_seconds = []
        self.epoch = []
        self.interrupted = False
        self.steps = 0

    def append(self, epoch, seconds, **metrics):
        """Record one epoch's seconds and metrics."""
        self.epoch.append(epoch)
        self.epoch_seconds.append(seconds)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, steps={self.steps}, keys={list(self.history)})"


def run_epochs(runner: Runner, history: History, n, epochs, shuffle, score=None,
               callbacks: CallbackList | None = None, initial_epoch=0) -> History:
    """Train ``epochs`` epochs over ``n`` samples with ``runner``, numbered from
    ``initial_epoch``, recording into ``history`` (which the caller holds, so it has
    the steps taken even when a non-finite loss raises FloatingPointError, naming
    the epoch and step) and calling ``callbacks``.

    ``score()``, if given, returns ``(val_loss, val_accuracy)`` after each epoch.
    Ctrl-C ends training with a warning and ``history`` marked ``interrupted``;
    so does ``model.stop_training`` set by a callback, without the warning.
    """
    cbs = callbacks if callbacks is not None else CallbackList([], None, {})
    epoch = initial_epoch
    total = hits = seen = 0
    logs = None
    t0 = time.perf_counter()
    cbs.on_train_begin()
    try:
        for epoch in range(initial_epoch, initial_epoch + epochs):
            if cbs.stop:
                break
            cbs.on_epoch_begin(epoch)
            order = runner.new_order(shuffle)
            total = hits = seen = taken = 0
            t0 = time.perf_counter()
            for start in range(0, n, runner.chunk):
                try:
                    done, t, h, m = runner.run(order[start:start + runner.chunk],
                                               contiguous=not shuffle)
                except NonFiniteLoss as exc:
                    history.steps += exc.steps
                    raise FloatingPointError(
                        f"the loss became {exc.loss} at epoch {epoch + 1}, step "
                        f"{(start + exc.offset) // runner.batch + 1}; the model keeps the "
                        f"weights that gave the last finite loss (try a smaller "
                        f"learning rate)") from None
                total += t
                hits += h
                seen += m
                history.steps += done
                cbs.on_steps_end(taken, taken + done,
                                 {"loss": total / seen, "accuracy": hits / seen})
                taken += done
                if cbs.stop:
                    break
            seconds = time.perf_counter() - t0
            logs = {"loss": total / seen, "accuracy": hits / seen}
            if score is not None:
                logs["val_loss"], logs["val_accuracy"] = score()
            cbs.on_epoch_end(epoch, logs)
            history.append(epoch, seconds, **logs)
    except KeyboardInterrupt:
        history.interrupted = True
        done, t, h, m = runner.unreported()
        history.steps += done
        total, hits, seen = total + t, hits + h, seen + m
        if seen:
            logs = {"loss": total / seen, "accuracy": hits / seen}
            history.append(epoch, time.perf_counter() - t0, **logs)
        warnings.warn(f"training interrupted in epoch {epoch + 1}; the model keeps the "
                      f"weights of the {history.steps} completed steps", stacklevel=3)
    finally:
        end = dict(logs or {})
        if history.interrupted:
            end["interrupted"] = True
        cbs.on_train_end(end)
    return history
