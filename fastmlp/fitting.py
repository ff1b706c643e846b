"""``MLP.fit``: training options checked once, a runner made, the epochs run.

:class:`Fitting` is the part of :class:`fastmlp.MLP` that trains; the runners
and the epoch loop are in :mod:`fastmlp.training`, the callbacks in
:mod:`fastmlp.callbacks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _memory, numerical, optim, training
from ._lock import serialised
from ._util import choose, integer, real
from .callbacks import Callback, CallbackList, ProgbarLogger
from .network import Workspace
from .training import History

TRAINERS = ("backprop", "numerical", "lecture-backprop")


class Fitting:
    """``fit`` and its helpers, for :class:`fastmlp.MLP` (which owns the network, the
    parameters, the backend and the training state they use)."""

    # What fit uses of the model (set by MLP.__init__).
    network: Any
    params: Any
    shuffle_rng: np.random.Generator
    _backend: Any
    optimizer: optim.Optimizer | None
    epochs_trained: int
    stop_training: bool
    history: History | None
    check_xy: Callable[..., tuple[np.ndarray, np.ndarray]]
    scores: Callable[..., tuple[float, float]]

    @serialised
    def fit(self, x: npt.ArrayLike, y: npt.ArrayLike, epochs: int = 5,
            batch_size: int | None = None, optimizer: str | optim.Optimizer | None = None,
            lr: float | None = None, l2: float = 0.0, validation_split: float = 0.0,
            validation_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
            shuffle: bool = True, verbose: int = 1, trainer: str = "backprop",
            h: float | None = None, callbacks: Sequence[Callback] | None = None,
            initial_epoch: int | None = None) -> History:
        """Train with mini-batch backprop, or with the lecture's numerical derivative.

        Training goes on where the last ``fit`` (or the saved file) left it: the
        same optimizer with its state, the shuffling stream, and the epoch count,
        so that ``fit(epochs=2)`` then ``fit(epochs=3)`` gives bitwise the weights
        of ``fit(epochs=5)``.

        Parameters
        ----------
        x : array, (N, features) or (N, 28, 28)
            Inputs, any numeric dtype (converted once to the model's dtype).
        y : array
            Integer labels (N,) or targets (N, outputs), such as one-hot rows.
        epochs : int
            Passes over the training data in this call (0 trains nothing); with
            ``initial_epoch``, as in Keras, the epoch number to stop before.
        batch_size : int, optional
            Samples per step (default 128); the last step of an epoch takes what
            is left. The numerical trainer steps one sample at a time.
        optimizer : str or fastmlp.optim.Optimizer, optional
            ``sgd``, ``momentum``, ``nesterov``, ``rmsprop``, ``adam`` or ``adamw``,
            or an optimizer object carrying its own hyper-parameters and state; a
            name starts a new optimizer. Default: the model's optimizer from the
            last ``fit`` (``model.optimizer``), else a new ``rmsprop``. The
            numerical trainer takes plain ``sgd`` only (its default).
        lr : float, optional
            Learning rate with an optimizer name (default that optimizer's: 1e-3
            for rmsprop, adam and adamw, 1e-2 for the others); without one, the
            new learning rate of the model's optimizer, which keeps its state.
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
            0 silent, 1 a progress bar with an ETA on a terminal (a line per
            epoch elsewhere), 2 a line per epoch.
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
        callbacks : list of fastmlp.callbacks.Callback, optional
            Called at the start and end of training, of each epoch, and after
            steps (see :mod:`fastmlp.callbacks`).
        initial_epoch : int, optional
            Number of the first epoch (default: the epochs this model has
            trained, ``model.epochs_trained``). Given, ``epochs`` is read as
            Keras does: train epochs ``initial_epoch`` to ``epochs - 1``.

        Returns
        -------
        History
            This call's epochs; also kept as ``model.history``.

        Raises
        ------
        ValueError
            Bad shapes, labels, NaN/Inf in the data, bad hyper-parameters, or a
            model or option the numerical trainer does not support.
        FloatingPointError
            The loss became NaN or Inf; the message names the epoch and step, and
            the model keeps the weights that gave the last finite loss.
        MemoryError
            On a host backend, training needs more memory than is available (the
            gradient, a spare copy of the parameters, the optimizer's state and a
            batch's buffers): raised before any of it is allocated, with both
            figures.

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
        first = self.epochs_trained if initial_epoch is None \
            else integer("initial_epoch", initial_epoch, 0)
        if initial_epoch is not None:
            epochs = max(epochs - first, 0)
        l2 = real("l2", l2, low=0)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        choose("trainer", trainer, TRAINERS)
        lecture = trainer != "backprop"
        if trainer != "numerical" and h is not None:
            raise ValueError("h is the numerical trainer's step: it needs trainer='numerical'")
        if not lecture:
            batch = integer("batch_size", 128 if batch_size is None else batch_size, 1)
        # The data is checked before _optimizer_for may change the kept optimizer's rate.
        xa, ya = self.check_xy(x, y)
        xa, ya, val = self._validation(xa, ya, validation_split, validation_data)
        if lecture:
            opt, h = numerical.check_fit_options(self, trainer, batch_size, optimizer, lr,
                                                 l2, h)
        else:
            opt = self._optimizer_for(optimizer, lr)

        be, n = self._backend, len(xa)
        runner: Any
        if lecture:
            runner = numerical.LectureRunner(self.network, self.params, xa, ya, opt.lr, h,
                                             analytic=trainer != "numerical",
                                             rng=self.shuffle_rng)
        else:
            runner = self.make_runner(xa, ya, opt, l2, min(batch, n))
            if be.device and val is not None:
                val = tuple(be.to_device(a) for a in val)
        score = None
        if val is not None:
            def score():
                return self.scores(*val, 1024 if lecture else runner.batch)

        self.optimizer = opt
        self.stop_training = False
        listed = list(callbacks or [])
        if verbose:
            listed.append(ProgbarLogger(verbose))
        cbs = CallbackList(listed, self, {"epochs": first + epochs, "samples": n,
                                       "batch_size": runner.batch,
                                       "steps": -(-n // runner.batch)})
        if cbs.batch_every and getattr(runner, "chunk_in_steps", False):
            runner.chunk = min(runner.chunk, cbs.batch_every * runner.batch)
        self.history = history = training.History()
        try:
            return training.run_epochs(runner, history, n, epochs, shuffle, score, cbs, first)
        finally:
            if history.epoch:
                self.epochs_trained = history.epoch[-1] + 1

    def _optimizer_for(self, optimizer, lr):
        """``fit``'s optimizer: the model's own (new learning rate ``lr``) when
        ``optimizer`` is None and it has one, else the one named or given."""
        if optimizer is None and self.optimizer is not None:
            if lr is not None:
                self.optimizer.lr = real("lr", lr, low=0, low_open=True)
            return self.optimizer
        return optim.get("rmsprop" if optimizer is None else optimizer, lr)

    def _validation(self, x, y, split, data):
        """``(x, y, (x_val, y_val) or None)`` from ``fit``'s validation options."""
        split = real("validation_split", split, 0, 1, high_open=True)
        if data is not None:
            if not isinstance(data, (tuple, list)) or len(data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            return x, y, self.check_xy(*data, name="validation x", yname="validation y")
        if split == 0:
            return x, y, None
        n_val = int(len(x) * split)
        if n_val == 0 or n_val == len(x):
            raise ValueError(f"validation_split={split} leaves {len(x) - n_val} training "
                             f"and {n_val} validation samples out of {len(x)}")
        return x[:-n_val], y[:-n_val], (x[-n_val:], y[-n_val:])

    def make_runner(self, x: Any, y: Any, optimizer: optim.Optimizer, l2: float,
                    batch: int) -> training.Runner:
        """The mini-batch backprop runner of ``fit`` on checked arrays (see
        :mod:`fastmlp.training`): the backend's own ``make_runner`` where it has one,
        else :class:`fastmlp.training.BackpropRunner`."""
        be, net = self._backend, self.network
        if not be.device:
            # The gradient, the spare parameters, the optimizer's state if it has none
            # yet, and the workspace of a batch.
            slots = 0 if optimizer.state is not None else optimizer.n_slots
            need = np.dtype(net.dtype).itemsize * ((2 + slots) * net.n_params
                                                   + batch * Workspace.row_values(net))
            _memory.ensure(need, f"training MLP({list(net.layers)}) in batches of {batch}")
        make = getattr(be, "make_runner", None) or training.BackpropRunner
        return make(be, net, self.params, x, y, optimizer, l2, batch, self.shuffle_rng)
