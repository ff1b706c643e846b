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
* ``update(dtype, kind)``: one pass over the flat parameter vector for each
  optimizer, L2 on its leading ``n_decayed`` entries; in training it first reads
  the step's loss from the accumulator and, if it is not finite, records the step
  in a flag and leaves everything untouched.
* ``activation_forward``, ``activation_backward`` (elementwise, or one thread per
  row for softmax), ``take_rows`` and ``permutation`` (the device shuffle).

Below this module the kernels trust their inputs: shapes and dtypes are checked
by the model and the backend functions.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import cuda, float32, float64

LINEAR, RELU, SIGMOID, TANH, SOFTMAX = range(5)
CROSS_ENTROPY, BINARY_CROSS_ENTROPY, MSE = range(3)
FWD, BWD_IN, BWD_W = range(3)
SGD, MOMENTUM, NESTEROV, RMSPROP, ADAM = range(5)
TPB = 256  # threads per block of the one-dimensional kernels on a GPU
BK = 16  # depth of a shared-memory tile of the matrix product

_NB = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


def _scalars(dtype):
    t = np.dtype(dtype).type
    return t(0), t(1), t(0.5)


@cache
def elementwise(dtype):
    """Device functions of one element: activation and its derivative."""
    zero, one, _ = _scalars(dtype)

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

    return sigmoid, act_value, act_grad, softplus, softmax_row, softmax_grad_row


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
    zero, one, _ = _scalars(dtype)
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
    _, act_value, act_grad, _, softmax_row, softmax_grad_row = elementwise(dtype)

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
    zero, one, half = _scalars(dtype)
    clip = np.dtype(dtype).type(1e-7 if np.dtype(dtype) == np.float32 else 1e-15)
    _, act_value, act_grad, softplus, softmax_row, softmax_grad_row = elementwise(dtype)

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
def update(dtype, kind):
    """One optimizer's step over the flat parameters; launch over ``p.size`` threads.

    Arguments ``(p, g, s1, s2, out, n_decayed, l2, h0, h1, h2, h3, h4, h5, acc, s,
    flag, check)``: the new parameters go to ``out`` (which may be ``p``), the
    state ``s1``, ``s2`` is updated in place, and L2 applies to ``p[:n_decayed]``.
    The hyper-parameters ``h0..h5`` are: sgd ``lr``; momentum and nesterov
    ``lr, mu``; rmsprop ``lr, rho, eps``; adam ``lr, beta1, beta2, eps, c1, c2``
    (the bias corrections). With ``check``, the step first reads its loss sum
    ``acc[s, 0]``: if it is not finite, or ``flag[0]`` is already set, nothing is
    written, and ``flag[0]`` becomes ``s + 1``.
    """
    one = np.dtype(dtype).type(1)

    @cuda.jit
    def kernel(p, g, s1, s2, out, n_decayed, l2, h0, h1, h2, h3, h4, h5, acc, s, flag,
               check):
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
        d = g[i]
        if i < n_decayed:
            d += l2 * pi
        if kind == SGD:
            pi -= h0 * d
        elif kind == MOMENTUM or kind == NESTEROV:
            v = h1 * s1[i] - h0 * d
            s1[i] = v
            if kind == MOMENTUM:
                pi += v
            else:
                pi += h1 * v - h0 * d
        elif kind == RMSPROP:
            sq = h1 * s1[i] + (one - h1) * d * d
            s1[i] = sq
            pi -= h0 * d / (math.sqrt(sq) + h2)
        else:
            mi = h1 * s1[i] + (one - h1) * d
            vi = h2 * s2[i] + (one - h2) * d * d
            s1[i] = mi
            s2[i] = vi
            pi -= h0 * h4 * mi / (math.sqrt(h5 * vi) + h3)
        out[i] = pi

    return kernel


@cuda.jit
def take_rows(src, idx, out):
    """``out[r] = src[idx[r]]``; launch over ``out.size`` threads."""
    i = cuda.grid(1)
    n, m = out.shape
    if i < n * m:
        r = i // m
        c = i - r * m
        out[r, c] = src[idx[r], c]


_MASK = 0xFFFFFFFF


_MUL = 0x45D9F3B  # below 2**27: a 32-bit value times it stays below 2**59


@cuda.jit(device=True, inline=True)
def _round(x, key):
    # A 32-bit mix (xor-shift, multiply), in 64-bit integers that never overflow.
    h = (x ^ key) & _MASK
    h = (((h >> 16) ^ h) * _MUL) & _MASK
    h = (((h >> 16) ^ h) * _MUL) & _MASK
    return (h >> 16) ^ h


@cuda.jit(device=True, inline=True)
def _feistel(x, lbits, rbits, k0, k1, k2, k3):
    lmask = (1 << lbits) - 1
    rmask = (1 << rbits) - 1
    left = x >> rbits
    right = x & rmask
    # Four rounds of an unbalanced Feistel network over lbits + rbits bits.
    left = (left ^ _round(right, k0)) & lmask
    right = (right ^ _round(left, k1)) & rmask
    left = (left ^ _round(right, k2)) & lmask
    right = (right ^ _round(left, k3)) & rmask
    return (left << rbits) | right


@cuda.jit
def permutation(order, n, lbits, rbits, k0, k1, k2, k3, shuffle):
    """``order[i]``: a permutation of ``range(n)`` drawn by the keys, or ``i`` without
    ``shuffle``. A bijection of the ``lbits + rbits``-bit integers, walked along its
    cycle until it lands below ``n``; launch over ``n`` threads."""
    i = cuda.grid(1)
    if i >= n:
        return
    if not shuffle:
        order[i] = i
        return
    x = np.int64(i)
    x = _feistel(x, lbits, rbits, k0, k1, k2, k3)
    while x >= n:
        x = _feistel(x, lbits, rbits, k0, k1, k2, k3)
    order[i] = x


def permutation_host(n, keys, shuffle=True):
    """The same permutation as the ``permutation`` kernel, in NumPy (for tests)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    lbits, rbits = split_bits(n)
    k = [np.uint64(v) for v in keys]
    mask = np.uint64(_MASK)

    mul, s16 = np.uint64(_MUL), np.uint64(16)

    def rnd(x, key):
        h = (x ^ key) & mask
        h = (((h >> s16) ^ h) * mul) & mask
        h = (((h >> s16) ^ h) * mul) & mask
        return (h >> s16) ^ h

    def feistel(x):
        lmask = np.uint64((1 << lbits) - 1)
        rmask = np.uint64((1 << rbits) - 1)
        left, right = x >> np.uint64(rbits), x & rmask
        left = (left ^ rnd(right, k[0])) & lmask
        right = (right ^ rnd(left, k[1])) & rmask
        left = (left ^ rnd(right, k[2])) & lmask
        right = (right ^ rnd(left, k[3])) & rmask
        return (left << np.uint64(rbits)) | right

    x = feistel(np.arange(n, dtype=np.uint64))
    out = x.copy()
    todo = out >= n
    while todo.any():
        out[todo] = feistel(out[todo])
        todo = out >= n
    return out.astype(np.int64)


def split_bits(n):
    """Bits of the left and right halves of the Feistel network for ``range(n)``."""
    bits = max(int(n - 1).bit_length(), 2)
    return bits // 2, bits - bits // 2


@cuda.jit
def fma_chains(out, x, iters):
    """8 independent chains of ``iters`` fused multiply-adds per thread: the GPU's
    arithmetic ceiling (for ``fastmlp profile``)."""
    i = cuda.grid(1)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = x * (i + 1)
    for _ in range(iters):
        a0 = a0 * x + x
        a1 = a1 * x + x
        a2 = a2 * x + x
        a3 = a3 * x + x
        a4 = a4 * x + x
        a5 = a5 * x + x
        a6 = a6 * x + x
        a7 = a7 * x + x
    out[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7


def ptx_report(cc=(9, 0)) -> dict:
    """Compile every kernel variant the backend launches to PTX for compute capability
    ``cc`` (no GPU needed, only NVVM: numba-cuda's ``cu13``/``cu12`` extra), and count
    in each the local-memory loads and stores (register spills, or per-thread arrays
    the compiler could not keep in registers). Returns ``{kernel: count}``."""
    from numba import types

    i64, flag = types.int64, types.boolean
    idx = types.Array(types.int32, 1, "C")
    acc = types.Array(types.float64, 2, "C")
    report = {}

    def compile_(name, fn, sig):
        ptx, _ = cuda.compile_ptx(fn.py_func, sig, cc=cc)
        report[name] = ptx.count("ld.local") + ptx.count("st.local")

    for dt, nb in ((np.float32, types.float32), (np.float64, types.float64)):
        a1, a2 = types.Array(nb, 1, "C"), types.Array(nb, 2, "C")
        tag = np.dtype(dt).name
        for tm in (2, 4, 8):
            for ta, tb, mode in ((False, False, FWD), (False, True, BWD_IN), (True, False, BWD_W)):
                for gather in ((False, True) if mode != BWD_IN else (False,)):
                    compile_(f"gemm {tag} tm={tm} mode={mode} gather={gather}",
                             gemm(np.dtype(dt), tm, ta, tb, gather, mode, 16),
                             (a2, idx, a2, a2, a2, a1, i64, i64, i64, i64))
        fwd, bwd = activation_kernels(np.dtype(dt))
        compile_(f"activation_forward {tag}", fwd, (i64, a2, a2))
        compile_(f"activation_backward {tag}", bwd, (i64, a2, a2))
        compile_(f"rows {tag}", rows(np.dtype(dt)),
                 (i64, i64, a2, a2, a2, idx, flag, a2, a1, idx, nb, acc, i64))
        for kind in range(5):
            compile_(f"update {tag} kind={kind}", update(np.dtype(dt), kind),
                     (a1, a1, a1, a1, a1, i64, nb) + (nb,) * 6 + (acc, i64, idx, flag))
        compile_(f"take_rows {tag}", take_rows, (a2, idx, a2))
    compile_("permutation", permutation, (idx,) + (i64,) * 7 + (flag,))
    compile_("fma_chains", fma_chains, (types.Array(types.float32, 1, "C"), types.float32, i64))
    return report
