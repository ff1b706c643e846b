"""Backprop checked against the numerical derivative of the loss."""

from __future__ import annotations

import numpy as np

from . import step
from ._util import integer, real
from .backends import get_backend
from .model import MLP
from .network import Workspace
from .numerical import central_differences


def gradcheck(model: MLP, x, y, eps=1e-6, max_entries=64, seed=0) -> dict:
    """Compare the backend's backprop with central differences of the loss, in float64.

    A float64 copy of ``model`` on the same backend computes the gradient of the
    mean loss on (x, y) by backprop, and, for each parameter entry checked, the
    central difference ``(L(p + eps) - L(p - eps)) / (2 eps)``.

    Parameters
    ----------
    model : MLP
    x, y : arrays
        A small batch, as for ``fit``.
    eps : float
        The step of the central difference.
    max_entries : int
        Entries checked per parameter array: all of them when the array is that
        small, else that many drawn at random (with ``seed``).

    Returns
    -------
    dict
        ``{"W1": error, "b1": error, ...}``: the largest difference between the
        two gradients over the entries checked, divided by the largest magnitude
        of either gradient there (0 when both are zero). Dividing by the array's
        scale, not entry by entry, keeps round-off on near-zero entries from
        dominating.

    Examples
    --------
    >>> import numpy as np, fastmlp
    >>> m = fastmlp.MLP([5, 4, 3], ["tanh", "softmax"], backend="numpy")
    >>> x, y = np.random.default_rng(0).random((6, 5)), np.arange(6) % 3
    >>> max(fastmlp.gradcheck(m, x, y).values()) < 1e-6
    True
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a fastmlp.MLP, got {type(model).__name__}")
    eps = real("eps", eps, low=0, low_open=True)
    max_entries = integer("max_entries", max_entries, 1)
    m64 = model.astype("float64")
    x, y = m64.check_xy(x, y)
    _, grads = m64.loss_and_gradients(x, y)
    be, net = get_backend(m64.backend), m64.network
    v = Workspace(net, len(x), backward=False, backend=be)
    rng = np.random.default_rng(seed)
    errors = {}
    # The losses are evaluated on the backend, with its own copy of the parameters.
    with m64.on_backend():
        xd, yd = be.to_device(x), be.to_device(y)

        def loss():
            return step.forward_loss(be, net, m64.params, xd, yd, v)[0] / len(x)

        for name, p, g in zip(m64.param_names, m64.params.pairs(), grads):
            if p.size <= max_entries:
                idx = np.arange(p.size)
            else:
                idx = np.sort(rng.choice(p.size, max_entries, replace=False))
            numeric = central_differences(loss, p, eps, idx)
            analytic = g.reshape(-1)[idx]
            scale = max(np.abs(numeric).max(), np.abs(analytic).max())
            errors[name] = float(np.abs(numeric - analytic).max() / scale) if scale > 0 \
                else 0.0
    return errors
