"""``fit``'s mini-batch backprop resident on the GPU."""

from __future__ import annotations

import numpy as np
from numba import cuda

from ... import step
from ...network import Parameters, Workspace
from ...training import NonFiniteLoss
from . import ops
from . import shuffle as device_shuffle


def make_runner(be, net, params, x, y, opt, l2, batch, rng):
    """``fit``'s runner on the GPU (the hook of :mod:`fastmlp.training`)."""
    return Trainer(net, params, x, y, opt, l2, batch, rng)


class Trainer:
    """Made once per ``fit``: uploads the training data (once), the parameters (into
    the first of two device buffers) and the optimizer's state, and allocates
    every buffer of a step. Each epoch draws a permutation on the device (one
    launch), then queues the steps without waiting: each step is
    ``fastmlp.step.train_step`` with the batch's rows gathered through the
    permutation, the loss sum and hits added to this epoch's row of a device
    accumulator, and a checked update that writes the other parameter buffer
    (a step whose loss is not finite is flagged, and it and every later update
    leave the buffers alone). The host waits once per epoch, to read the
    accumulator, the flag and the new parameters.
    """

    def __init__(self, net, params, x, y, opt, l2, batch, rng, free_bytes=None):
        self.net, self.params, self.opt, self.l2, self.rng = net, params, opt, l2, rng
        self.n = n = len(x)
        self.batch = batch
        self.chunk = n
        self.steps_per_epoch = -(-n // batch)
        dt = net.dtype
        need = (x.nbytes + y.nbytes + params.flat.nbytes * (4 + opt.n_slots)
                + batch * sum(net.layers) * dt.itemsize * 4 + n * 4)
        free = ops.free_memory() if free_bytes is None else free_bytes
        if free is not None and need > free:
            raise MemoryError(f"fit on the GPU needs about {need / 2**20:.0f} MiB for the "
                              f"data, parameters and buffers; the GPU has "
                              f"{free / 2**20:.0f} MiB free")
        self.x = ops.to_device(x)
        self.y = ops.to_device(y)
        self.bufs = [Parameters(net, ops.to_device(params.flat)),
                     Parameters(net, ops.empty(params.flat.shape, dt))]
        self.grads = Parameters(net, ops.empty(params.flat.shape, dt))
        opt.ensure_state(params.flat)
        self.state = [ops.to_device(s) for s in opt.state]
        self.order = cuda.device_array(n, dtype=np.int32)
        self.ws = Workspace(net, batch, backward=True, backend=ops)
        self.acc = cuda.device_array((self.steps_per_epoch, 2), dtype=np.float64)
        self.flag = cuda.device_array(1, dtype=np.int32)
        self.cur = 0  # index of the buffer holding the current parameters
        self.taken = 0
        self.launched = 0  # steps of this epoch whose update was queued
        # Row views of every step's batch, made once.
        self.spans = [(s, min(s + batch, n)) for s in range(0, n, batch)]
        self.idx = [self.order[a:b] for a, b in self.spans]
        self.lbits, self.rbits = device_shuffle.split_bits(n)

    # The loop of fastmlp.training calls new_order, then run over the whole epoch.
    def new_order(self, shuffle):
        keys = self.rng.integers(0, 2**32, size=4, dtype=np.uint64) if shuffle \
            else np.zeros(4, np.uint64)
        launch = device_shuffle.permutation[ops.blocks(self.n), ops.TPB]
        launch(self.order, self.n, self.lbits, self.rbits, *[int(k) for k in keys],
               bool(shuffle))
        return range(self.n)

    def queue_step(self, s, be=ops):
        """Queue step ``s`` of the epoch (no wait), through the backend ``be``."""
        lo, hi = self.spans[s]
        nxt = 1 - self.cur
        step.train_step(be, self.net, self.bufs[self.cur], self.grads, self.x, self.y,
                        self.ws.views(hi - lo), self.opt, self.l2, self.bufs[nxt],
                        state=self.state, idx=self.idx[s], acc=(self.acc, s),
                        check=(self.acc, s, self.flag))
        self.cur = nxt
        self.launched = s + 1

    def record_step(self):
        """Run the first step of an epoch through a :class:`fastmlp.step.Recorder`;
        returns its kernel calls (for the profiler)."""
        rec = step.Recorder(ops)
        self.new_order(True)
        ops.fill(self.acc, 0.0)
        ops.fill(self.flag, 0)
        self.queue_step(0, rec)
        return rec.calls

    def run(self, rows, contiguous):
        """Train one epoch (``rows`` is the whole epoch); returns (steps, loss sum,
        hits, samples), or raises NonFiniteLoss with the weights restored."""
        ops.fill(self.acc, 0.0)
        ops.fill(self.flag, 0)
        self.launched = 0
        self.epoch_cur = self.cur
        for s in range(self.steps_per_epoch):
            self.queue_step(s)
        return self._finish()

    def _finish(self):
        """Wait for the queued steps; bring the parameters and metrics back."""
        acc = self.acc.copy_to_host()
        bad = int(self.flag.copy_to_host()[0])
        done = self.launched
        if bad:
            s = bad - 1
            # Step s met a non-finite loss; the parameters that gave the last finite
            # one are those before step s - 1's update (as on the host backends).
            j = self.taken + s
            self.cur = (self.epoch_cur + s - (1 if j else 0)) % 2
            # The optimizer's step count went on while the queued steps were skipped.
            self.opt.iterations -= done - s
            self.taken += s
            self._download()
            loss = float(acc[s, 0]) / (self.spans[s][1] - self.spans[s][0])
            raise NonFiniteLoss(self.spans[s][0], loss, steps=s)
        self.taken += done
        self._download()
        samples = self.spans[done - 1][1] if done else 0
        return done, float(acc[:done, 0].sum()), int(acc[:done, 1].sum()), samples

    def _download(self):
        ops.to_host(self.bufs[self.cur].flat, self.params.flat)
        for d, h in zip(self.state, self.opt.state):
            ops.to_host(d, h)

    def unreported(self):
        """After Ctrl-C: wait for the steps already queued, keep their parameters."""
        cuda.synchronize()
        try:
            return self._finish()
        except NonFiniteLoss:  # the weights were restored to the last finite loss
            return 0, 0.0, 0, 0
