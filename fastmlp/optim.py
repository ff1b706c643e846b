"""Optimizers: hyper-parameters and state, with the arithmetic in each backend's kernels.

An optimizer updates one flat parameter vector from its gradient. L2
regularization (``l2 / 2 * ||w||^2`` added to the loss) is fused into the
update and applies to the weights only, not the biases.

Example
-------
>>> import fastmlp
>>> opt = fastmlp.optim.RMSprop(lr=1e-3, rho=0.9, eps=1e-7)
"""

from __future__ import annotations

import math

import numpy as np


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def _fraction(name, value):
    value = float(value)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


class Optimizer:
    """Base class: holds ``lr``, the state arrays and the step count."""

    name = "optimizer"
    #: Number of state arrays as large as the parameters.
    n_slots = 0

    def __init__(self, lr):
        self.lr = _positive("lr", lr)
        self.iterations = 0
        self._state = None
        self._bound = {}

    def reset(self):
        """Forget the state (moving averages, velocities) and the step count."""
        self.iterations = 0
        self._state = None
        self._bound = {}

    def _segments(self, params, grads, n_decayed, out):
        # Views made once per (params, grads, out) buffers, so a step allocates nothing;
        # training alternates between two parameter buffers, hence a small cache.
        key = (id(params), id(grads), id(out), n_decayed)
        hit = self._bound.get(key)
        if hit is not None and hit[0] is params and hit[1] is grads and hit[2] is out:
            return hit[3]
        if self.ensure_state(params):
            self._bound = {}
        cuts = slice(0, n_decayed), slice(n_decayed, params.size)
        segments = [(params[c], grads[c], tuple(self._state[:, c]), decayed,
                     None if out is None else out[c])
                    for c, decayed in zip(cuts, (True, False)) if c.stop > c.start]
        if len(self._bound) >= 4:
            self._bound.clear()
        self._bound[key] = (params, grads, out, segments)
        return segments

    def ensure_state(self, params) -> bool:
        """Make the state match ``params`` (shape and dtype); a new state is zeros and
        restarts the step count. Returns whether it was made anew."""
        shape = (self.n_slots,) + params.shape
        if self._state is not None and self._state.shape == shape \
                and self._state.dtype == params.dtype:
            return False
        self._state = np.zeros(shape, dtype=params.dtype)
        self.iterations = 0
        return True

    def hyper_parameters(self, step) -> tuple:
        """The kernels' hyper-parameters for step number ``step`` (from 1)."""
        return (self.lr,)

    def update(self, backend, params, grads, l2=0.0, n_decayed=None, out=None):
        """One step on ``params`` (1-D) from ``grads``; L2 applies to ``params[:n_decayed]``.

        With ``out``, the new parameters are written there and ``params`` is left as
        it was (the optimizer's state still advances).
        """
        segments = self._segments(params, grads, params.size if n_decayed is None
                                  else n_decayed, out)
        self.iterations += 1
        for p, g, state, decayed, o in segments:
            self._apply(backend, p, g, state, l2 if decayed else 0.0, o)

    def _apply(self, backend, p, g, state, l2, out):
        raise NotImplementedError

    def get_config(self) -> dict:
        cfg = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "iterations"}
        return {"name": self.name, **cfg}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Plain gradient descent: ``p -= lr * g``."""

    name = "sgd"

    def __init__(self, lr=0.01):
        super().__init__(lr)

    def _apply(self, backend, p, g, state, l2, out):
        backend.sgd_update(p, g, self.lr, l2, out)


class Momentum(Optimizer):
    """Heavy-ball momentum: ``v = momentum * v - lr * g; p += v``."""

    name = "momentum"
    n_slots = 1

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = _fraction("momentum", momentum)

    def hyper_parameters(self, step):
        return (self.lr, self.momentum)

    def _apply(self, backend, p, g, state, l2, out):
        backend.momentum_update(p, g, state[0], self.lr, self.momentum, l2, out)


class Nesterov(Momentum):
    """Nesterov momentum: ``v = momentum * v - lr * g; p += momentum * v - lr * g``."""

    name = "nesterov"

    def _apply(self, backend, p, g, state, l2, out):
        backend.nesterov_update(p, g, state[0], self.lr, self.momentum, l2, out)


class RMSprop(Optimizer):
    """RMSprop: ``s = rho * s + (1 - rho) * g**2; p -= lr * g / (sqrt(s) + eps)``.

    ``eps`` is added outside the square root, as in Keras 2.0 (the Keras recipe's
    source) and PyTorch; later Keras versions use ``sqrt(s + eps)``, which damps
    parameters whose gradients are tiny.
    """

    name = "rmsprop"
    n_slots = 1

    def __init__(self, lr=1e-3, rho=0.9, eps=1e-7):
        super().__init__(lr)
        self.rho = _fraction("rho", rho)
        self.eps = _positive("eps", eps)

    def hyper_parameters(self, step):
        return (self.lr, self.rho, self.eps)

    def _apply(self, backend, p, g, state, l2, out):
        backend.rmsprop_update(p, g, state[0], self.lr, self.rho, self.eps, l2, out)


class Adam(Optimizer):
    """Adam with bias correction."""

    name = "adam"
    n_slots = 2

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
        super().__init__(lr)
        self.beta1 = _fraction("beta1", beta1)
        self.beta2 = _fraction("beta2", beta2)
        self.eps = _positive("eps", eps)

    def hyper_parameters(self, step):
        """``lr, beta1, beta2, eps`` and the bias corrections ``c1, c2`` of ``step``."""
        return (self.lr, self.beta1, self.beta2, self.eps, 1.0 / (1.0 - self.beta1**step),
                1.0 / (1.0 - self.beta2**step))

    def _apply(self, backend, p, g, state, l2, out):
        lr, b1, b2, eps, c1, c2 = self.hyper_parameters(self.iterations)
        backend.adam_update(p, g, state[0], state[1], lr, b1, b2, eps, l2, c1, c2, out)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, RMSprop, Adam)}


def get(optimizer, lr=None, **kwargs) -> Optimizer:
    """An optimizer from a name (with ``lr`` and hyper-parameters) or an instance.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones), or ``lr`` given together
        with an optimizer instance, which carries its own.
    """
    if isinstance(optimizer, Optimizer):
        if lr is not None or kwargs:
            raise ValueError("pass lr and hyper-parameters either in the optimizer object "
                             "or as arguments with an optimizer name, not both")
        return optimizer
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid optimizers are: "
                         f"{', '.join(OPTIMIZERS)}")
    if lr is not None:
        kwargs["lr"] = lr
    return OPTIMIZERS[optimizer](**kwargs)
