"""The ``cuda`` backend: Numba CUDA kernels on an NVIDIA GPU.

The functions have the signatures and the meanings of the ``numpy`` backend's,
on device arrays (``numba.cuda`` device arrays, made by :func:`empty` and
:func:`to_device`). ``fit`` does not call them step by step: it runs
:class:`Trainer`, which keeps the data set, the parameters, the optimizer's
state and every buffer on the device for the whole call, shuffles and batches
there, and reads the metrics back once per epoch.

Importing this module raises ``ImportError`` with the reason when numba-cuda,
the driver or a GPU is missing. With ``NUMBA_ENABLE_CUDASIM=1`` the kernels run
in Numba's CUDA simulator instead, on the CPU, slowly: that is how they are
tested without a GPU.
"""

from __future__ import annotations

import os

import numpy as np

try:
    from numba import cuda
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("numba-cuda is not installed; install fastmlp's cuda extra: "
                      "pip install 'fastmlp[cuda]'") from exc

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _probe():
    try:
        ok = cuda.is_available()
    except Exception as exc:  # noqa: BLE001 - any driver failure means "no GPU"
        return f"no usable CUDA driver ({exc})"
    if not ok:
        return ("no CUDA GPU or driver found (numba-cuda is installed; "
                "NUMBA_ENABLE_CUDASIM=1 runs the kernels in the CPU simulator)")
    return None


_reason = _probe()
if _reason:
    raise ImportError(_reason)

from . import cuda_kernels as K  # noqa: E402

# The simulator runs each GPU thread as a Python thread: small blocks keep it quick.
TPB = 32 if SIMULATOR else K.TPB
TS = 4 if SIMULATOR else 16

name = "cuda"
device = True

# ------------------------------------------------------------------ memory


def empty(shape, dtype):
    return cuda.device_array(shape, dtype=dtype)


def zeros(shape, dtype):
    out = cuda.device_array(shape, dtype=dtype)
    _fill(out, 0)
    return out


def is_device_array(a):
    return hasattr(a, "copy_to_host") and not isinstance(a, np.ndarray)


def to_device(a):
    """A device copy of a host array (a device array is returned as it is)."""
    if is_device_array(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a))


def to_host(d, out=None):
    """Copy a device array into ``out`` (a new host array without it)."""
    if out is None:
        return d.copy_to_host()
    if out.flags.c_contiguous:
        d.copy_to_host(out)
    else:
        out[...] = d.copy_to_host()
    return out


def synchronize():
    cuda.synchronize()


def _fill(d, value):
    flat = d.reshape(d.size) if d.ndim != 1 else d
    if flat.size:
        _fill_kernel[_blocks(flat.size), TPB](flat, value)


@cuda.jit
def _fill_kernel(a, value):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = value


def _blocks(n, tpb=TPB):
    return max(-(-n // tpb), 1)


_dummies = {}


def _dummy(dtype, ndim):
    """Small placeholder arrays for the kernels' unused arguments."""
    key = (np.dtype(dtype).str, ndim, id(cuda.current_context()) if not SIMULATOR else 0)
    d = _dummies.get(key)
    if d is None:
        d = _dummies[key] = cuda.device_array((1,) * ndim, dtype=dtype)
    return d


# ------------------------------------------------------------------ products

#: Number of multiprocessors, for the choice of the tile size.
def _sm_count():
    if SIMULATOR:
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


_SMS = None


def tile_for(M, N):
    """Register tile per thread (2, 4 or 8, the block computing TS times that square):
    the largest that still gives every multiprocessor a block."""
    global _SMS
    if _SMS is None:
        _SMS = _sm_count()
    for tm in (8, 4):
        if (-(-M // (TS * tm))) * (-(-N // (TS * tm))) >= _SMS:
            return tm
    return 2


def _gemm(A, B, C, V, bias, act, M, N, Kd, ta, tb, mode, idx=None):
    dt = C.dtype
    tm = tile_for(M, N)
    kern = K.gemm(np.dtype(dt), tm, ta, tb, idx is not None, mode, TS)
    bm = TS * tm
    grid = (-(-N // bm), -(-M // bm))
    if M and N:
        kern[grid, (TS, TS)](A, _dummy(np.int32, 1) if idx is None else idx, B, C,
                             _dummy(dt, 2) if V is None else V,
                             _dummy(dt, 1) if bias is None else bias, act, M, N, Kd)


def dense_forward(x, W, b, out, act=K.LINEAR, idx=None):
    """``out = act(x W + b)``; with ``idx``, x's rows ``idx`` (the gather is fused)."""
    n, m = out.shape
    fused = act if act != K.SOFTMAX else K.LINEAR
    _gemm(x, W, out, None, b, fused, n, m, W.shape[0], False, False, K.FWD, idx)
    if act == K.SOFTMAX:
        activation_forward(act, out, out)


def dense_backward_input(g, W, gx, act=K.LINEAR, a=None):
    """``gx = (g W^T) * act'(a)``."""
    n, k = gx.shape
    fused = act if act != K.SOFTMAX else K.LINEAR
    _gemm(g, W, gx, a if fused != K.LINEAR else None, None, fused, n, k, W.shape[1],
          False, True, K.BWD_IN)
    if act == K.SOFTMAX:
        activation_backward(act, a, gx)


def dense_backward_weight(x, g, gW, gb, idx=None):
    """``gW = x^T g`` and ``gb = sum(g, axis=0)`` in one product (a row of ones)."""
    k, m = gW.shape
    _gemm(x, g, gW, None, gb, K.LINEAR, k + 1, m, g.shape[0], True, False, K.BWD_W, idx)


def _activation(which, act, u, v):
    # One thread per element, or per row for softmax.
    n, m = u.shape
    if n * m:
        kern = K.activation_kernels(np.dtype(u.dtype))[which]
        kern[_blocks(n if act == K.SOFTMAX else n * m), TPB](act, u, v)


def activation_forward(act, z, a):
    _activation(0, act, z, a)


def activation_backward(act, a, g):
    _activation(1, act, a, g)


def _rows(loss, act, z, a, y, g, row_loss, hits, acc, s, idx=None, scale=None):
    n = z.shape[0]
    dt = np.dtype(z.dtype)
    kern = K.rows(dt)
    scale = dt.type(1.0 / n) if scale is None else scale
    kern[_blocks(n), TPB](loss, act, z, a, y, _dummy(np.int32, 1) if idx is None else idx,
                            idx is not None, g, row_loss, hits, scale, acc, s)


def loss_grad(loss, act, z, a, y, g, row_loss):
    """The output activation of ``z`` into ``a``, the loss and its gradient; returns
    (loss sum, hits) (this waits for the GPU)."""
    n = z.shape[0]
    if n == 0:
        return 0.0, 0
    hits = cuda.device_array(n, dtype=np.int32)
    acc = zeros((1, 2), np.float64)
    _rows(loss, act, z, a, y, g, row_loss, hits, acc, 0)
    total = acc.copy_to_host()  # the kernel's own sums: one copy back
    return float(total[0, 0]), int(total[0, 1])


def take_rows(src, idx, out):
    if out.size:
        K.take_rows[_blocks(out.size), TPB](src, to_device(np.asarray(idx, np.int32))
                                             if not is_device_array(idx) else idx, out)


# ------------------------------------------------------------------ updates

_KINDS = {"sgd": K.SGD, "momentum": K.MOMENTUM, "nesterov": K.NESTEROV,
          "rmsprop": K.RMSPROP, "adam": K.ADAM}


def _update(kind, p, g, s1, s2, out, n_decayed, l2, h, acc=None, s=0, flag=None):
    dt = np.dtype(p.dtype)
    t = dt.type
    hs = [t(v) for v in h] + [t(0)] * (6 - len(h))
    check = acc is not None
    K.update(dt, kind)[_blocks(p.size), TPB](
        p, g, _dummy(dt, 1) if s1 is None else s1, _dummy(dt, 1) if s2 is None else s2,
        p if out is None else out, n_decayed, t(l2), *hs,
        acc if check else _dummy(np.float64, 2), s,
        flag if check else _dummy(np.int32, 1), check)


def _decayed(p, l2):
    return p.size if l2 else 0


def sgd_update(p, g, lr, l2, out=None):
    _update(K.SGD, p, g, None, None, out, _decayed(p, l2), l2, (lr,))


def momentum_update(p, g, v, lr, mu, l2, out=None):
    _update(K.MOMENTUM, p, g, v, None, out, _decayed(p, l2), l2, (lr, mu))


def nesterov_update(p, g, v, lr, mu, l2, out=None):
    _update(K.NESTEROV, p, g, v, None, out, _decayed(p, l2), l2, (lr, mu))


def rmsprop_update(p, g, s, lr, rho, eps, l2, out=None):
    _update(K.RMSPROP, p, g, s, None, out, _decayed(p, l2), l2, (lr, rho, eps))


def adam_update(p, g, m, v, lr, beta1, beta2, eps, l2, c1, c2, out=None):
    _update(K.ADAM, p, g, m, v, out, _decayed(p, l2), l2, (lr, beta1, beta2, eps, c1, c2))


# ------------------------------------------------------------------ training


def launches_per_step(n_layers):
    """Kernel launches of one training step with ``n_layers`` weight layers: a
    product per layer forward, the loss, a product per layer for the weight and
    bias gradients, one per hidden layer for the input gradient, and the update (a
    softmax hidden layer, applied after its product, adds one launch each way). Each
    epoch adds three: the permutation and the zeroing of the accumulator and flag."""
    return n_layers + 1 + n_layers + (n_layers - 1) + 1


class Trainer:
    """``fit``'s mini-batch backprop, resident on the GPU.

    Made once per ``fit``: uploads the training data (once), the parameters (into
    the first of two device buffers) and the optimizer's state, and allocates
    every buffer of a step. Each epoch draws a permutation on the device (one
    launch), then queues the steps without waiting: each step's forward products
    read their batch through the permutation, the loss kernel adds the batch's loss
    and hits to this epoch's row of a device accumulator, and the update, which
    writes the other parameter buffer, first checks that the step's loss is finite
    (if not, it flags the step, and this and every later update leave the buffers
    alone). The host waits once per epoch, to read the accumulator, the flag and
    the new parameters.
    """

    def __init__(self, model, x, y, opt, l2, batch, free_bytes=None):
        self.model, self.opt, self.l2 = model, opt, l2
        self.n = n = len(x)
        self.batch = batch
        self.chunk = n
        self.steps_per_epoch = -(-n // batch)
        dt = model.dtype
        need = (x.nbytes + y.nbytes + model._params.nbytes * (4 + opt.n_slots)
                + batch * sum(model.layers) * dt.itemsize * 4 + n * 4)
        free = _free_memory() if free_bytes is None else free_bytes
        if free is not None and need > free:
            raise MemoryError(f"fit on the GPU needs about {need / 2**20:.0f} MiB for the "
                              f"data, parameters and buffers; the GPU has "
                              f"{free / 2**20:.0f} MiB free")
        self.x = to_device(x)
        self.y = to_device(y)
        self.bufs = [to_device(model._params), empty(model._params.shape, dt)]
        self.views = [model._split(b) for b in self.bufs]
        self.grads = empty(model._params.shape, dt)
        self.gW, self.gb = model._split(self.grads)
        opt.ensure_state(model._params)
        self.state = [to_device(s) for s in opt._state]
        self.order = cuda.device_array(n, dtype=np.int32)
        hidden = model.layers[1:]
        self.a = [empty((batch, m), dt) for m in hidden]
        self.z = empty((batch, hidden[-1]), dt)
        self.g = [empty((batch, m), dt) for m in hidden]
        self.row_loss = empty(batch, dt)
        self.hits = cuda.device_array(batch, dtype=np.int32)
        self.acc = cuda.device_array((self.steps_per_epoch, 2), dtype=np.float64)
        self.flag = cuda.device_array(1, dtype=np.int32)
        self.cur = 0  # index of the buffer holding the current parameters
        self.taken = 0
        self.launched = 0  # steps of this epoch whose update was queued
        # Row views of every step's batch, made once.
        self.spans = [(s, min(s + batch, n)) for s in range(0, n, batch)]
        self.idx = [self.order[a:b] for a, b in self.spans]
        self.cuts = {}
        self.lbits, self.rbits = K.split_bits(n)
        self.n_layers = len(model._W)

    # The loop in MLP.fit calls new_order, then run over the whole epoch.
    def new_order(self, shuffle):
        rng = self.model._shuffle_rng
        keys = rng.integers(0, 2**32, size=4, dtype=np.uint64) if shuffle \
            else np.zeros(4, np.uint64)
        K.permutation[_blocks(self.n), TPB](self.order, self.n, self.lbits, self.rbits,
                                              *[int(k) for k in keys], bool(shuffle))
        return range(self.n)

    def _views(self, m):
        v = self.cuts.get(m)
        if v is None:
            v = self.cuts[m] = ([a[:m] for a in self.a], self.z[:m], [g[:m] for g in self.g],
                                self.row_loss[:m], self.hits[:m],
                                np.dtype(self.model.dtype).type(1.0 / m))
        return v

    def _step(self, s):
        model = self.model
        acts = model._act_ids
        W, b = self.views[self.cur]
        lo, hi = self.spans[s]
        idx = self.idx[s]
        a, z, g, row_loss, hits, scale = self._views(hi - lo)
        L = self.n_layers
        inp = self.x
        for i in range(L):
            if i < L - 1:
                dense_forward(inp, W[i], b[i], a[i], acts[i], idx if i == 0 else None)
            else:
                dense_forward(inp, W[i], b[i], z, K.LINEAR, idx if i == 0 else None)
            inp = a[i]
        _rows(model._loss_id, acts[-1], z, a[-1], self.y, g[-1], row_loss, hits, self.acc, s,
              idx, scale)
        for i in range(L - 1, -1, -1):
            if i == 0:
                dense_backward_weight(self.x, g[0], self.gW[0], self.gb[0], idx)
            else:
                dense_backward_weight(a[i - 1], g[i], self.gW[i], self.gb[i])
                dense_backward_input(g[i], W[i], g[i - 1], acts[i - 1], a[i - 1])
        kind = _KINDS[self.opt.name]
        h = self.opt.hyper_parameters(self.opt.iterations + 1)
        nxt = 1 - self.cur
        s1 = self.state[0] if self.state else None
        s2 = self.state[1] if len(self.state) > 1 else None
        _update(kind, self.bufs[self.cur], self.grads, s1, s2, self.bufs[nxt],
                model._n_weights, self.l2, h, self.acc, s, self.flag)
        self.opt.iterations += 1
        self.cur = nxt
        self.launched = s + 1

    def run(self, rows, contiguous):
        """Train one epoch (``rows`` is the whole epoch); returns (steps, loss sum,
        hits, samples), or raises the model's non-finite-loss error."""
        _fill(self.acc, 0.0)
        _fill(self.flag, 0)
        self.launched = 0
        self.epoch_cur = self.cur
        for s in range(self.steps_per_epoch):
            self._step(s)
        return self._finish()

    def _finish(self):
        """Wait for the queued steps; bring the parameters and metrics back."""
        from ..model import _NonFiniteLoss

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
            raise _NonFiniteLoss(self.spans[s][0], loss, steps=s)
        self.taken += done
        self._download()
        samples = self.spans[done - 1][1] if done else 0
        return done, float(acc[:done, 0].sum()), int(acc[:done, 1].sum()), samples

    def _download(self):
        to_host(self.bufs[self.cur], self.model._params)
        for d, h in zip(self.state, self.opt._state):
            to_host(d, h)

    def unreported(self):
        """After Ctrl-C: wait for the steps already queued, keep their parameters."""
        cuda.synchronize()
        try:
            return self._finish()
        except Exception:  # noqa: BLE001 - a non-finite loss: weights already restored
            return 0, 0.0, 0, 0


def _free_memory():
    if SIMULATOR:
        return None
    free, _ = cuda.current_context().get_memory_info()
    return free


def device_info() -> dict:
    """The GPU's name, compute capability, memory and the CUDA versions."""
    if SIMULATOR:
        return {"gpu": "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1; runs on the CPU)"}
    dev = cuda.get_current_device()
    free, total = cuda.current_context().get_memory_info()
    name_ = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    info = {"gpu": name_, "compute_capability": "{}.{}".format(*dev.compute_capability),
            "multiprocessors": dev.MULTIPROCESSOR_COUNT,
            "memory": f"{total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)"}
    try:
        info["cuda_driver"] = "{}.{}".format(*cuda.cudadrv.driver.driver.get_version())
    except Exception:  # noqa: BLE001
        pass
    try:
        info["cuda_runtime"] = "{}.{}".format(*cuda.runtime.get_version())
    except Exception:  # noqa: BLE001
        pass
    try:
        import numba

        info["numba"] = numba.__version__
        from importlib.metadata import version

        info["numba_cuda"] = version("numba-cuda")
    except Exception:  # noqa: BLE001
        pass
    return info
