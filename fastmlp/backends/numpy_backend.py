"""The ``numpy`` backend: the readable reference every other backend is tested against.

Each function has the signature and the meaning that ``fastmlp.backends``
documents for every backend. Shapes: x is (n, k), W is (k, m), b is (m,), z, a
and g are (n, m).
"""

from __future__ import annotations

import numpy as np

from ..bf16 import round_bf16
from ..functions import (
    ADAM,
    ADAMW,
    BINARY_CROSS_ENTROPY,
    CROSS_ENTROPY,
    GRAD_FLOOR,
    HYPER_PARAMETERS,
    LEAKY_RELU,
    LEAKY_RELU_SLOPE,
    LINEAR,
    MOMENTUM,
    NESTEROV,
    RELU,
    RMSPROP,
    SGD,
    SIGMOID,
    SOFTMAX,
    TANH,
)
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

name = "numpy"


def take_rows(src, idx, out):
    np.take(src, idx, axis=0, out=out)


def _operands(bf16, *arrays):
    # Under mixed_bfloat16 the products' operands are rounded to bfloat16 first.
    return [round_bf16(a) for a in arrays] if bf16 else arrays


def dense_forward(x, W, b, out, act=LINEAR, idx=None, bf16=False):
    x, W = _operands(bf16, rows_of(x, idx), W)
    np.matmul(x, W, out=out)
    out += b
    if act != LINEAR:
        activation_forward(act, out, out)


def dense_backward_input(g, W, gx, act=LINEAR, a=None, bf16=False):
    gr, W = _operands(bf16, g, W)
    np.matmul(gr, W.T, out=gx)
    if act != LINEAR:
        activation_backward(act, a, gx)


def dense_backward_weight(x, g, gW, gb, idx=None, bf16=False):
    xr, gr = _operands(bf16, rows_of(x, idx), g)
    np.matmul(xr.T, gr, out=gW)
    np.sum(g, axis=0, out=gb)


def _sigmoid(z):
    # exp of a non-positive number only, so nothing overflows.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(z):
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def _logsumexp(z):
    mx = z.max(axis=1, keepdims=True)
    return mx + np.log(np.exp(z - mx).sum(axis=1, keepdims=True))


def activation_forward(act, z, a):
    if act == RELU:
        np.maximum(z, 0, out=a)
    elif act == LEAKY_RELU:
        a[...] = np.where(z > 0, z, LEAKY_RELU_SLOPE * z)
    elif act == SIGMOID:
        a[...] = _sigmoid(z)
    elif act == TANH:
        np.tanh(z, out=a)
    elif act == SOFTMAX:
        if z.shape[1]:
            a[...] = np.exp(z - _logsumexp(z))
    else:
        a[...] = z


def activation_backward(act, a, g):
    if act == RELU:
        g[a <= 0] = 0
    elif act == LEAKY_RELU:
        g[a <= 0] *= LEAKY_RELU_SLOPE
    elif act == SIGMOID:
        g *= a * (1 - a)
    elif act == TANH:
        g *= 1 - a * a
    elif act == SOFTMAX:
        g[...] = a * (g - (g * a).sum(axis=1, keepdims=True))


def loss_grad(loss, act, z, a, y, g, row_loss, idx=None, acc=None):
    n, m = z.shape
    if n == 0:
        return 0.0, 0
    y = rows_of(y, idx)
    activation_forward(act, z, a)
    scale = 1.0 / n
    if loss == CROSS_ENTROPY and act == SOFTMAX:
        row_loss[:] = (y * (_logsumexp(z) - z)).sum(axis=1)
        g[...] = scale * (a * y.sum(axis=1, keepdims=True) - y)
    elif loss == CROSS_ENTROPY and act == SIGMOID:
        row_loss[:] = (y * _softplus(-z)).sum(axis=1)
        g[...] = scale * y * (a - 1)
    elif loss == BINARY_CROSS_ENTROPY and act == SIGMOID:
        row_loss[:] = (_softplus(z) - y * z).sum(axis=1)
        g[...] = scale * (a - y)
    elif loss == BINARY_CROSS_ENTROPY:
        clip = 1e-7 if a.dtype == np.float32 else 1e-15
        p = np.clip(a, clip, 1 - clip)
        row_loss[:] = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(axis=1)
        g[...] = scale * (-y / p + (1 - y) / (1 - p))
        activation_backward(act, a, g)
    else:
        d = a - y
        row_loss[:] = (d * d).sum(axis=1) / m
        g[...] = scale * 2 * d / m
        activation_backward(act, a, g)
    _flush(g, GRAD_FLOOR[g.dtype.name])  # the gradient floor, as the update's
    if m == 1:
        hits = int(((a[:, 0] >= 0.5) == (y[:, 0] >= 0.5)).sum())
    else:
        hits = int((a.argmax(axis=1) == y.argmax(axis=1)).sum())
    total = float(row_loss.sum())
    accumulate(acc, total, hits)
    return total, hits


def _l2(p, g, l2):
    """The gradient with its L2 term, values below the floor read as zero (as in
    every backend's update; fastmlp.functions.GRAD_FLOOR says why)."""
    d = g + l2 * p if l2 else g
    tiny = np.abs(d) < GRAD_FLOOR[d.dtype.name]
    return np.where(tiny, d.dtype.type(0), d) if tiny.any() else d


# The rules, in place on p (a copy of the parameters when the caller wants them
# kept); h maps the names of fastmlp.functions.HYPER_PARAMETERS to their values.
def _sgd(p, g, s1, s2, h, l2):
    p -= h["lr"] * _l2(p, g, l2)


def _flush(s, bound=None):
    """Values below ``bound`` in magnitude become zero, in place; by default the
    smallest normal number, as every backend's update stores its state (a state
    decaying through the subnormals is slow on CPUs)."""
    s[np.abs(s) < (np.finfo(s.dtype).tiny if bound is None else bound)] = 0


def _momentum(p, g, v, s2, h, l2):
    lr, mu = h["lr"], h["mu"]
    v *= mu
    v -= lr * _l2(p, g, l2)
    _flush(v)
    p += v


def _nesterov(p, g, v, s2, h, l2):
    lr, mu = h["lr"], h["mu"]
    d = _l2(p, g, l2)
    v *= mu
    v -= lr * d
    _flush(v)
    p += mu * v - lr * d


def _rmsprop(p, g, s, s2, h, l2):
    lr, rho, eps = h["lr"], h["rho"], h["eps"]
    d = _l2(p, g, l2)
    s *= rho
    s += (1 - rho) * d * d
    _flush(s)
    p -= lr * d / (np.sqrt(s) + eps)


def _adam_moments(p, g, m, v, h, l2):
    d = _l2(p, g, l2)
    m *= h["beta1"]
    m += (1 - h["beta1"]) * d
    v *= h["beta2"]
    v += (1 - h["beta2"]) * d * d
    _flush(m)
    _flush(v)


def _adam_step(p, m, v, h):
    p -= h["lr"] * h["c1"] * m / (np.sqrt(h["c2"] * v) + h["eps"])


def _adam(p, g, m, v, h, l2):
    _adam_moments(p, g, m, v, h, l2)
    _adam_step(p, m, v, h)


def _adamw(p, g, m, v, h, l2):
    # The moments from the gradient at the weights as they were; then the weights
    # shrink by 1 - lr wd (decoupled weight decay) before Adam's step.
    _adam_moments(p, g, m, v, h, l2)
    p *= 1 - h["lr"] * h["wd"]
    _adam_step(p, m, v, h)


_RULES = {SGD: _sgd, MOMENTUM: _momentum, NESTEROV: _nesterov, RMSPROP: _rmsprop,
          ADAM: _adam, ADAMW: _adamw}


def update(rule, p, g, s1, s2, hyper, l2, n_decayed, out=None, check=None):
    if update_skipped(check):
        return
    if out is not None:
        np.copyto(out, p)
        p = out
    fn, named = _RULES[rule], dict(zip(HYPER_PARAMETERS, hyper))
    # The decayed entries (the weights) first, then the biases without L2 or decay.
    for lo, hi, decayed in ((0, n_decayed, True), (n_decayed, p.size, False)):
        if hi > lo:
            cut = slice(lo, hi)
            fn(p[cut], g[cut], None if s1 is None else s1[cut],
               None if s2 is None else s2[cut], named if decayed else {**named, "wd": 0.0},
               l2 if decayed else 0.0)
