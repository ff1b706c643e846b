"""Weight initializations. Each fills a (fan_in, fan_out) weight W and a bias b, in
their own dtype, with draws from ``rng``."""

from __future__ import annotations

import numpy as np

from ._util import choose

#: Values drawn per piece: float64 draws go into the weights a piece at a time, so
#: a float32 model never holds a float64 copy of a layer (the values are those of
#: one draw of the whole matrix: the generator's stream is the same).
CHUNK = 1 << 20


def _fill(out, draw):
    """out (a C-contiguous array, any float dtype) from draw(n), n values at a time."""
    flat = out.reshape(-1)
    for i in range(0, flat.size, CHUNK):
        flat[i:i + CHUNK] = draw(min(CHUNK, flat.size - i))


def xavier(rng, W, b):
    """Glorot uniform (Keras' default): U(-a, a), a = sqrt(6 / (fan_in + fan_out)); zero bias."""
    a = np.sqrt(6.0 / sum(W.shape))
    _fill(W, lambda n: rng.uniform(-a, a, n))
    b[...] = 0


def xavier_normal(rng, W, b):
    """Glorot normal: N(0, 2 / (fan_in + fan_out)); zero bias."""
    _fill(W, lambda n: rng.normal(0.0, np.sqrt(2.0 / sum(W.shape)), n))
    b[...] = 0


def he_uniform(rng, W, b):
    """He uniform: U(-a, a), a = sqrt(6 / fan_in); zero bias."""
    a = np.sqrt(6.0 / W.shape[0])
    _fill(W, lambda n: rng.uniform(-a, a, n))
    b[...] = 0


def he_normal(rng, W, b):
    """He normal: N(0, 2 / fan_in); zero bias."""
    _fill(W, lambda n: rng.normal(0.0, np.sqrt(2.0 / W.shape[0]), n))
    b[...] = 0


def lecture(rng, W, b):
    """The lecture's: W ~ N(0, 1) / sqrt(fan_in), b ~ U(0, 1)."""
    _fill(W, lambda n: rng.standard_normal(n) / np.sqrt(W.shape[0]))
    _fill(b, lambda n: rng.uniform(0, 1, n))


INITIALIZERS = {f.__name__: f for f in (xavier, xavier_normal, he_uniform, he_normal, lecture)}


def get(name):
    return INITIALIZERS[choose("init", name, tuple(INITIALIZERS))]
