"""The ``numpy`` backend: the readable reference every other backend is tested against.

Each function has the signature and the meaning of the compiled kernel of the
same name in ``fastmlp._cpu``; see the docstrings there. Shapes: x is (n, k),
W is (k, m), b is (m,), z, a and g are (n, m).
"""

from __future__ import annotations

import numpy as np

from ..functions import ACTIVATIONS, LOSSES
from ._host import device, empty, synchronize, to_device, to_host, zeros  # noqa: F401

name = "numpy"

_LINEAR, _RELU, _SIGMOID, _TANH, _SOFTMAX = range(len(ACTIVATIONS))
_CROSS_ENTROPY, _BINARY_CROSS_ENTROPY, _MSE = range(len(LOSSES))


def take_rows(src, idx, out):
    np.take(src, idx, axis=0, out=out)


def dense_forward(x, W, b, out, act=_LINEAR):
    np.matmul(x, W, out=out)
    out += b
    if act != _LINEAR:
        activation_forward(act, out, out)


def dense_backward_input(g, W, gx, act=_LINEAR, a=None):
    np.matmul(g, W.T, out=gx)
    if act != _LINEAR:
        activation_backward(act, a, gx)


def dense_backward_weight(x, g, gW, gb):
    np.matmul(x.T, g, out=gW)
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
    if act == _RELU:
        np.maximum(z, 0, out=a)
    elif act == _SIGMOID:
        a[...] = _sigmoid(z)
    elif act == _TANH:
        np.tanh(z, out=a)
    elif act == _SOFTMAX:
        if z.shape[1]:
            a[...] = np.exp(z - _logsumexp(z))
    else:
        a[...] = z


def activation_backward(act, a, g):
    if act == _RELU:
        g[a <= 0] = 0
    elif act == _SIGMOID:
        g *= a * (1 - a)
    elif act == _TANH:
        g *= 1 - a * a
    elif act == _SOFTMAX:
        g[...] = a * (g - (g * a).sum(axis=1, keepdims=True))


def loss_grad(loss, act, z, a, y, g, row_loss):
    n, m = z.shape
    if n == 0:
        return 0.0, 0
    scale = 1.0 / n
    if loss == _CROSS_ENTROPY and act == _SOFTMAX:
        row_loss[:] = (y * (_logsumexp(z) - z)).sum(axis=1)
        g[...] = scale * (a * y.sum(axis=1, keepdims=True) - y)
    elif loss == _CROSS_ENTROPY and act == _SIGMOID:
        row_loss[:] = (y * _softplus(-z)).sum(axis=1)
        g[...] = scale * y * (a - 1)
    elif loss == _BINARY_CROSS_ENTROPY and act == _SIGMOID:
        row_loss[:] = (_softplus(z) - y * z).sum(axis=1)
        g[...] = scale * (a - y)
    elif loss == _BINARY_CROSS_ENTROPY:
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
    if m == 1:
        hits = int(((a[:, 0] >= 0.5) == (y[:, 0] >= 0.5)).sum())
    else:
        hits = int((a.argmax(axis=1) == y.argmax(axis=1)).sum())
    return float(row_loss.sum()), hits


def _l2(p, g, l2):
    return g + l2 * p if l2 else g


def _target(p, out):
    # The updates below work in place; with out given, on a copy of p in out.
    if out is None:
        return p
    np.copyto(out, p)
    return out


def sgd_update(p, g, lr, l2, out=None):
    p = _target(p, out)
    p -= lr * _l2(p, g, l2)


def momentum_update(p, g, v, lr, mu, l2, out=None):
    p = _target(p, out)
    v *= mu
    v -= lr * _l2(p, g, l2)
    p += v


def nesterov_update(p, g, v, lr, mu, l2, out=None):
    p = _target(p, out)
    d = _l2(p, g, l2)
    v *= mu
    v -= lr * d
    p += mu * v - lr * d


def rmsprop_update(p, g, s, lr, rho, eps, l2, out=None):
    p = _target(p, out)
    d = _l2(p, g, l2)
    s *= rho
    s += (1 - rho) * d * d
    p -= lr * d / (np.sqrt(s) + eps)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, l2, c1, c2, out=None):
    p = _target(p, out)
    d = _l2(p, g, l2)
    m *= beta1
    m += (1 - beta1) * d
    v *= beta2
    v += (1 - beta2) * d * d
    p -= lr * c1 * m / (np.sqrt(c2 * v) + eps)
