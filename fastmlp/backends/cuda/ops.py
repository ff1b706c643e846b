"""The ``cuda`` backend's functions (see ``fastmlp.backends``) on device arrays:
``numba.cuda`` device arrays, made by :func:`empty` and :func:`to_device`.

Importing this module needs numba-cuda but no GPU (the kernels can be compiled
without one); ``fastmlp.backends.cuda.backend`` checks for the GPU.
"""

from __future__ import annotations

import os

import numpy as np

try:
    from numba import cuda
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("numba-cuda is not installed; install fastmlp's cuda extra: "
                      "pip install 'fastmlp[cuda]'") from exc

from ...functions import LINEAR, SOFTMAX  # noqa: E402
from . import kernels as K  # noqa: E402

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

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
    fill(out, 0)
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


def fill(d, value):
    flat = d.reshape(d.size) if d.ndim != 1 else d
    if flat.size:
        K.fill[blocks(flat.size), TPB](flat, value)


def blocks(n, tpb=TPB):
    return max(-(-n // tpb), 1)


_cache = {}


def _cached(shape, dtype):
    """A device array kept for reuse (per shape, dtype and context): placeholders for
    the kernels' unused arguments, and scratch that a step must not allocate."""
    key = (shape, np.dtype(dtype).str, id(cuda.current_context()) if not SIMULATOR else 0)
    d = _cache.get(key)
    if d is None:
        d = _cache[key] = cuda.device_array(shape, dtype=dtype)
    return d


def _dummy(dtype, ndim):
    return _cached((1,) * ndim, dtype)


# ------------------------------------------------------------------ products

#: Number of multiprocessors, for the choice of the tile size.
def sm_count():
    if SIMULATOR:
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


_SMS = None


def tile_for(M, N):
    """Register tile per thread (2, 4 or 8, the block computing TS times that square):
    the largest that still gives every multiprocessor a block."""
    global _SMS
    if _SMS is None:
        _SMS = sm_count()
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


def dense_forward(x, W, b, out, act=LINEAR, idx=None):
    """``out = act(x W + b)``; with ``idx``, x's rows ``idx`` (the gather is fused)."""
    n, m = out.shape
    fused = act if act != SOFTMAX else LINEAR
    _gemm(x, W, out, None, b, fused, n, m, W.shape[0], False, False, K.FWD, idx)
    if act == SOFTMAX:
        activation_forward(act, out, out)


def dense_backward_input(g, W, gx, act=LINEAR, a=None):
    """``gx = (g W^T) * act'(a)``."""
    n, k = gx.shape
    fused = act if act != SOFTMAX else LINEAR
    _gemm(g, W, gx, a if fused != LINEAR else None, None, fused, n, k, W.shape[1],
          False, True, K.BWD_IN)
    if act == SOFTMAX:
        activation_backward(act, a, gx)


def dense_backward_weight(x, g, gW, gb, idx=None):
    """``gW = x^T g`` and ``gb = sum(g, axis=0)`` in one product (a row of ones)."""
    k, m = gW.shape
    _gemm(x, g, gW, None, gb, LINEAR, k + 1, m, g.shape[0], True, False, K.BWD_W, idx)


def _activation(which, act, u, v):
    # One thread per element, or per row for softmax.
    n, m = u.shape
    if n * m:
        kern = K.activation_kernels(np.dtype(u.dtype))[which]
        kern[blocks(n if act == SOFTMAX else n * m), TPB](act, u, v)


def activation_forward(act, z, a):
    _activation(0, act, z, a)


def activation_backward(act, a, g):
    _activation(1, act, a, g)


def loss_grad(loss, act, z, a, y, g, row_loss, idx=None, acc=None):
    """The output activation of ``z`` into ``a``, the loss and its gradient; with
    ``acc = (array, s)`` the loss sum and hits are added to ``array[s]`` on the
    device and None is returned (no wait), else (loss sum, hits) (this waits)."""
    n = z.shape[0]
    if n == 0:
        return None if acc is not None else (0.0, 0)
    dt = np.dtype(z.dtype)
    arr, s = acc if acc is not None else (zeros((1, 2), np.float64), 0)
    hits = _cached((n,), np.int32)
    K.rows(dt)[blocks(n), TPB](loss, act, z, a, y, _dummy(np.int32, 1) if idx is None
                                 else idx, idx is not None, g, row_loss, hits,
                                 dt.type(1.0 / n), arr, s)
    if acc is not None:
        return None
    total = arr.copy_to_host()  # the kernel's own sums: one copy back
    return float(total[0, 0]), int(total[0, 1])


def take_rows(src, idx, out):
    if out.size:
        K.take_rows[blocks(out.size), TPB](src, to_device(np.asarray(idx, np.int32))
                                             if not is_device_array(idx) else idx, out)


# ------------------------------------------------------------------ updates

def update(rule, p, g, s1, s2, hyper, l2, n_decayed, out=None, check=None):
    """One step of the optimizer rule ``rule``; see ``fastmlp.backends``. With
    ``check = (acc, s, flag)`` the kernel itself skips, and flags, a step whose loss
    sum is not finite (training queues steps without waiting)."""
    dt = np.dtype(p.dtype)
    t = dt.type
    acc, s, flag = check if check is not None else (_dummy(np.float64, 2), 0,
                                                    _dummy(np.int32, 1))
    K.update(dt, rule)[blocks(p.size), TPB](
        p, g, _dummy(dt, 1) if s1 is None else s1, _dummy(dt, 1) if s2 is None else s2,
        p if out is None else out, n_decayed, t(l2), *[t(v) for v in hyper],
        acc, s, flag, check is not None)


# ------------------------------------------------------------------ training

def launches_per_step(n_layers):
    """Kernel launches of one training step with ``n_layers`` weight layers: a
    product per layer forward, the loss, a product per layer for the weight and
    bias gradients, one per hidden layer for the input gradient, and the update (a
    softmax hidden layer, applied after its product, adds one launch each way). Each
    epoch adds three: the permutation and the zeroing of the accumulator and flag."""
    return n_layers + 1 + n_layers + (n_layers - 1) + 1


def free_memory():
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
