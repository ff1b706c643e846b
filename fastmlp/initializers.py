"""Weight initializations. Each draws a (fan_in, fan_out) weight and a bias from ``rng``."""

from __future__ import annotations

import numpy as np

from ._util import choose


def xavier(rng, fan_in, fan_out):
    """Glorot uniform (Keras' default): U(-a, a), a = sqrt(6 / (fan_in + fan_out)); zero bias."""
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, (fan_in, fan_out)), np.zeros(fan_out)


def xavier_normal(rng, fan_in, fan_out):
    """Glorot normal: N(0, 2 / (fan_in + fan_out)); zero bias."""
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), (fan_in, fan_out)), np.zeros(fan_out)


def he_uniform(rng, fan_in, fan_out):
    """He uniform: U(-a, a), a = sqrt(6 / fan_in); zero bias."""
    a = np.sqrt(6.0 / fan_in)
    return rng.uniform(-a, a, (fan_in, fan_out)), np.zeros(fan_out)


def he_normal(rng, fan_in, fan_out):
    """He normal: N(0, 2 / fan_in); zero bias."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)), np.zeros(fan_out)


def lecture(rng, fan_in, fan_out):
    """The lecture's: W ~ N(0, 1) / sqrt(fan_in), b ~ U(0, 1)."""
    return rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in), rng.uniform(0, 1, fan_out)


INITIALIZERS = {f.__name__: f for f in (xavier, xavier_normal, he_uniform, he_normal, lecture)}


def get(name):
    return INITIALIZERS[choose("init", name, tuple(INITIALIZERS))]
