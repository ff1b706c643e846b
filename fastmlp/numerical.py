"""Training by the numerical derivative, as the lecture recipe does it.

No backprop: for every training sample, every parameter p gets the central
difference ``(L(p + h) - L(p - h)) / 2h`` of the sample's loss (``h = 1e-4``),
and ``lr`` times it is subtracted. The blocks are stepped in order W1, b1, W2,
b2, each block's differences taken after the previous block was stepped. (The
lecture numbers its layers from the input, so its W2, b2, W3, b3 are fastmlp's
W1, b1, W2, b2.)

The network has one sigmoid hidden layer and sigmoid outputs under the binary
cross-entropy summed over the outputs, ``L = sum_k softplus(z_k) - t_k z_k``,
in float64.

Two implementations compute the same numbers:

- :func:`naive_gradients` and :func:`naive_step` follow the lecture line by
  line in NumPy: perturb one entry, run the whole forward pass, restore. They
  are the reference (about a second per sample for 784-30-10 here).
- :func:`gradients`, :func:`step` and ``MLP.fit(trainer="numerical")`` run the
  compiled kernel. Perturbing one parameter changes only what lies downstream of
  it (a weight into hidden unit j moves only a_j and then the outputs; an output
  weight moves one output), so each perturbed loss is computed from the
  unperturbed forward pass in a few operations per output. The differences are
  formed without cancelling two nearly equal losses, and agree with the
  reference to round-off (tested to 1e-8 of the largest difference).

Examples
--------
>>> import numpy as np, fastmlp
>>> m = fastmlp.MLP([6, 4, 3], ["sigmoid", "sigmoid"], loss="binary_cross_entropy",
...                 init="lecture", dtype="float64")
>>> x, t = np.linspace(0.01, 1, 6), np.array([0.01, 0.99, 0.01])
>>> fast, slow = gradients(m, x, t), naive_gradients(m, x, t)
>>> max(np.abs(f - s).max() for f, s in zip(fast, slow)) < 1e-9
True
"""

from __future__ import annotations

import numpy as np

from . import _checks, optim
from . import step as passes
from ._util import integer, real
from .backends import get_backend
from .network import Network, Workspace
from .training import HostOrder, NonFiniteLoss

#: The lecture's step of the central difference.
DEFAULT_H = 1e-4

_SUPPORTED = ("one sigmoid hidden layer and sigmoid outputs under binary_cross_entropy "
              "(the lecture recipe's network)")


def check_model(model) -> None:
    """Raise ValueError unless the numerical trainer supports ``model``."""
    if not isinstance(getattr(model, "network", None), Network):
        raise TypeError(f"model must be a fastmlp.MLP, got {type(model).__name__}")
    if (len(model.layers) != 3 or tuple(model.activations) != ("sigmoid", "sigmoid")
            or model.loss != "binary_cross_entropy"):
        raise ValueError(f"the numerical trainer supports networks with {_SUPPORTED}; got "
                         f"layers {model.layers}, activations {model.activations}, "
                         f"loss {model.loss!r}")
    if model.dtype != np.float64:
        raise ValueError(f"the numerical trainer works in float64 (differences of h=1e-4 "
                         f"are lost in float32); got a {model.dtype.name} model: use "
                         f"dtype='float64' or model.astype('float64')")


def check_h(h) -> float:
    """``h`` as a float in (0, 1], or ValueError."""
    return real("h", DEFAULT_H if h is None else h, 0, 1, low_open=True)


def check_fit_options(model, trainer, batch_size, optimizer, lr, l2, h):
    """``MLP.fit``'s checks for the lecture's trainers; returns (SGD optimizer, h)."""
    check_model(model)
    h = check_h(h)
    if batch_size is not None and integer("batch_size", batch_size, 1) != 1:
        raise ValueError(f"trainer {trainer!r} steps one sample at a time: batch_size must "
                         f"be 1, got {batch_size}")
    opt = optim.get("sgd" if optimizer is None else optimizer, lr)
    if type(opt) is not optim.SGD:
        raise ValueError(f"trainer {trainer!r} steps with plain SGD ('sgd'), got {opt!r}")
    if l2:
        raise ValueError(f"trainer {trainer!r} has no L2 penalty: l2 must be 0")
    return opt, h


def _sample(model, x, t):
    x = np.ascontiguousarray(_checks.features(np.reshape(x, (1, -1)) if np.ndim(x) == 1
                                              else x, model.layers[0], np.float64, "x"))
    if x.shape[0] != 1:
        raise ValueError(f"x must be one sample ({model.layers[0]} features), got {x.shape[0]}")
    t = np.asarray(t)
    t = t.reshape(1) if t.ndim == 0 else t.reshape(1, -1) if t.ndim == 1 else t
    t = np.ascontiguousarray(_checks.targets(t, 1, model.layers[-1], np.float64, "t"))
    return x[0], t[0]


def compiled_kernels():
    """The compiled module (RuntimeError naming the problem when it is missing)."""
    get_backend("cpu")  # a clear RuntimeError when the compiled extension is missing
    from . import _cpu

    return _cpu


def gradients(model, x, t, h=DEFAULT_H) -> list:
    """Central differences of one sample's loss in every parameter, compiled.

    All four blocks are taken at the current weights (a training step instead
    steps each block before the next one's differences; see :func:`step`).

    Parameters
    ----------
    model : MLP
        float64, with one sigmoid hidden layer and sigmoid outputs under
        ``binary_cross_entropy``.
    x : array (features,)
        One input row, scaled as for training.
    t : array (outputs,) or int
        Its target row, or an integer label (one-hot).
    h : float
        The step of the central difference, in (0, 1].

    Returns
    -------
    list of arrays
        ``[dW1, db1, dW2, db2]``, shaped like ``model.get_weights()``.

    Raises
    ------
    ValueError
        An unsupported model, a bad sample, or ``h`` out of range.
    """
    check_model(model)
    h = check_h(h)
    x, t = _sample(model, x, t)
    W1, W2 = model.params.W
    b1, b2 = model.params.b
    out = [np.empty_like(p) for p in (W1, b1, W2, b2)]
    compiled_kernels().numdiff_gradients(x, t, W1, b1, W2, b2, h, *out)
    return out


def step(model, x, t, lr=1e-2, h=DEFAULT_H) -> float:
    """One lecture step on one sample, compiled; returns the loss before it.

    The differences of W1 are taken and W1 is stepped by ``-lr`` times them,
    then b1's differences are taken at the new W1 and b1 is stepped, then W2,
    then b2.

    Raises
    ------
    ValueError
        As :func:`gradients`, or ``lr`` not a finite number.
    FloatingPointError
        The loss is not finite (the weights are left as they were).
    """
    check_model(model)
    h = check_h(h)
    lr = real("lr", lr)
    x, t = _sample(model, x, t)
    stats = np.zeros(3)
    W, b = model.params.W, model.params.b
    done = compiled_kernels().numdiff_train(x[None], t[None], np.zeros(1, np.intp),
                                            W[0], b[0], W[1], b[1], lr, h, False, stats)
    if not done:
        raise FloatingPointError("the loss is not finite; the weights were not changed")
    return float(stats[1])


class LectureRunner(HostOrder):
    """``fit``'s runner for the lecture's compiled per-sample steps, over blocks of up
    to 1000 samples; derivatives by central differences, or by backprop with
    ``analytic``.

    The weights at the start of the last two blocks are kept: a non-finite loss
    sends the parameters back to them, and the deterministic steps are replayed
    up to the weights that gave the last finite loss.
    """

    batch = 1
    chunk = 1000

    def __init__(self, net, params, x, y, lr, h, analytic, rng):
        self.kernels = compiled_kernels()
        self.net, self.params, self.x, self.y, self.rng = net, params, x, y, rng
        self.args = (params.W[0], params.b[0], params.W[1], params.b[1], lr, h, analytic)
        self.start = np.empty_like(params.flat)
        self.prev_start = np.empty_like(params.flat)
        self.rows = self.prev_rows = None
        # Running [steps, loss sum, hits], added to by the kernel itself, and the part
        # of it already reported by run().
        self.stats = np.zeros(3)
        self.reported = np.zeros(3)

    def _train(self, rows, stats=None):
        return self.kernels.numdiff_train(self.x, self.y, rows, *self.args, stats)

    def _report(self):
        new = self.stats - self.reported
        self.reported[:] = self.stats
        return int(new[0]), float(new[1]), int(new[2]), int(new[0])

    def _loss(self, rows):
        be = get_backend("cpu")
        ws = Workspace(self.net, len(rows), backward=False)
        return passes.forward_loss(be, self.net, self.params, self.x[rows], self.y[rows], ws)[0]

    def run(self, rows, contiguous):
        """Step on each sample of ``rows``; returns (steps, loss sum, hits, samples)."""
        params = self.params.flat
        self.start, self.prev_start = self.prev_start, self.start
        np.copyto(self.start, params)
        self.prev_rows, self.rows = self.rows, rows
        done = self._train(rows, self.stats)
        if done < len(rows):
            loss = self._loss(rows[done:done + 1])
            if done:
                np.copyto(params, self.start)
                self._train(rows[:done - 1])
            elif self.prev_rows is not None:
                np.copyto(params, self.prev_start)
                self._train(self.prev_rows[:-1])
            else:
                np.copyto(params, self.start)
            raise NonFiniteLoss(done, loss)
        return self._report()

    def unreported(self):
        """Steps the kernel completed that run() did not get to return (Ctrl-C)."""
        return self._report()


# ---------------------------------------------------------------------------- reference
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _loss(W1, b1, W2, b2, x, t):
    # Summed binary cross-entropy from the logits: softplus(z) - t z.
    a = _sigmoid(x @ W1 + b1)
    z = a @ W2 + b2
    return float(np.sum(np.logaddexp(0.0, z) - t * z))


def central_differences(f, p, h, entries=None) -> np.ndarray:
    """Central differences of ``f()`` in the entries of ``p`` (the lecture's
    ``numerical_derivative``).

    Each entry (of the flat view of ``p``, or those listed in ``entries``) is set
    to ``p + h``, ``f()`` evaluated, set to ``p - h``, evaluated, and restored;
    the result is ``(f(p + h) - f(p - h)) / 2h``, shaped like ``p`` (or like
    ``entries``).
    """
    flat = p.reshape(p.size)  # (also a GPU backend's device array)
    idx = range(flat.size) if entries is None else entries
    out = np.zeros(len(idx))
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        out[j] = (up - down) / (2 * h)
    return out.reshape(p.shape) if entries is None else out


def naive_gradients(model, x, t, h=DEFAULT_H) -> list:
    """The reference for :func:`gradients`: a whole forward pass per perturbed loss, in NumPy."""
    check_model(model)
    h = check_h(h)
    x, t = _sample(model, x, t)
    W1, b1, W2, b2 = params = [p.copy() for p in model.params.pairs()]

    def f():
        return _loss(W1, b1, W2, b2, x, t)

    return [central_differences(f, p, h) for p in params]


def naive_step(model, x, t, lr=1e-2, h=DEFAULT_H) -> float:
    """The reference for :func:`step`, as the lecture writes it; returns the loss before it."""
    check_model(model)
    h = check_h(h)
    lr = real("lr", lr)
    x, t = _sample(model, x, t)
    W1, W2 = model.params.W
    b1, b2 = model.params.b

    def f():
        return _loss(W1, b1, W2, b2, x, t)

    loss = f()
    if not np.isfinite(loss):
        raise FloatingPointError("the loss is not finite; the weights were not changed")
    for p in (W1, b1, W2, b2):
        p -= lr * central_differences(f, p, h)
    return loss
