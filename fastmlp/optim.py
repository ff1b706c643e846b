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

from typing import Any

import numpy as np

from . import functions
from ._util import choose, integer, real


def _positive(name, value):
    return real(name, value, low=0, low_open=True)


def _fraction(name, value):
    return real(name, value, 0, 1, high_open=True)


class Optimizer:
    """Base class: holds ``lr``, the state arrays and the step count.

    A subclass names its kernel ``rule`` (one of ``fastmlp.functions.RULES``),
    how many state arrays it keeps (``n_slots``), and the hyper-parameters it
    passes (:meth:`hyper_parameters`); every backend runs the rule's kernel, so a
    subclass that changes only its defaults or hyper-parameters works everywhere.
    """

    name = "optimizer"
    #: Kernel id of the update rule (an index into ``fastmlp.functions.RULES``).
    rule: int | None = None
    #: Number of state arrays as large as the parameters.
    n_slots = 0

    def __init__(self, lr: float) -> None:
        self.lr = _positive("lr", lr)
        self.iterations = 0
        self._state: np.ndarray | None = None

    @property
    def state(self) -> np.ndarray | None:
        """The state arrays, ``(n_slots, n_params)`` (None before the first step)."""
        return self._state

    def reset(self) -> None:
        """Forget the state (moving averages, velocities) and the step count."""
        self.iterations = 0
        self._state = None

    def set_state(self, state: np.ndarray | None, iterations: int) -> None:
        """Take ``state`` (``(n_slots, n_params)`` or None) and the step count, as
        :attr:`state` and ``iterations`` gave them (a resumed training run).

        Raises
        ------
        ValueError
            ``state`` has not ``n_slots`` rows, or holds NaN/Inf.
        """
        iterations = integer("iterations", iterations, 0)
        if state is not None:
            state = np.array(state, copy=True)
            if state.ndim != 2 or state.shape[0] != self.n_slots \
                    or not np.issubdtype(state.dtype, np.floating) \
                    or not np.isfinite(state).all():
                raise ValueError(f"{type(self).__name__} state must be finite floats of shape "
                                 f"({self.n_slots}, n_params), got {state.shape} {state.dtype}")
        self._state, self.iterations = state, iterations

    def ensure_state(self, params: np.ndarray) -> bool:
        """Make the state match ``params`` (shape and dtype); a new state is zeros and
        restarts the step count. Returns whether it was made anew."""
        shape = (self.n_slots,) + params.shape
        if self._state is not None and self._state.shape == shape \
                and self._state.dtype == params.dtype:
            return False
        self._state = np.zeros(shape, dtype=params.dtype)
        self.iterations = 0
        return True

    def kernel_rule(self) -> int:
        """:attr:`rule`, checked.

        Raises
        ------
        TypeError
            The subclass names no rule.
        """
        if self.rule is None:
            raise TypeError(f"{type(self).__name__} names no kernel rule: set its 'rule' "
                            f"to one of {', '.join(functions.RULES)}")
        return self.rule

    def hyper_parameters(self, step: int) -> dict:
        """The kernel's hyper-parameters for step number ``step`` (from 1), by the names
        of ``fastmlp.functions.HYPER_PARAMETERS``; those left out are 0."""
        return {"lr": self.lr}

    def kernel_hyper(self, step: int) -> tuple:
        """:meth:`hyper_parameters` as the kernels take them: a tuple in the order of
        ``fastmlp.functions.HYPER_PARAMETERS``."""
        hp = self.hyper_parameters(step)
        return tuple(float(hp.get(k, 0.0)) for k in functions.HYPER_PARAMETERS)

    def update(self, backend: Any, params: Any, grads: Any, l2: float = 0.0,
               n_decayed: int | None = None, out: Any = None, check: Any = None,
               state: Any = None) -> None:
        """One step on ``params`` (1-D) from ``grads``; L2 applies to ``params[:n_decayed]``.

        With ``out``, the new parameters are written there and ``params`` is left as
        it was (the optimizer's state still advances). ``state`` replaces the
        optimizer's own state arrays (a device copy, say); ``check`` is passed to
        the backend (see ``fastmlp.backends``).
        """
        rule = self.kernel_rule()
        if state is None:
            self.ensure_state(params)
            state = self._state
        self.iterations += 1
        s1 = state[0] if self.n_slots > 0 else None
        s2 = state[1] if self.n_slots > 1 else None
        backend.update(rule, params, grads, s1, s2, self.kernel_hyper(self.iterations),
                       l2, params.size if n_decayed is None else n_decayed, out, check)

    def get_config(self) -> dict:
        """``{"name": ..., hyper-parameter: value, ...}``; :func:`from_config` rebuilds it."""
        cfg = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "iterations"}
        return {"name": self.name, **cfg}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Plain gradient descent: ``p -= lr * g``."""

    name = "sgd"
    rule = functions.SGD

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)


class Momentum(Optimizer):
    """Heavy-ball momentum: ``v = momentum * v - lr * g; p += v``."""

    name = "momentum"
    rule = functions.MOMENTUM
    n_slots = 1

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = _fraction("momentum", momentum)

    def hyper_parameters(self, step: int) -> dict:
        return {"lr": self.lr, "mu": self.momentum}


class Nesterov(Momentum):
    """Nesterov momentum: ``v = momentum * v - lr * g; p += momentum * v - lr * g``."""

    name = "nesterov"
    rule = functions.NESTEROV


class RMSprop(Optimizer):
    """RMSprop: ``s = rho * s + (1 - rho) * g**2; p -= lr * g / (sqrt(s) + eps)``.

    ``eps`` is added outside the square root, as in Keras 2.0 (the Keras recipe's
    source) and PyTorch; later Keras versions use ``sqrt(s + eps)``, which damps
    parameters whose gradients are tiny.
    """

    name = "rmsprop"
    rule = functions.RMSPROP
    n_slots = 1

    def __init__(self, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-7) -> None:
        super().__init__(lr)
        self.rho = _fraction("rho", rho)
        self.eps = _positive("eps", eps)

    def hyper_parameters(self, step: int) -> dict:
        return {"lr": self.lr, "rho": self.rho, "eps": self.eps}


class Adam(Optimizer):
    """Adam with bias correction."""

    name = "adam"
    rule = functions.ADAM
    n_slots = 2

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-7) -> None:
        super().__init__(lr)
        self.beta1 = _fraction("beta1", beta1)
        self.beta2 = _fraction("beta2", beta2)
        self.eps = _positive("eps", eps)

    def hyper_parameters(self, step: int) -> dict:
        """``lr, beta1, beta2, eps`` and the bias corrections ``c1, c2`` of ``step``."""
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "c1": 1.0 / (1.0 - self.beta1**step), "c2": 1.0 / (1.0 - self.beta2**step)}


class AdamW(Adam):
    """Adam with decoupled weight decay, as PyTorch's ``torch.optim.AdamW``: each step
    first shrinks the weights (not the biases) by ``1 - lr * weight_decay``, then
    takes Adam's step. The defaults are PyTorch's (``eps`` 1e-8)."""

    name = "adamw"
    rule = functions.ADAMW

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(lr, beta1, beta2, eps)
        self.weight_decay = real("weight_decay", weight_decay, low=0)

    def hyper_parameters(self, step: int) -> dict:
        return {**super().hyper_parameters(step), "wd": self.weight_decay}


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, RMSprop, Adam, AdamW)}


def get(optimizer: str | Optimizer, lr: float | None = None, **kwargs: float) -> Optimizer:
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
    choose("optimizer", optimizer, tuple(OPTIMIZERS))
    if lr is not None:
        kwargs["lr"] = lr
    return OPTIMIZERS[optimizer](**kwargs)


def from_config(config: dict) -> Optimizer:
    """The optimizer ``Optimizer.get_config`` described (no state).

    Raises
    ------
    ValueError
        An unknown name, or hyper-parameters that name does not take.
    """
    config = dict(config)
    name = choose("optimizer", config.pop("name", None), tuple(OPTIMIZERS))
    try:
        return OPTIMIZERS[name](**config)
    except TypeError as exc:
        raise ValueError(f"bad {name} hyper-parameters {config}: {exc}") from None
