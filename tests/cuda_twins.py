"""NumPy twins of the cuda backend's device-side algorithms, for the tests."""

import numpy as np

from fastmlp.backends.cuda.shuffle import MASK, MUL, split_bits


def permutation_host(n, keys, shuffle=True):
    """The same permutation as the ``permutation`` kernel, in NumPy (for tests)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    lbits, rbits = split_bits(n)
    k = [np.uint64(v) for v in keys]
    mask = np.uint64(MASK)

    mul, s16 = np.uint64(MUL), np.uint64(16)

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
