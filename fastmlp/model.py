"""The multilayer perceptron: its network, weights and inference, and ``fit``.

The model owns one flat parameter vector ``[W1, ..., WL, b1, ..., bL]`` (see
:mod:`fastmlp.network`); training is run by a runner (see
:mod:`fastmlp.training`) and files are read and written by
:mod:`fastmlp.serialization`.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import _checks, initializers, numerical, optim, serialization, step, training
from ._util import choose, integer, real
from .backends import get_backend
from .network import Network, Parameters, Workspace
from .training import History  # noqa: F401  (the type fit returns)

TRAINERS = ("backprop", "numerical", "lecture-backprop")


class MLP:
    """A fully connected network trained with backprop on a chosen backend.

    Parameters
    ----------
    layers : sequence of int
        Units per layer, inputs first: ``[784, 512, 10]``.
    activations : sequence of str
        One per weight layer: ``linear``, ``relu``, ``leaky_relu`` (slope 0.01 below
        0), ``sigmoid``, ``tanh``, ``softmax``.
    loss : str
        ``cross_entropy`` (softmax or sigmoid output), ``binary_cross_entropy``
        (summed over the outputs; sigmoid or softmax output) or ``mse`` (mean over
        the outputs). Every loss is averaged over the samples of a batch.
    init : str
        ``xavier`` (Glorot uniform), ``xavier_normal``, ``he_uniform``,
        ``he_normal`` or ``lecture``.
    seed : int
        Seeds the initial weights and the shuffling: the same seed gives the same
        weights, run after run.
    backend : str
        ``cpu`` (compiled, default), ``numpy`` (the reference) or ``cuda``
        (Numba CUDA kernels on an NVIDIA GPU; ``pip install 'fastmlp[cuda]'``).
    dtype : str
        ``float32`` or ``float64``.

    Raises
    ------
    ValueError
        An unknown name (the message lists the valid ones), a loss undefined for
        the output activation, or layer sizes that are not positive integers.

    Examples
    --------
    >>> import numpy as np, fastmlp
    >>> model = fastmlp.MLP([4, 8, 3], ["relu", "softmax"], backend="numpy", seed=1)
    >>> x, y = np.random.default_rng(0).random((32, 4)), np.arange(32) % 3
    >>> history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    >>> model.predict(x).shape
    (32,)
    """

    def __init__(self, layers=(784, 512, 10), activations=("relu", "softmax"),
                 loss="cross_entropy", init="xavier", seed=0, backend="cpu", dtype="float32"):
        self.network = net = Network(tuple(layers), tuple(activations), loss, dtype)
        init_fn = initializers.get(init)
        self.seed = integer("seed", seed, 0)
        self.layers, self.activations = list(net.layers), list(net.activations)
        self.loss, self.init, self.dtype = loss, init, net.dtype
        self.backend = backend
        self._backend = get_backend(backend)
        self.history = None
        self.meta = {}
        #: The live parameters (flat vector and W, b views); get_weights gives copies.
        self.params = Parameters(net, np.empty(net.n_params, dtype=self.dtype))
        rng = np.random.default_rng([self.seed, 0])
        for W, b, (fan_in, fan_out) in zip(self.params.W, self.params.b, net.shapes):
            w0, b0 = init_fn(rng, fan_in, fan_out)
            W[...] = w0
            b[...] = b0
        # A separate stream for shuffling, so the initial weights do not depend on it.
        self.shuffle_rng = np.random.default_rng([self.seed, 1])
        self._resident = 0

    @contextlib.contextmanager
    def on_backend(self):
        """Within it, ``params`` are the backend's arrays (device copies for a GPU
        backend, written back to the host arrays on leaving)."""
        be = self._backend
        if not be.device or self._resident:
            self._resident += 1
            try:
                yield
            finally:
                self._resident -= 1
            return
        dev = Parameters(self.network, be.to_device(self.params.flat))
        self.params.swap(dev)
        self._resident = 1
        try:
            yield
        finally:
            self._resident = 0
            self.params.swap(dev)
            be.to_host(dev.flat, self.params.flat)

    @property
    def n_params(self) -> int:
        """Number of trainable parameters."""
        return self.network.n_params

    @property
    def param_names(self) -> list:
        """``["W1", "b1", "W2", "b2", ...]``, the order of ``get_weights``."""
        return self.network.param_names

    def get_config(self) -> dict:
        """The constructor's arguments, enough to rebuild the model."""
        return {"layers": list(self.layers), "activations": list(self.activations),
                "loss": self.loss, "init": self.init, "seed": self.seed,
                "backend": self.backend, "dtype": self.dtype.name}

    def __repr__(self):
        cfg = self.get_config()
        return "MLP(" + ", ".join(f"{k}={v!r}" for k, v in cfg.items()) + ")"

    def summary(self) -> str:
        """A table of the layers and their parameter counts."""
        rows = [f"{'layer':<8}{'shape':>16}{'activation':>12}{'params':>12}"]
        for i, (a, b) in enumerate(self.network.shapes):
            rows.append(f"{'dense' + str(i + 1):<8}{f'({a}, {b})':>16}"
                        f"{self.activations[i]:>12}{a * b + b:>12,}")
        rows.append(f"total params: {self.n_params:,}  loss: {self.loss}  backend: "
                    f"{self.backend}  dtype: {self.dtype.name}")
        return "\n".join(rows)

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list:
        """Copies of ``[W1, b1, W2, b2, ...]``; W has shape (inputs, outputs)."""
        return [p.copy() for p in self.params.pairs()]

    def set_weights(self, weights) -> None:
        """Replace every parameter, given as ``[W1, b1, W2, b2, ...]`` like ``get_weights``.

        Raises
        ------
        ValueError
            Wrong number of arrays, a wrong shape, or NaN/Inf values.
        """
        weights = list(weights)
        targets = self.params.pairs()
        if len(weights) != len(targets):
            raise ValueError(f"expected {len(targets)} arrays ({', '.join(self.param_names)}), "
                             f"got {len(weights)}")
        arrays = []
        for name, new, old in zip(self.param_names, weights, targets):
            new = np.asarray(new)
            if new.shape != old.shape:
                raise ValueError(f"{name} must have shape {old.shape}, got {new.shape}")
            if not np.issubdtype(new.dtype, np.number) or not np.isfinite(new).all():
                raise ValueError(f"{name} must hold finite numbers")
            arrays.append(new)
        for new, old in zip(arrays, targets):
            old[...] = new

    # ------------------------------------------------------------------ checks
    def check_x(self, x, name="x"):
        """``x`` validated and converted for this model (see ``fastmlp._checks``)."""
        return _checks.features(x, self.layers[0], self.dtype, name)

    def check_xy(self, x, y, name="x", yname="y"):
        """``(x, y)`` validated and converted for this model (y as target rows)."""
        x = self.check_x(x, name)
        return x, _checks.targets(y, x.shape[0], self.layers[-1], self.dtype, yname)

    def scores(self, x, y, batch_size):
        """Mean loss and accuracy of checked arrays (host or the backend's)."""
        be, net = self._backend, self.network
        ws = Workspace(net, min(batch_size, len(x)), backward=False, backend=be)
        total, hits = 0.0, 0
        with self.on_backend():
            x, y = be.to_device(x), be.to_device(y)
            for start in range(0, len(x), ws.batch):
                stop = min(start + ws.batch, len(x))
                t, h = step.forward_loss(be, net, self.params, x[start:stop], y[start:stop],
                                         ws.views(stop - start))
                total += t
                hits += h
        return total / len(x), hits / len(x)

    # ------------------------------------------------------------------ training
    def fit(self, x, y, epochs=5, batch_size=None, optimizer=None, lr=None, l2=0.0,
            validation_split=0.0, validation_data=None, shuffle=True, verbose=1,
            trainer="backprop", h=None) -> History:
        """Train with mini-batch backprop, or with the lecture's numerical derivative.

        Parameters
        ----------
        x : array, (N, features) or (N, 28, 28)
            Inputs, any numeric dtype (converted once to the model's dtype).
        y : array
            Integer labels (N,) or targets (N, outputs), such as one-hot rows.
        epochs : int
            Passes over the training data (0 trains nothing).
        batch_size : int, optional
            Samples per step (default 128); the last step of an epoch takes what
            is left. The numerical trainer steps one sample at a time.
        optimizer : str or fastmlp.optim.Optimizer, optional
            ``sgd``, ``momentum``, ``nesterov``, ``rmsprop`` (the default), ``adam``
            or ``adamw``, or an optimizer object carrying its own hyper-parameters.
            The numerical trainer takes plain ``sgd`` only (its default).
        lr : float, optional
            Learning rate with an optimizer name; default that optimizer's
            (1e-3 for rmsprop, adam and adamw, 1e-2 for the others).
        l2 : float
            L2 penalty ``l2 / 2 * ||W||^2`` on the weights (not the biases).
        validation_split : float in [0, 1)
            Fraction of the samples, taken from the end before shuffling, held
            out for validation (ignored when ``validation_data`` is given).
        validation_data : (x_val, y_val), optional
            Data scored after each epoch.
        shuffle : bool
            Reshuffle the training samples before each epoch (the same order
            for both trainers, given the model's seed). The ``cuda`` backend
            draws its order on the GPU, also from the model's seed, so its order
            differs from the host backends'.
        verbose : int
            0 silent, 1 a progress bar and a line per epoch, 2 a line per epoch.
        trainer : {"backprop", "numerical", "lecture-backprop"}
            ``numerical`` trains as the lecture recipe does, without backprop:
            for each sample, the central difference ``(L(p+h) - L(p-h)) / 2h``
            of every parameter, the blocks W1, b1, W2, b2 stepped one after the
            other (see :mod:`fastmlp.numerical`). ``lecture-backprop`` takes the
            same steps in the same order with the derivatives from backprop.
            Both need a float64 model with one sigmoid hidden layer and sigmoid
            outputs under ``binary_cross_entropy``, and run compiled whatever
            the backend.
        h : float, optional
            The numerical trainer's step, in (0, 1]; default 1e-4.

        Returns
        -------
        History
            Also kept as ``model.history``.

        Raises
        ------
        ValueError
            Bad shapes, labels, NaN/Inf in the data, bad hyper-parameters, or a
            model or option the numerical trainer does not support.
        FloatingPointError
            The loss became NaN or Inf; the message names the epoch and step, and
            the model keeps the weights that gave the last finite loss.

        Notes
        -----
        Ctrl-C stops training after the step in progress is undone (backprop),
        or after the block of samples in progress (numerical, at most 1000
        samples): the model keeps the weights of the completed steps and
        ``fit`` returns a History marked ``interrupted``. On the ``cuda``
        backend the steps already queued on the GPU complete first.

        The ``cuda`` backend keeps the data, the parameters and the optimizer's
        state on the GPU for the whole call and reads the metrics back once per
        epoch (see :mod:`fastmlp.backends.cuda`).
        """
        epochs = integer("epochs", epochs, 0)
        l2 = real("l2", l2, low=0)
        validation_split = real("validation_split", validation_split, 0, 1, high_open=True)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        choose("trainer", trainer, TRAINERS)
        lecture = trainer != "backprop"
        if trainer != "numerical" and h is not None:
            raise ValueError("h is the numerical trainer's step: it needs trainer='numerical'")
        if lecture:
            opt, h = numerical.check_fit_options(self, trainer, batch_size, optimizer, lr,
                                                 l2, h)
        else:
            batch_size = integer("batch_size", 128 if batch_size is None else batch_size, 1)
            opt = optim.get("rmsprop" if optimizer is None else optimizer, lr)
        x, y = self.check_xy(x, y)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            val = self.check_xy(*validation_data, name="validation x", yname="validation y")
        elif validation_split > 0:
            n_val = int(len(x) * validation_split)
            if n_val == 0 or n_val == len(x):
                raise ValueError(f"validation_split={validation_split} leaves "
                                 f"{len(x) - n_val} training and {n_val} validation samples "
                                 f"out of {len(x)}")
            val = (x[-n_val:], y[-n_val:])
            x, y = x[:-n_val], y[:-n_val]

        self.optimizer = opt
        be, n = self._backend, len(x)
        if lecture:
            runner = numerical.LectureRunner(self.network, self.params, x, y, opt.lr, h,
                                             analytic=trainer != "numerical",
                                             rng=self.shuffle_rng)
        else:
            runner = self.make_runner(x, y, opt, l2, min(batch_size, n))
            if be.device and val is not None:
                val = tuple(be.to_device(a) for a in val)
        score = None
        if val is not None:
            def score():
                return self.scores(*val, 1024 if lecture else runner.batch)

        self.history = training.History()
        return training.run_epochs(runner, self.history, n, epochs, shuffle, verbose, score)

    def make_runner(self, x, y, optimizer, l2, batch):
        """The mini-batch backprop runner of ``fit`` on checked arrays (see
        :mod:`fastmlp.training`): the backend's own ``make_runner`` where it has one,
        else :class:`fastmlp.training.BackpropRunner`."""
        be = self._backend
        make = getattr(be, "make_runner", None) or training.BackpropRunner
        return make(be, self.network, self.params, x, y, optimizer, l2, batch,
                    self.shuffle_rng)

    # ------------------------------------------------------------------ inference
    def predict_proba(self, x, batch_size=1024) -> np.ndarray:
        """The network's outputs (class probabilities for softmax), shape (N, outputs)."""
        batch_size = integer("batch_size", batch_size, 1)
        x = self.check_x(x)
        out = np.empty((len(x), self.layers[-1]), dtype=self.dtype)
        be, net = self._backend, self.network
        ws = Workspace(net, min(batch_size, len(x)), backward=False, backend=be)
        with self.on_backend():
            x = be.to_device(x)
            for start in range(0, len(x), ws.batch):
                stop = min(start + ws.batch, len(x))
                v = ws.views(stop - start)
                step.forward(be, net, self.params, x[start:stop], v)
                step.output(be, net, v)
                be.to_host(v.a[-1], out[start:stop])
        return out

    def predict(self, x, batch_size=1024) -> np.ndarray:
        """Predicted integer labels, shape (N,) (for one output: 1 where it is >= 0.5)."""
        p = self.predict_proba(x, batch_size)
        if p.shape[1] == 1:
            return (p[:, 0] >= 0.5).astype(np.int64)
        return p.argmax(axis=1)

    def evaluate(self, x, y, batch_size=1024) -> dict:
        """``{"loss": mean loss, "accuracy": fraction correct}`` on (x, y)."""
        batch_size = integer("batch_size", batch_size, 1)
        x, y = self.check_xy(x, y)
        loss, acc = self.scores(x, y, batch_size)
        return {"loss": loss, "accuracy": acc}

    def loss_and_gradients(self, x, y):
        """Mean loss on (x, y) and its gradients ``[dW1, db1, ...]`` by backprop (no L2)."""
        x, y = self.check_xy(x, y)
        be, net = self._backend, self.network
        ws = Workspace(net, len(x), backward=True, backend=be)
        with self.on_backend():
            grads = Parameters(net, be.zeros(self.params.flat.shape, self.dtype))
            x, yd = be.to_device(x), be.to_device(y)
            total, _ = step.forward_loss(be, net, self.params, x, yd, ws)
            step.backward(be, net, self.params, grads, x, ws)
            out = [be.to_host(g).copy() for g in grads.pairs()]
        return total / len(x), out

    # ------------------------------------------------------------------ copies and files
    def astype(self, dtype=None, backend=None) -> MLP:
        """A copy with the same weights in another dtype and/or on another backend."""
        cfg = self.get_config()
        cfg["dtype"] = cfg["dtype"] if dtype is None else dtype
        cfg["backend"] = cfg["backend"] if backend is None else backend
        clone = MLP(**cfg)
        clone.set_weights(self.get_weights())
        clone.meta = dict(self.meta)
        return clone

    def save(self, path) -> None:
        """Write the configuration and weights to ``path`` (a versioned ``.npz``), atomically.

        The file appears complete or not at all: it is written beside its final
        name and renamed into place.
        """
        serialization.write(path, self.get_config(), self.meta,
                            dict(zip(self.param_names, self.get_weights())))


def load(path, backend=None) -> MLP:
    """Read a model written by ``MLP.save``.

    Parameters
    ----------
    path : str or path-like
    backend : str, optional
        Put the model on this backend instead of the one it was saved from.

    Raises
    ------
    ValueError
        The file is truncated, is not a fastmlp model, or is from a newer format.
    FileNotFoundError
        No such file.
    """
    def build(cfg, arrays, meta):
        if backend is not None:
            cfg["backend"] = backend
        model = MLP(**cfg)
        model.set_weights([arrays[name] for name in model.param_names])
        model.meta = meta
        return model

    return serialization.read(path, build)
