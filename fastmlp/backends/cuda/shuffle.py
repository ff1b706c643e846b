"""The device shuffle: each epoch's order drawn on the GPU, one thread per index.

A keyed 4-round Feistel network is a bijection of the integers of ``lbits +
rbits`` bits; walked along its cycle from ``i`` until it lands below ``n``, it
maps ``range(n)`` onto itself. Four 32-bit keys, drawn from the model's
shuffling stream, pick the permutation.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

MASK = 0xFFFFFFFF
MUL = 0x45D9F3B  # below 2**27: a 32-bit value times it stays below 2**59

@cuda.jit(device=True, inline=True)
def _round(x, key):
    # A 32-bit mix (xor-shift, multiply), in 64-bit integers that never overflow.
    h = (x ^ key) & MASK
    h = (((h >> 16) ^ h) * MUL) & MASK
    h = (((h >> 16) ^ h) * MUL) & MASK
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


def split_bits(n):
    """Bits of the left and right halves of the Feistel network for ``range(n)``."""
    bits = max(int(n - 1).bit_length(), 2)
    return bits // 2, bits - bits // 2
