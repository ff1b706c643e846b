"""Diagnostics of the cuda backend: the GPU's arithmetic ceiling and a compile
check of every kernel. Needs numba-cuda (``pip install 'fastmlp[cuda]'``)."""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..backends.cuda import kernels as K
from ..backends.cuda import shuffle
from ..functions import HYPER_PARAMETERS, RULES


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
            for ta, tb, mode in ((False, False, K.FWD), (False, True, K.BWD_IN),
                                 (True, False, K.BWD_W)):
                for gather in ((False, True) if mode != K.BWD_IN else (False,)):
                    compile_(f"gemm {tag} tm={tm} mode={mode} gather={gather}",
                             K.gemm(np.dtype(dt), tm, ta, tb, gather, mode, 16),
                             (a2, idx, a2, a2, a2, a1, i64, i64, i64, i64))
        fwd, bwd = K.activation_kernels(np.dtype(dt))
        compile_(f"activation_forward {tag}", fwd, (i64, a2, a2))
        compile_(f"activation_backward {tag}", bwd, (i64, a2, a2))
        compile_(f"rows {tag}", K.rows(np.dtype(dt)),
                 (i64, i64, a2, a2, a2, idx, flag, a2, a1, idx, nb, acc, i64))
        for rule in range(len(RULES)):
            compile_(f"update {tag} rule={RULES[rule]}", K.update(np.dtype(dt), rule),
                     (a1, a1, a1, a1, a1, i64, nb) + (nb,) * len(HYPER_PARAMETERS)
                     + (acc, i64, idx, flag))
        compile_(f"take_rows {tag}", K.take_rows, (a2, idx, a2))
    compile_("permutation", shuffle.permutation, (idx,) + (i64,) * 7 + (flag,))
    compile_("fma_chains", fma_chains, (types.Array(types.float32, 1, "C"), types.float32, i64))
    return report
