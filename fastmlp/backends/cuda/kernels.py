"""The CUDA kernels of the ``cuda`` backend, written with Numba.

Kernels are made by factories, one specialisation per dtype and variant, and
cached: the tile sizes, the transposes and the epilogue are compile-time
constants of each kernel.

* ``gemm(dtype, tm, ta, tb, gather, mode, ts)``: ``C = op(A) op(B)`` in
  shared-memory tiles of ``ts*tm`` by ``ts*tm`` outputs, ``ts*ts`` threads (256 on
  a GPU) each computing ``tm`` by ``tm`` of them in registers. ``gather`` reads
  the rows of the data matrix through an index array (the shuffled batch, without
  a copy). ``mode`` is the
  epilogue: ``FWD`` adds the bias and applies the activation, ``BWD_IN``
  multiplies by the lower layer's activation derivative, ``BWD_W`` treats an
  extra row of ones in ``A^T`` so that the last output row is the bias gradient.
* ``rows(dtype)``: the loss, its gradient and the hits of each row, with the
  output activation computed from the logits (so a training step needs no
  separate activation kernel); the loss sum and hits are also added into a
  device accumulator, so training reads them once per epoch.
* ``update(dtype, rule)``: one pass over the flat parameter vector for each
  optimizer rule, L2 on its leading ``n_decayed`` entries; in training it first reads
  the step's loss from the accumulator and, if it is not finite, records the step
  in a flag and leaves everything untouched.
* ``activation_kernels`` (elementwise, or one thread per row for softmax),
  ``take_rows`` and ``fill``. The device shuffle is in ``shuffle.py``.

Below this module the kernels trust their inputs: shapes and dtypes are checked
by the model and the backend functions. The activation, loss and rule ids come
from ``fastmlp.functions``, the table checked against ``src_c/fm_ids.h``.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import cuda, float32, float64

from ...functions import (  # the kernel ids, from the one table
    ADAM,
    ADAMW,
    BINARY_CROSS_ENTROPY,
    CROSS_ENTROPY,
    GRAD_FLOOR,
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

FWD, BWD_IN, BWD_W = range(3)
TPB = 256  # threads per block of the one-dimensional kernels on a GPU
BK = 16  # depth of a shared-memory tile of the matrix product

_NB = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


def _scalars(dtype):  # 0, 1, 1/2 and the gradient floor (fastmlp.functions.GRAD_FLOOR)
    t = np.dtype(dtype).type
    return t(0), t(1), t(0.5), t(GRAD_FLOOR[np.dtype(dtype).name])


@cache
def elementwise(dtype):
    """Device functions of one element: activation and its derivative, flush."""
    zero, one, _, _ = _scalars(dtype)
    slope = np.dtype(dtype).type(LEAKY_RELU_SLOPE)

    @cuda.jit(device=True, inline=True)
    def sigmoid(z):
        if z >= zero:
            return one / (one + math.exp(-z))
        e = math.exp(z)
        return e / (one + e)

    @cuda.jit(device=True, inline=True)
    def act_value(act, z):
        if act == RELU:
            return z if z > zero else zero
        if act == LEAKY_RELU:
            return z if z > zero else slope * z
        if act == SIGMOID:
            return sigmoid(z)
        if act == TANH:
            return math.tanh(z)
        return z

    @cuda.jit(device=True, inline=True)
    def act_grad(act, a, g):
        """``g`` times the activation's derivative, given the activation ``a``."""
        if act == RELU:
            return g if a > zero else zero
        if act == LEAKY_RELU:
            return g if a > zero else slope * g
        if act == SIGMOID:
            return g * a * (one - a)
        if act == TANH:
            return g * (one - a * a)
        return g

    @cuda.jit(device=True, inline=True)
    def softplus(z):
        # max(z, 0) + log1p(exp(-|z|)), without overflow.
        return (z if z > zero else zero) + math.log1p(math.exp(-abs(z)))

    @cuda.jit(device=True, inline=True)
    def softmax_row(z, a, i):
        """``a[i] = softmax(z[i])``; returns ``log(sum(exp(z[i])))``."""
        m = z.shape[1]
        mx = z[i, 0]
        for j in range(1, m):
            mx = max(mx, z[i, j])
        t = zero
        for j in range(m):
            t += math.exp(z[i, j] - mx)
        lse = mx + math.log(t)
        for j in range(m):
            a[i, j] = math.exp(z[i, j] - lse)
        return lse

    @cuda.jit(device=True, inline=True)
    def softmax_grad_row(a, g, i):
        """``g[i]`` through the softmax whose output is ``a[i]``."""
        m = a.shape[1]
        d = zero
        for j in range(m):
            d += g[i, j] * a[i, j]
        for j in range(m):
            g[i, j] = a[i, j] * (g[i, j] - d)

    @cuda.jit(device=True, inline=True)
    def flush(v, bound):  # v, or zero below bound (a state's tiny, the gradient floor)
        return v if v <= -bound or v >= bound else v - v

    return sigmoid, act_value, act_grad, softplus, softmax_row, softmax_grad_row, flush


@cache
def gemm(dtype, tm, ta, tb, gather, mode, ts=16):
    """The tiled matrix product; launch with ``grid=(ceil(N/bm), ceil(M/bm))`` and
    ``block=(ts, ts)``, where ``bm = ts * tm`` (``ts`` must divide 16 * tm, and the
    simulator, which runs a thread per Python thread, is faster with a small ``ts``).

    Arguments ``(A, idx, B, C, V, bias, act, M, N, K)``:

    * ``op(A)`` is (M, K): ``A`` itself, or with ``ta`` the transpose of a (K, M)
      ``A``; with ``gather`` the rows of the stored ``A`` are ``idx[r]``.
      In ``BWD_W`` mode, M counts one extra row of ones (the bias gradient).
    * ``op(B)`` is (K, N): ``B``, or with ``tb`` the transpose of an (N, K) ``B``.
    * ``FWD``: ``C = act(op(A) op(B) + bias)``. ``BWD_IN``: ``C = (op(A) op(B)) *
      act'(V)``. ``BWD_W``: ``C[:M-1] = op(A) op(B)`` and ``bias = `` its last row.
    """
    nbt = _NB[np.dtype(dtype)]
    zero, one, _, _ = _scalars(dtype)
    _, act_value, act_grad, *_ = elementwise(dtype)
    bm = ts * tm
    pad = bm + 1
    nt = ts * ts
    loads = bm * BK // nt  # elements of each tile loaded by each thread

    @cuda.jit(device=True, inline=True)
    def tile_pos(lin, along_k):
        """(k, row or column) in a tile of the thread's ``lin``-th element: consecutive
        threads take consecutive elements of the operand's stored rows, which run
        along k or across it."""
        if along_k:
            return lin % BK, lin // BK
        return lin // bm, lin % bm

    @cuda.jit
    def kernel(A, idx, B, C, V, bias, act, M, N, K):
        As = cuda.shared.array((BK, pad), nbt)
        Bs = cuda.shared.array((BK, pad), nbt)
        acc = cuda.local.array((tm, tm), nbt)
        av = cuda.local.array(tm, nbt)
        bv = cuda.local.array(tm, nbt)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * ts + tx
        m0 = cuda.blockIdx.y * bm
        n0 = cuda.blockIdx.x * bm
        for i in range(tm):
            for j in range(tm):
                acc[i, j] = zero
        for k0 in range(0, K, BK):
            # Each thread loads tm elements of each tile, along the stored rows.
            for e in range(loads):
                lin = tid + e * nt
                kk, mm = tile_pos(lin, not ta)
                gm = m0 + mm
                gk = k0 + kk
                v = zero
                if gm < M and gk < K:
                    if ta:
                        r = idx[gk] if gather else gk
                        if mode == BWD_W and gm == M - 1:
                            v = one
                        else:
                            v = A[r, gm]
                    else:
                        r = idx[gm] if gather else gm
                        v = A[r, gk]
                As[kk, mm] = v
                kk, nn = tile_pos(lin, tb)
                gn = n0 + nn
                gk = k0 + kk
                w = zero
                if gn < N and gk < K:
                    w = B[gn, gk] if tb else B[gk, gn]
                Bs[kk, nn] = w
            cuda.syncthreads()
            for kk in range(min(BK, K - k0)):
                for i in range(tm):
                    av[i] = As[kk, ty + ts * i]
                for j in range(tm):
                    bv[j] = Bs[kk, tx + ts * j]
                for i in range(tm):
                    for j in range(tm):
                        acc[i, j] += av[i] * bv[j]
            cuda.syncthreads()
        # The accumulators are stored by a plain loop (which the compiler unrolls, so
        # they stay in registers), the activation applied after, in place.
        for i in range(tm):
            gm = m0 + ty + ts * i
            if gm < M:
                for j in range(tm):
                    gn = n0 + tx + ts * j
                    if gn < N:
                        c = acc[i, j]
                        if mode == FWD:
                            C[gm, gn] = c + bias[gn]
                        elif mode == BWD_IN or gm < M - 1:
                            C[gm, gn] = c
                        else:
                            bias[gn] = c
        if mode != BWD_W and act != LINEAR:
            for i in range(tm):
                gm = m0 + ty + ts * i
                if gm < M:
                    for j in range(tm):
                        gn = n0 + tx + ts * j
                        if gn < N:
                            if mode == FWD:
                                C[gm, gn] = act_value(act, C[gm, gn])
                            else:  # V is only read, and only passed, for a non-linear act
                                C[gm, gn] = act_grad(act, V[gm, gn], C[gm, gn])

    return kernel


@cache
def activation_kernels(dtype):
    """``forward(act, z, a)`` and ``backward(act, a, g)`` over (n, m) arrays.

    Launch with one thread per element, or one per row for softmax.
    """
    _, act_value, act_grad, _, softmax_row, softmax_grad_row, _ = elementwise(dtype)

    @cuda.jit
    def forward(act, z, a):
        n, m = z.shape
        i = cuda.grid(1)
        if act == SOFTMAX:
            if i < n:
                softmax_row(z, a, i)
        elif i < n * m:
            r = i // m
            c = i - r * m
            a[r, c] = act_value(act, z[r, c])

    @cuda.jit
    def backward(act, a, g):
        n, m = a.shape
        i = cuda.grid(1)
        if act == SOFTMAX:
            if i < n:
                softmax_grad_row(a, g, i)
        elif i < n * m:
            r = i // m
            c = i - r * m
            g[r, c] = act_grad(act, a[r, c], g[r, c])

    return forward, backward


@cache
def rows(dtype):
    """The loss kernel, one thread per row; launch over n threads.

    Arguments ``(loss, act, z, a, y, idx, gather, g, row_loss, hits, scale, acc, s)``:
    computes ``a = act(z)`` row by row, the row's loss into ``row_loss``, its
    gradient (times ``scale``, and through the activation where the loss does not
    fold it in) into ``g``, 1 or 0 into ``hits``, and adds the loss and the hit
    to ``acc[s, 0]`` and ``acc[s, 1]``. ``y`` rows are ``idx[r]`` with ``gather``.
    """
    zero, one, half, floor = _scalars(dtype)
    clip = np.dtype(dtype).type(1e-7 if np.dtype(dtype) == np.float32 else 1e-15)
    _, act_value, act_grad, softplus, softmax_row, softmax_grad_row, flush = elementwise(dtype)

    @cuda.jit
    def kernel(loss, act, z, a, y, idx, gather, g, row_loss, hits, scale, acc, s):
        i = cuda.grid(1)
        n, m = z.shape
        if i >= n:
            return
        yr = idx[i] if gather else i
        # The output activation; for softmax also log(sum exp), for the loss.
        lse = zero
        if act == SOFTMAX:
            lse = softmax_row(z, a, i)
        else:
            for j in range(m):
                a[i, j] = act_value(act, z[i, j])
        total = zero
        if loss == CROSS_ENTROPY and act == SOFTMAX:
            ysum = zero
            for j in range(m):
                ysum += y[yr, j]
            for j in range(m):
                total += y[yr, j] * (lse - z[i, j])
                g[i, j] = scale * (a[i, j] * ysum - y[yr, j])
        elif loss == CROSS_ENTROPY and act == SIGMOID:
            for j in range(m):
                total += y[yr, j] * softplus(-z[i, j])
                g[i, j] = scale * y[yr, j] * (a[i, j] - one)
        elif loss == BINARY_CROSS_ENTROPY and act == SIGMOID:
            for j in range(m):
                total += softplus(z[i, j]) - y[yr, j] * z[i, j]
                g[i, j] = scale * (a[i, j] - y[yr, j])
        else:
            for j in range(m):
                t = y[yr, j]
                if loss == BINARY_CROSS_ENTROPY:
                    p = min(max(a[i, j], clip), one - clip)
                    total -= t * math.log(p) + (one - t) * math.log(one - p)
                    g[i, j] = scale * (-t / p + (one - t) / (one - p))
                else:
                    d = a[i, j] - t
                    total += d * d / m
                    g[i, j] = scale * 2 * d / m
            if act == SOFTMAX:
                softmax_grad_row(a, g, i)
            else:
                for j in range(m):
                    g[i, j] = act_grad(act, a[i, j], g[i, j])
        for j in range(m):  # values below the gradient floor are zero, as on the CPU
            g[i, j] = flush(g[i, j], floor)
        hit = 0
        if m == 1:
            hit = 1 if (a[i, 0] >= half) == (y[yr, 0] >= half) else 0
        else:
            ba = 0
            by = 0
            for j in range(1, m):
                if a[i, j] > a[i, ba]:
                    ba = j
                if y[yr, j] > y[yr, by]:
                    by = j
            hit = 1 if ba == by else 0
        row_loss[i] = total
        hits[i] = hit
        cuda.atomic.add(acc, (s, 0), float64(total))
        cuda.atomic.add(acc, (s, 1), float64(hit))

    return kernel


@cache
def update(dtype, rule):
    """One optimizer rule's step over the flat parameters; launch over ``p.size`` threads.

    Arguments ``(p, g, s1, s2, out, n_decayed, l2, lr, mu, rho, eps, beta1, beta2,
    c1, c2, wd, acc, s, flag, check)``: the new parameters go to ``out`` (which may
    be ``p``), the state ``s1``, ``s2`` is updated in place, and L2 (and AdamW's
    decay) applies to ``p[:n_decayed]``. The hyper-parameters are those of
    ``fastmlp.functions.HYPER_PARAMETERS`` (``c1``, ``c2``: Adam's bias
    corrections; ``wd``: AdamW's decoupled weight decay). With ``check``, the step
    first reads its loss sum ``acc[s, 0]``: if it is not finite, or ``flag[0]`` is
    already set, nothing is written, and ``flag[0]`` becomes ``s + 1``.
    """
    _, one, _, floor = _scalars(dtype)
    tiny = np.dtype(dtype).type(np.finfo(dtype).tiny)
    flush = elementwise(dtype)[-1]

    @cuda.jit
    def kernel(p, g, s1, s2, out, n_decayed, l2, lr, mu, rho, eps, beta1, beta2, c1, c2,
               wd, acc, s, flag, check):
        i = cuda.grid(1)
        if check:
            if flag[0] != 0:
                return
            if not math.isfinite(acc[s, 0]):
                if i == 0:
                    flag[0] = s + 1
                return
        if i >= p.size:
            return
        pi = p[i]
        d = g[i] + l2 * pi if i < n_decayed else g[i]
        d = flush(d, floor)  # the gradient floor, as on the CPU
        if rule == SGD:
            pi -= lr * d
        elif rule == MOMENTUM or rule == NESTEROV:
            v = flush(mu * s1[i] - lr * d, tiny)
            s1[i] = v
            if rule == MOMENTUM:
                pi += v
            else:
                pi += mu * v - lr * d
        elif rule == RMSPROP:
            sq = flush(rho * s1[i] + (one - rho) * d * d, tiny)
            s1[i] = sq
            pi -= lr * d / (math.sqrt(sq) + eps)
        elif rule == ADAM or rule == ADAMW:
            mi = flush(beta1 * s1[i] + (one - beta1) * d, tiny)
            vi = flush(beta2 * s2[i] + (one - beta2) * d * d, tiny)
            s1[i] = mi
            s2[i] = vi
            if rule == ADAMW and i < n_decayed:
                pi *= one - lr * wd  # decoupled weight decay, before Adam's step
            pi -= lr * c1 * mi / (math.sqrt(c2 * vi) + eps)
        out[i] = pi

    return kernel


@cuda.jit
def fill(a, value):
    """``a[:] = value`` for a 1-D array; launch over ``a.size`` threads."""
    i = cuda.grid(1)
    if i < a.size:
        a[i] = value


@cuda.jit
def take_rows(src, idx, out):
    """``out[r] = src[idx[r]]``; launch over ``out.size`` threads."""
    i = cuda.grid(1)
    n, m = out.shape
    if i < n * m:
        r = i // m
        c = i - r * m
        out[r, c] = src[idx[r], c]
