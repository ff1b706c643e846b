"""bfloat16 products: the ``mixed_bfloat16`` policy's arithmetic, written out.

Under ``dtype="mixed_bfloat16"`` a model keeps its weights, optimizer state and
update in float32; the operands of the three products of each layer (forward,
input gradient, weight gradient) are rounded to bfloat16 and the products are
summed in float32. On the ``cpu`` backend each product is summed exactly as the
``vdpbf16ps`` instruction (avx512_bf16) sums it:

* an operand is rounded to the nearest bfloat16, ties to even; a subnormal
  becomes a zero of its sign and a NaN stays a (quiet) NaN;
* k runs in pairs (2q, 2q+1), a zero completing an odd K, and for each pair
  ``acc = fma(a[2q+1], b[2q+1], acc)`` then ``acc = fma(a[2q], b[2q], acc)``:
  the odd member first, each a float32 fused multiply-add rounding to nearest
  even, with subnormal inputs read as zero and subnormal results flushed to zero
  (Intel's pseudo-code for the instruction: "FP32 FMA with DAZ in, FTZ out");
* as in the float32 product, K is cut into panels of at most 256 (the same
  for every thread count and CPU); each panel's sum starts from zero and is
  added to the running total with a float32 addition, also flushing to zero.

A product of two bfloat16 numbers is exact in float32, so the float32 FMA
instructions reproduce the instruction bit for bit: where the CPU lacks
avx512_bf16 (or ``FASTMLP_BF16_HARDWARE=0`` turns it off) the float32 microkernels
run on the rounded operands with MXCSR's DAZ and FTZ set. x86 detects a tiny
result after rounding, so a sum that rounds up to the smallest normal number
stays. Which path runs never changes a bit; the test suite compares them
wherever the CPU has the instruction, and :func:`hardware_status` says whether
the instruction is used and why not.

The ``numpy`` backend, the readable reference, rounds the operands the same way
and sums with ``np.matmul`` in float32 (its BLAS's order). :func:`matmul_exact`
is the exact reference of the compiled order, for tests.
"""

from __future__ import annotations

import os

import numpy as np

#: Panels of K in the compiled products (``FM_KC`` of src_c/gemm.c).
KC = 256
# The smallest sum that rounds (24 bits, unbounded exponent) to a normal float32.
_NORMAL_FROM = 2.0 ** -126 - 2.0 ** -151


def round_bf16(a) -> np.ndarray:
    """``a`` (float32) rounded to bfloat16, as a float32 array of those values."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    exp = u & np.uint32(0x7F800000)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) \
        & np.uint32(0xFFFF0000)
    out = np.where(exp == 0, u & np.uint32(0x80000000), rounded)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    out = np.where(nan, (u | np.uint32(0x00400000)) & np.uint32(0xFFFF0000), out)
    return out.astype(np.uint32).view(np.float32).reshape(np.shape(a))


def panel_depth(k: int) -> int:
    """The depth of the compiled product's K panels for a sum over ``k`` values
    (``fm_balanced`` of src_c/gemm.c, multiples of 4)."""
    if k <= 0:
        return 4
    blocks = -(-k // KC)
    depth = -(-k // blocks)
    return -(-depth // 4) * 4


def _add_ftz(acc, addend):
    """float32(acc + addend) for float32 ``acc`` and an exact float64 ``addend``,
    with a result below the smallest normal flushed to a zero of its sign."""
    s = acc.astype(np.float64) + addend
    out = s.astype(np.float32)
    tiny = np.abs(s) < _NORMAL_FROM
    out[tiny] = np.copysign(np.float32(0), s[tiny]).astype(np.float32)
    return out


def matmul_exact(a, b) -> np.ndarray:
    """``a @ b`` (float32, (M, K) and (K, N)) in the compiled bfloat16 order: the
    reference the ``cpu`` backend matches bit for bit. Slow (a loop over K)."""
    ra = round_bf16(a).astype(np.float64)
    rb = round_bf16(b).astype(np.float64)
    m, k = ra.shape
    n = rb.shape[1]
    if k % 2:
        ra = np.hstack([ra, np.zeros((m, 1))])
        rb = np.vstack([rb, np.zeros((1, n))])
        k += 1
    depth = panel_depth(k)
    total = np.zeros((m, n), dtype=np.float32)
    for p0 in range(0, k, depth):
        acc = np.zeros((m, n), dtype=np.float32)
        for q in range(p0, min(p0 + depth, k), 2):
            acc = _add_ftz(acc, np.outer(ra[:, q + 1], rb[q + 1]))
            acc = _add_ftz(acc, np.outer(ra[:, q], rb[q]))
        total = acc if p0 == 0 else _add_ftz(total, acc.astype(np.float64))
    return total


# ---------------------------------------------------------------- the hardware path
_status = {"reason": "not checked"}


def _probe_operands():
    """Operands that tell the instruction's order, rounding and flushing apart:
    sums that cancel, pairs whose order changes the rounding, products below the
    smallest normal, and an odd K."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((19, 37)).astype(np.float32)
    b = rng.standard_normal((37, 45)).astype(np.float32)
    a[:, 1::2] *= np.float32(2.0 ** 20)
    b[1::4] *= np.float32(2.0 ** -40)
    a[3] = np.float32(2.0 ** -70)
    b[:, 5] = np.float32(2.0 ** -60)
    a[4, :6] = [1.0, 2.0 ** -24, 1.0, -1.0, 3.0, 2.0 ** -140]
    return a, b


def select_hardware(cpu) -> None:
    """Use the vdpbf16ps kernel where the CPU has it, it is not switched off by
    ``FASTMLP_BF16_HARDWARE=0``, and it gives the emulation's bits on a probe."""
    if not cpu.bf16_hardware_supported():
        _status["reason"] = "this CPU has no avx512_bf16"
        return
    if os.environ.get("FASTMLP_BF16_HARDWARE", "").strip() == "0":
        _status["reason"] = "switched off by FASTMLP_BF16_HARDWARE=0"
        return
    a, b = _probe_operands()
    got = []
    for on in (0, 1):
        cpu.set_bf16_hardware(on)
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
        cpu.matmul(a, b, out, True)
        got.append(out.view(np.uint32))
    if np.array_equal(got[0], got[1]):
        _status["reason"] = None
    else:
        cpu.set_bf16_hardware(0)
        _status["reason"] = ("vdpbf16ps gave other bits than the documented order on a "
                             "probe; the emulation is used")


def hardware_status() -> str | None:
    """None when the ``cpu`` backend's bfloat16 products run on vdpbf16ps, else why
    not (they are then emulated with the same bits)."""
    if _status["reason"] == "not checked":
        from . import _cpu

        select_hardware(_cpu)
    return _status["reason"]

