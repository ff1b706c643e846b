"""The multilayer perceptron: parameters, training loop, inference, saving.

The model owns one flat parameter vector ``[W1, ..., WL, b1, ..., bL]`` (the
weights first, so L2 applies to one contiguous slice) and drives a backend's
kernels on a workspace allocated once per call to ``fit``, ``evaluate`` or
``predict``: a training step allocates no array.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import warnings
import zipfile

import numpy as np

from . import _checks, initializers, optim
from ._io import atomic_write
from ._version import __version__
from .backends import get_backend
from .functions import activation_id, check_loss_output, loss_id

#: Version of the saved-model format; ``load`` reads this version and older ones.
FORMAT_VERSION = 1
_FORMAT_NAME = "fastmlp-model"


class History:
    """What ``fit`` measured, epoch by epoch.

    Attributes
    ----------
    history : dict
        ``"loss"`` and ``"accuracy"`` (training, averaged over the epoch's
        steps), and ``"val_loss"``, ``"val_accuracy"`` with validation data.
    epoch_seconds : list of float
        Wall-clock seconds of each epoch's training steps.
    epoch : list of int
        Epoch numbers, from 0.
    interrupted : bool
        True when Ctrl-C stopped ``fit``; the last entries then describe the
        steps of the unfinished epoch that completed.
    steps : int
        Training steps completed.
    """

    def __init__(self):
        self.history = {"loss": [], "accuracy": []}
        self.epoch_seconds = []
        self.epoch = []
        self.interrupted = False
        self.steps = 0

    def _append(self, epoch, seconds, **metrics):
        self.epoch.append(epoch)
        self.epoch_seconds.append(seconds)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, steps={self.steps}, keys={list(self.history)})"


class _Workspace:
    """Every buffer of a forward and backward pass, for batches of up to ``batch`` samples."""

    def __init__(self, layers, batch, dtype, backward, backend=None):
        alloc = np.empty if backend is None else backend.empty
        new = lambda m: alloc((batch, m), dtype=dtype)  # noqa: E731
        # Only training gathers shuffled batches into buffers of its own; inference
        # and scoring pass row slices of the caller's arrays.
        self.x = new(layers[0]) if backward else None
        self.y = new(layers[-1]) if backward else None
        hidden = [new(m) for m in layers[1:-1]]
        # Hidden layers apply their activation in place; the output keeps its logits
        # (z) apart from its activation (a) because the losses need both.
        self.z = hidden + [new(layers[-1])]
        self.a = hidden + [new(layers[-1])]
        self.g = [new(m) for m in layers[1:]] if backward else [None] * (len(layers) - 2) + [
            new(layers[-1])]
        self.row_loss = alloc(batch, dtype=dtype)
        self.batch = batch
        self._views = {}

    def views(self, n):
        """The buffers cut to ``n`` rows, made once per distinct ``n``."""
        v = self._views.get(n)
        if v is None:
            cut = lambda b: None if b is None else b[:n]  # noqa: E731
            v = _Views(cut(self.x), cut(self.y), [cut(b) for b in self.z],
                       [cut(b) for b in self.a], [cut(b) for b in self.g], self.row_loss[:n])
            self._views[n] = v
        return v


class _Views:
    __slots__ = ("x", "y", "z", "a", "g", "row_loss")

    def __init__(self, x, y, z, a, g, row_loss):
        self.x, self.y, self.z, self.a, self.g, self.row_loss = x, y, z, a, g, row_loss


class MLP:
    """A fully connected network trained with backprop on a chosen backend.

    Parameters
    ----------
    layers : sequence of int
        Units per layer, inputs first: ``[784, 512, 10]``.
    activations : sequence of str
        One per weight layer: ``linear``, ``relu``, ``sigmoid``, ``tanh``, ``softmax``.
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
        layers = [_checks.integer("layer size", n, 1) for n in layers]
        if len(layers) < 2:
            raise ValueError(f"layers needs at least an input and an output size, got {layers}")
        activations = list(activations)
        if len(activations) != len(layers) - 1:
            raise ValueError(f"{len(layers) - 1} weight layers need {len(layers) - 1} "
                             f"activations, got {len(activations)}")
        self._act_ids = [activation_id(a) for a in activations]
        self._loss_id = loss_id(loss)
        check_loss_output(loss, activations[-1])
        init_fn = initializers.get(init)
        self.seed = _checks.integer("seed", seed, 0)
        self.layers, self.activations, self.loss, self.init = layers, activations, loss, init
        self.dtype = _checks.float_dtype(dtype)
        self.backend = backend
        self._backend = get_backend(backend)
        self.history = None
        self.meta = {}

        shapes = [(a, b) for a, b in zip(layers[:-1], layers[1:])]
        self._n_weights = sum(a * b for a, b in shapes)
        self._params = np.empty(self._n_weights + sum(layers[1:]), dtype=self.dtype)
        self._W, self._b = self._split(self._params)
        rng = np.random.default_rng([self.seed, 0])
        for W, b, (fan_in, fan_out) in zip(self._W, self._b, shapes):
            w0, b0 = init_fn(rng, fan_in, fan_out)
            W[...] = w0
            b[...] = b0
        self._grads = np.zeros_like(self._params)
        self._gW, self._gb = self._split(self._grads)
        # A separate stream for shuffling, so the initial weights do not depend on it.
        self._shuffle_rng = np.random.default_rng([self.seed, 1])
        self._resident = 0

    # ------------------------------------------------------------------ layout
    def _split(self, flat):
        Ws, bs, at = [], [], 0
        for a, b in zip(self.layers[:-1], self.layers[1:]):
            Ws.append(flat[at:at + a * b].reshape(a, b))
            at += a * b
        for b in self.layers[1:]:
            bs.append(flat[at:at + b])
            at += b
        return Ws, bs

    def _swap(self, params, W, b):
        """Make ``params`` (with its views W and b) the current parameters; returns the
        previous buffer and views."""
        old = self._params, self._W, self._b
        self._params, self._W, self._b = params, W, b
        return old

    @contextlib.contextmanager
    def _on_backend(self):
        """Within it, the parameters and gradients are the backend's arrays: device
        copies for a GPU backend, written back to the host arrays on leaving."""
        be = self._backend
        if not be.device or self._resident:
            self._resident += 1
            try:
                yield
            finally:
                self._resident -= 1
            return
        host = (self._params, self._W, self._b, self._grads, self._gW, self._gb)
        self._params = be.to_device(host[0])
        self._grads = be.zeros(host[3].shape, self.dtype)
        self._W, self._b = self._split(self._params)
        self._gW, self._gb = self._split(self._grads)
        self._resident = 1
        try:
            yield
        finally:
            self._resident = 0
            params = self._params
            (self._params, self._W, self._b, self._grads, self._gW, self._gb) = host
            be.to_host(params, self._params)

    @property
    def n_params(self) -> int:
        """Number of trainable parameters."""
        return self._params.size

    @property
    def param_names(self) -> list:
        """``["W1", "b1", "W2", "b2", ...]``, the order of ``get_weights``."""
        return [f"{k}{i}" for i in range(1, len(self.layers)) for k in "Wb"]

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
        for i, (a, b) in enumerate(zip(self.layers[:-1], self.layers[1:])):
            rows.append(f"{'dense' + str(i + 1):<8}{f'({a}, {b})':>16}"
                        f"{self.activations[i]:>12}{a * b + b:>12,}")
        rows.append(f"total params: {self.n_params:,}  loss: {self.loss}  backend: "
                    f"{self.backend}  dtype: {self.dtype.name}")
        return "\n".join(rows)

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list:
        """Copies of ``[W1, b1, W2, b2, ...]``; W has shape (inputs, outputs)."""
        return [p.copy() for pair in zip(self._W, self._b) for p in pair]

    def set_weights(self, weights) -> None:
        """Replace every parameter, given as ``[W1, b1, W2, b2, ...]`` like ``get_weights``.

        Raises
        ------
        ValueError
            Wrong number of arrays, a wrong shape, or NaN/Inf values.
        """
        weights = list(weights)
        targets = [p for pair in zip(self._W, self._b) for p in pair]
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

    # ------------------------------------------------------------------ passes
    def _forward(self, x, v):
        # Hidden layers write act(x W + b) in one fused call; the last layer keeps its
        # logits z, which the loss needs.
        be = self._backend
        inp = x
        last = len(self._act_ids) - 1
        for i, act in enumerate(self._act_ids):
            if i < last:
                be.dense_forward(inp, self._W[i], self._b[i], v.a[i], act)
            else:
                be.dense_forward(inp, self._W[i], self._b[i], v.z[i])
                be.activation_forward(act, v.z[i], v.a[i])
            inp = v.a[i]

    def _backward(self, x, v):
        """Gradients of the mean loss into ``self._grads``; returns (loss sum, hits)."""
        be = self._backend
        total, hits = be.loss_grad(self._loss_id, self._act_ids[-1], v.z[-1], v.a[-1], v.y,
                                   v.g[-1], v.row_loss)
        for i in range(len(self._W) - 1, -1, -1):
            inp = x if i == 0 else v.a[i - 1]
            be.dense_backward_weight(inp, v.g[i], self._gW[i], self._gb[i])
            if i > 0:
                be.dense_backward_input(v.g[i], self._W[i], v.g[i - 1], self._act_ids[i - 1],
                                        v.a[i - 1])
        return total, hits

    def _loss_of(self, x, y, v):
        """(loss sum, hits) of one batch without gradients for the hidden layers."""
        self._forward(x, v)
        return self._backend.loss_grad(self._loss_id, self._act_ids[-1], v.z[-1], v.a[-1], y,
                                       v.g[-1], v.row_loss)

    def _check_x(self, x, name="x"):
        return _checks.features(x, self.layers[0], self.dtype, name)

    def _check_xy(self, x, y, name="x", yname="y"):
        x = self._check_x(x, name)
        return x, _checks.targets(y, x.shape[0], self.layers[-1], self.dtype, yname)

    def _scores(self, x, y, batch_size):
        """Mean loss and accuracy of checked arrays (host or the backend's)."""
        be = self._backend
        ws = _Workspace(self.layers, min(batch_size, len(x)), self.dtype, backward=False,
                        backend=be)
        total, hits = 0.0, 0
        with self._on_backend():
            x, y = be.to_device(x), be.to_device(y)
            for start in range(0, len(x), ws.batch):
                stop = min(start + ws.batch, len(x))
                t, h = self._loss_of(x[start:stop], y[start:stop], ws.views(stop - start))
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
            ``sgd``, ``momentum``, ``nesterov``, ``rmsprop`` (the default) or
            ``adam``, or an optimizer object carrying its own hyper-parameters.
            The numerical trainer takes plain ``sgd`` only (its default).
        lr : float, optional
            Learning rate with an optimizer name; default that optimizer's
            (1e-3 for rmsprop and adam, 1e-2 for the others).
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
        epoch (see :mod:`fastmlp.backends.cuda_backend`).
        """
        epochs = _checks.integer("epochs", epochs, 0)
        l2 = _checks.real("l2", l2, low=0)
        validation_split = _checks.real("validation_split", validation_split, 0, 1,
                                        high_open=True)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        if trainer not in TRAINERS:
            raise ValueError(f"unknown trainer {trainer!r}; valid trainers are: "
                             f"{', '.join(TRAINERS)}")
        lecture_steps = trainer != "backprop"
        if trainer != "numerical" and h is not None:
            raise ValueError("h is the numerical trainer's step: it needs trainer='numerical'")
        if lecture_steps:
            from . import numerical

            opt, h = numerical.check_fit_options(self, trainer, batch_size, optimizer, lr,
                                                 l2, h)
        else:
            batch_size = _checks.integer("batch_size", 128 if batch_size is None
                                         else batch_size, 1)
            opt = optim.get("rmsprop" if optimizer is None else optimizer, lr)
        x, y = self._check_xy(x, y)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            val = self._check_xy(*validation_data, name="validation x", yname="validation y")
        elif validation_split > 0:
            n_val = int(len(x) * validation_split)
            if n_val == 0 or n_val == len(x):
                raise ValueError(f"validation_split={validation_split} leaves "
                                 f"{len(x) - n_val} training and {n_val} validation samples "
                                 f"out of {len(x)}")
            val = (x[-n_val:], y[-n_val:])
            x, y = x[:-n_val], y[:-n_val]

        history = History()
        self.history = history
        self.optimizer = opt
        n = len(x)
        if lecture_steps:
            steps = _LectureSteps(self, x, y, opt.lr, h, analytic=trainer != "numerical")
        elif self._backend.device:
            steps = self._backend.Trainer(self, x, y, opt, l2, min(batch_size, n))
            if val is not None:
                val = tuple(self._backend.to_device(a) for a in val)
        else:
            steps = _BackpropSteps(self, x, y, opt, l2, min(batch_size, n))
        progress = _Progress(verbose, epochs, -(-n // steps.batch))

        epoch = 0
        total = hits = seen = 0
        t0 = time.perf_counter()
        try:
            for epoch in range(epochs):
                progress.start_epoch(epoch)
                order = steps.new_order(shuffle)
                total = hits = seen = taken = 0
                t0 = time.perf_counter()
                for start in range(0, n, steps.chunk):
                    try:
                        done, t, h_, m = steps.run(order[start:start + steps.chunk],
                                                   contiguous=not shuffle)
                    except _NonFiniteLoss as exc:
                        history.steps += exc.steps
                        raise FloatingPointError(
                            f"the loss became {exc.loss} at epoch {epoch + 1}, step "
                            f"{(start + exc.offset) // steps.batch + 1}; the model keeps the "
                            f"weights that gave the last finite loss (try a smaller "
                            f"learning rate)") from None
                    total += t
                    hits += h_
                    seen += m
                    taken += done
                    history.steps += done
                    progress.step(taken, total / seen, hits / seen)
                seconds = time.perf_counter() - t0
                metrics = {"loss": total / n, "accuracy": hits / n}
                if val is not None:
                    metrics["val_loss"], metrics["val_accuracy"] = self._scores(
                        *val, 1024 if lecture_steps else steps.batch)
                history._append(epoch, seconds, **metrics)
                progress.end_epoch(seconds, metrics)
        except KeyboardInterrupt:
            history.interrupted = True
            done, t, h_, m = steps.unreported()
            history.steps += done
            total, hits, seen = total + t, hits + h_, seen + m
            if seen:
                history._append(epoch, time.perf_counter() - t0, loss=total / seen,
                                accuracy=hits / seen)
            progress.close()
            warnings.warn(f"training interrupted in epoch {epoch + 1}; the model keeps the "
                          f"weights of the {history.steps} completed steps", stacklevel=2)
        return history

    # ------------------------------------------------------------------ inference
    def predict_proba(self, x, batch_size=1024) -> np.ndarray:
        """The network's outputs (class probabilities for softmax), shape (N, outputs)."""
        batch_size = _checks.integer("batch_size", batch_size, 1)
        x = self._check_x(x)
        out = np.empty((len(x), self.layers[-1]), dtype=self.dtype)
        be = self._backend
        ws = _Workspace(self.layers, min(batch_size, len(x)), self.dtype, backward=False,
                        backend=be)
        with self._on_backend():
            x = be.to_device(x)
            for start in range(0, len(x), ws.batch):
                stop = min(start + ws.batch, len(x))
                v = ws.views(stop - start)
                self._forward(x[start:stop], v)
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
        batch_size = _checks.integer("batch_size", batch_size, 1)
        x, y = self._check_xy(x, y)
        loss, acc = self._scores(x, y, batch_size)
        return {"loss": loss, "accuracy": acc}

    def loss_and_gradients(self, x, y):
        """Mean loss on (x, y) and its gradients ``[dW1, db1, ...]`` by backprop (no L2)."""
        x, y = self._check_xy(x, y)
        be = self._backend
        ws = _Workspace(self.layers, len(x), self.dtype, backward=True, backend=be)
        v = ws.views(len(x))
        with self._on_backend():
            x = be.to_device(x)
            v.y = be.to_device(y)
            self._forward(x, v)
            total, _ = self._backward(x, v)
            grads = [be.to_host(g).copy() for pair in zip(self._gW, self._gb) for g in pair]
        return total / len(x), grads

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
        header = {"format": _FORMAT_NAME, "format_version": FORMAT_VERSION,
                  "fastmlp_version": __version__, "config": self.get_config(), "meta": self.meta}
        arrays = dict(zip(self.param_names, self.get_weights()))
        with atomic_write(path) as f:
            np.savez(f, __header__=np.array(json.dumps(header)), **arrays)


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
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "__header__" not in f.files:
                raise ValueError("no fastmlp header")
            header = json.loads(str(f["__header__"]))
            if header.get("format") != _FORMAT_NAME:
                raise ValueError("no fastmlp header")
            version = header.get("format_version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise _NewerFormat(f"{path} uses model format {version}; this fastmlp "
                                   f"({__version__}) reads format {FORMAT_VERSION} and older")
            cfg = dict(header["config"])
            if backend is not None:
                cfg["backend"] = backend
            model = MLP(**cfg)
            model.set_weights([f[name] for name in model.param_names])
            model.meta = dict(header.get("meta") or {})
            return model
    except FileNotFoundError:
        raise
    except _NewerFormat as exc:
        raise ValueError(str(exc)) from None
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, TypeError) as exc:
        raise ValueError(f"{path} is not a readable fastmlp model file ({exc})") from exc


class _NewerFormat(Exception):
    pass


TRAINERS = ("backprop", "numerical", "lecture-backprop")


class _NonFiniteLoss(Exception):
    """A step met a non-finite loss ``offset`` samples into its block of samples,
    after ``steps`` completed steps of the block (default: ``offset``)."""

    def __init__(self, offset, loss, steps=None):
        super().__init__(offset, loss)
        self.offset, self.loss = offset, loss
        self.steps = offset if steps is None else steps


class _HostSteps:
    """Runners on the host draw each epoch's order from the model's shuffling stream."""

    def new_order(self, shuffle):
        n = len(self.x)
        return self.model._shuffle_rng.permutation(n).astype(np.intp, copy=False) \
            if shuffle else np.arange(n, dtype=np.intp)


class _BackpropSteps(_HostSteps):
    """One mini-batch backprop step per call, on two parameter buffers.

    Each update reads the current buffer and writes the other, so the weights
    before the last step are always at hand, without a copy.
    """

    def __init__(self, model, x, y, opt, l2, batch):
        self.model, self.x, self.y, self.opt, self.l2 = model, x, y, opt, l2
        self.batch = self.chunk = batch
        self.ws = _Workspace(model.layers, batch, model.dtype, backward=True)
        self.spare = np.empty_like(model._params)
        self.spare_W, self.spare_b = model._split(self.spare)
        self.taken = 0

    def run(self, rows, contiguous):
        """Step on the samples ``rows``; returns (steps, loss sum, hits, samples)."""
        model, be, m = self.model, self.model._backend, len(rows)
        v = self.ws.views(m)
        if contiguous:
            np.copyto(v.x, self.x[rows[0]:rows[0] + m])
            np.copyto(v.y, self.y[rows[0]:rows[0] + m])
        else:
            be.take_rows(self.x, rows, v.x)
            be.take_rows(self.y, rows, v.y)
        model._forward(v.x, v)
        t, h = model._backward(v.x, v)
        if not math.isfinite(t):
            if self.taken:
                model._swap(self.spare, self.spare_W, self.spare_b)
            raise _NonFiniteLoss(0, t / m)
        # An interruption inside the update leaves the current buffer intact.
        self.opt.update(be, model._params, model._grads, self.l2, model._n_weights,
                        out=self.spare)
        self.spare, self.spare_W, self.spare_b = model._swap(self.spare, self.spare_W,
                                                             self.spare_b)
        self.taken += 1
        return 1, t, h, m

    def unreported(self):
        return 0, 0.0, 0, 0


class _LectureSteps(_HostSteps):
    """The lecture's compiled per-sample steps, over blocks of up to 1000 samples.

    Derivatives by central differences, or by backprop with ``analytic``.

    The weights at the start of the last two blocks are kept: a non-finite loss
    sends the model back to them, and the deterministic steps are replayed up to
    the weights that gave the last finite loss.
    """

    batch = 1
    chunk = 1000

    def __init__(self, model, x, y, lr, h, analytic):
        from .numerical import compiled_kernels

        self.kernels = compiled_kernels()
        self.model, self.x, self.y = model, x, y
        self.args = (model._W[0], model._b[0], model._W[1], model._b[1], lr, h, analytic)
        self.start = np.empty_like(model._params)
        self.prev_start = np.empty_like(model._params)
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

    def run(self, rows, contiguous):
        """Step on each sample of ``rows``; returns (steps, loss sum, hits, samples)."""
        params = self.model._params
        self.start, self.prev_start = self.prev_start, self.start
        np.copyto(self.start, params)
        self.prev_rows, self.rows = self.rows, rows
        done = self._train(rows, self.stats)
        if done < len(rows):
            bad = rows[done:done + 1]
            loss = self.model._scores(self.x[bad], self.y[bad], 1)[0]
            if done:
                np.copyto(params, self.start)
                self._train(rows[:done - 1])
            elif self.prev_rows is not None:
                np.copyto(params, self.prev_start)
                self._train(self.prev_rows[:-1])
            else:
                np.copyto(params, self.start)
            raise _NonFiniteLoss(done, loss)
        return self._report()

    def unreported(self):
        """Steps the kernel completed that run() did not get to return (Ctrl-C)."""
        return self._report()


class _Progress:
    """Keras-like progress: a bar refreshed at most 10 times a second, a line per epoch."""

    def __init__(self, verbose, epochs, steps, stream=None):
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.stream = stream or sys.stdout
        self.live = verbose == 1 and getattr(self.stream, "isatty", lambda: False)()
        self._last = 0.0

    def start_epoch(self, epoch):
        if self.verbose:
            print(f"Epoch {epoch + 1}/{self.epochs}", file=self.stream, flush=True)

    def step(self, done, loss, acc):
        if not self.live:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and done < self.steps:
            return
        self._last = now
        width = 30
        filled = width * done // self.steps
        bar = "=" * max(filled - 1, 0) + (">" if filled < width else "=") + "." * (width - filled)
        self.stream.write(f"\r{done}/{self.steps} [{bar}] - loss: {loss:.4f} - "
                          f"accuracy: {acc:.4f}")
        self.stream.flush()

    def end_epoch(self, seconds, metrics):
        if not self.verbose:
            return
        parts = " - ".join(f"{k}: {v:.4f}" for k, v in metrics.items())
        lead = "\r" if self.live else ""
        print(f"{lead}{self.steps}/{self.steps} - {seconds:.2f}s - {parts}" + " " * 10,
              file=self.stream, flush=True)

    def close(self):
        if self.live:
            print(file=self.stream, flush=True)
