"""scikit-learn estimators: ``MLPClassifier`` and ``MLPRegressor`` on fastmlp's engine.

Their parameters follow ``sklearn.neural_network.MLPClassifier`` where the two
meet, so they drop into a ``Pipeline``, ``GridSearchCV`` (any ``n_jobs``, and
on a Dask cluster through joblib), ``clone`` and pickling. scikit-learn is an
optional extra: ``pip install 'fastmlp[sklearn]'``.

Differences from scikit-learn's MLP:

* ``solver`` is a fastmlp optimizer: ``adam`` (default), ``sgd`` (plain, without
  scikit-learn's Nesterov momentum: use ``nesterov``), ``momentum``,
  ``nesterov``, ``rmsprop`` or ``adamw``; there is no ``lbfgs``.
* ``activation`` also takes ``leaky_relu`` (and ``linear``/``sigmoid`` for
  ``identity``/``logistic``).
* A classifier always has one softmax output per class (two for a binary
  problem) under cross-entropy; a regressor, linear outputs under the squared
  error (averaged over outputs, so its loss is half scikit-learn's).
* ``backend``, ``dtype`` and ``n_threads`` pick fastmlp's engine; the fitted
  :class:`fastmlp.MLP` is ``model_``.
* Calls on one estimator from several threads are serialised, as those on a
  :class:`fastmlp.MLP` are: ``fit``, ``partial_fit`` and the predictions wait for
  one another, so the fitted attributes always come from whole calls.

Example
-------
>>> from sklearn.pipeline import make_pipeline                      # doctest: +SKIP
>>> from sklearn.preprocessing import StandardScaler
>>> from fastmlp.sklearn import MLPClassifier
>>> clf = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=50))
>>> clf.fit(x_train, y_train).score(x_test, y_test)
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.model_selection import train_test_split
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data
except ImportError as exc:  # pragma: no cover - depends on the extras installed
    raise ImportError("fastmlp.sklearn needs scikit-learn 1.6 or newer: "
                      "pip install 'fastmlp[sklearn]'") from exc

from . import _checks, preprocessing, threads
from ._lock import serialised, without_lock
from .callbacks import EarlyStopping
from .model import MLP

#: scikit-learn's activation names, and fastmlp's own.
ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               "linear": "linear", "sigmoid": "sigmoid", "leaky_relu": "leaky_relu"}


class _MLPEstimator(BaseEstimator):
    """What the classifier and the regressor share: parameters, fitting, threads."""

    _output: str
    _loss: str

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=1e-4, batch_size="auto", learning_rate_init=1e-3, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 backend="cpu", dtype="float32", n_threads=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype
        self.n_threads = n_threads

    # ------------------------------------------------------------------ checks
    def _hidden(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        if not all(isinstance(s, numbers.Integral) and s > 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        return [int(s) for s in sizes]

    def _activation(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid activations "
                             f"are: {', '.join(ACTIVATIONS)}")
        return ACTIVATIONS[self.activation]

    def _check_numbers(self):
        for name, low in (("max_iter", 1), ("n_iter_no_change", 1)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction!r}")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, numbers.Integral)
                                          or self.batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got "
                             f"{self.batch_size!r}")
        if not isinstance(self.alpha, numbers.Real) or self.alpha < 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")

    def _batch(self, n):
        return min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)

    # ------------------------------------------------------------------ fitting
    def _new_model(self, n_in, n_out):
        seed = self.random_state
        if not isinstance(seed, numbers.Integral) or seed < 0:
            seed = int(check_random_state(seed).randint(np.iinfo(np.int32).max))
        return MLP([n_in, *self._hidden(), n_out], [self._activation()] * len(self._hidden())
                   + [self._output], loss=self._loss, seed=int(seed), backend=self.backend,
                   dtype=self.dtype)

    def _train(self, x, t, epochs, first):
        """Train ``model_`` on checked ``x`` and target rows ``t``."""
        batch = self._batch(len(x))
        fit = dict(batch_size=batch, l2=float(self.alpha) / batch, shuffle=bool(self.shuffle),
                   verbose=2 if self.verbose else 0)
        if first:  # a new optimizer; later calls go on with the model's
            fit.update(optimizer=self.solver, lr=float(self.learning_rate_init))
        callbacks = []
        if epochs > 1 and self.early_stopping:
            x, xv, t, tv = train_test_split(
                x, t, test_size=self.validation_fraction, random_state=self.model_.seed,
                stratify=self._stratify(t))
            fit["validation_data"] = (xv, tv)
            callbacks.append(EarlyStopping(self._monitor, self.tol, self.n_iter_no_change,
                                           restore_best_weights=True))
        elif epochs > 1:
            callbacks.append(EarlyStopping("loss", self.tol, self.n_iter_no_change))
        with threads.num_threads(self.n_threads):
            history = self.model_.fit(x, t, epochs=epochs, callbacks=callbacks, **fit)
        self.n_iter_ = (0 if first else self.n_iter_) + len(history.epoch)
        self.loss_curve_ = ([] if first else list(self.loss_curve_)) \
            + list(history.history["loss"])
        if "val_loss" in history.history:
            self.validation_scores_ = list(history.history[self._monitor])
        self.best_loss_ = min(self.loss_curve_)
        return self

    def _stratify(self, t):
        return None

    @serialised
    def _fit(self, x, y, epochs, incremental, classes=None):
        self._check_numbers()
        first = not (incremental or self.warm_start) or not hasattr(self, "model_")
        x, y = validate_data(self, x, y, reset=first, dtype=[np.float64, np.float32],
                             multi_output=self._multi_output, y_numeric=not self._classifier)
        t = self._targets(y, first, classes)
        if first:
            self.model_ = self._new_model(x.shape[1], t.shape[1])
        return self._train(x, t, epochs, first)

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> Any:
        """Train a new network for ``max_iter`` epochs at most (or go on with the fitted
        one when ``warm_start``), stopping when the loss (or, with ``early_stopping``,
        the validation score) has not improved by ``tol`` for ``n_iter_no_change``
        epochs. Returns self."""
        return self._fit(X, y, self.max_iter, incremental=False)

    @serialised
    def _forward(self, X):
        check_is_fitted(self)
        x = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        with threads.num_threads(self.n_threads):
            # In float64 whatever the model's dtype, as scikit-learn's estimators give.
            return self.model_.predict_proba(x).astype(np.float64)

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices, (inputs, outputs) per layer, as scikit-learn's ``coefs_``."""
        check_is_fitted(self)
        return self.model_.get_weights()[0::2]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors per layer, as scikit-learn's ``intercepts_``."""
        check_is_fitted(self)
        return self.model_.get_weights()[1::2]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    def __getstate__(self):
        # The calls' lock (made on first use) is not pickled; a copy makes its own.
        return without_lock(super().__getstate__())


class MLPClassifier(ClassifierMixin, _MLPEstimator):
    """A multilayer perceptron classifier with softmax outputs, trained by fastmlp.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int
        Units of each hidden layer.
    activation : str
        Of the hidden layers: ``relu``, ``tanh``, ``logistic``, ``identity`` or
        ``leaky_relu``.
    solver : str
        ``adam``, ``sgd``, ``momentum``, ``nesterov``, ``rmsprop`` or ``adamw``.
    alpha : float
        L2 penalty, scaled as scikit-learn's: ``alpha / (2 * batch)`` times the
        squared weights is added to each batch's mean loss.
    batch_size : int or "auto"
        ``auto``: ``min(200, n_samples)``.
    learning_rate_init : float
    max_iter : int
        Epochs at most.
    shuffle : bool
    random_state : int, RandomState or None
        Seeds the weights, the shuffling and the validation split.
    tol, n_iter_no_change : float, int
        Stop when the training loss (the validation accuracy with
        ``early_stopping``) has not improved by ``tol`` for ``n_iter_no_change``
        epochs.
    verbose : bool
    warm_start : bool
        ``fit`` goes on with the fitted network and its optimizer.
    early_stopping : bool
        Hold out ``validation_fraction`` of the samples (stratified), stop on
        their accuracy and keep the best epoch's weights.
    validation_fraction : float
    backend : str
        ``cpu``, ``numpy`` or ``cuda``.
    dtype : str
        ``float32``, ``float64`` or ``mixed_bfloat16`` (bfloat16 products, float32
        weights; see :mod:`fastmlp.bf16`).
    n_threads : int or None
        Threads of the ``cpu`` backend during ``fit`` and ``predict`` (None: as set
        for the process, which threadpoolctl and joblib's workers limit).

    Attributes
    ----------
    classes_ : ndarray
        The labels seen by the first ``fit`` (any sortable labels, strings included).
    model_ : fastmlp.MLP
    n_iter_, loss_curve_, best_loss_, validation_scores_, coefs_, intercepts_
        As in scikit-learn.
    """

    _output, _loss, _classifier, _multi_output = "softmax", "cross_entropy", True, False
    _monitor = "val_accuracy"

    def _targets(self, y, first, classes=None):
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(y if classes is None else classes)
            if len(self.classes_) < 2:
                raise ValueError(f"the classifier needs samples of at least 2 classes; "
                                 f"y has 1 class: {self.classes_[0]!r}")
        idx = np.searchsorted(self.classes_, y)
        idx = np.minimum(idx, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            raise ValueError(f"y has labels not in classes_ {list(self.classes_)}: "
                             f"{list(np.unique(y[unknown]))[:5]}")
        return preprocessing.one_hot(idx, len(self.classes_), dtype=self.dtype)

    def _stratify(self, t):
        # Stratified where every class can be on both sides of the split.
        counts = t.sum(axis=0)
        n_val = int(np.ceil(self.validation_fraction * len(t)))
        present = counts[counts > 0]
        ok = present.min() >= 2 and len(present) <= min(n_val, len(t) - n_val)
        return t.argmax(axis=1) if ok else None

    def partial_fit(self, X: npt.ArrayLike, y: npt.ArrayLike,
                    classes: npt.ArrayLike | None = None) -> MLPClassifier:
        """One epoch on (X, y), going on from the last call. The first call needs
        ``classes``, all the labels ``y`` may hold. Returns self."""
        if not hasattr(self, "model_"):
            if classes is None:
                raise ValueError("the first partial_fit needs classes, all the labels y "
                                 "may hold")
            return self._fit(X, y, 1, incremental=True, classes=classes)
        if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes {list(np.unique(classes))} differ from the first call's "
                             f"{list(self.classes_)}")
        return self._fit(X, y, 1, incremental=True)

    def predict_proba(self, X: npt.ArrayLike) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), in ``classes_`` order."""
        return self._forward(X)

    def predict(self, X: npt.ArrayLike) -> np.ndarray:
        """The most probable label of each sample (from ``classes_``)."""
        proba = self._forward(X)
        return self.classes_[proba.argmax(axis=1)]


class MLPRegressor(RegressorMixin, _MLPEstimator):
    """A multilayer perceptron regressor with linear outputs under the mean squared
    error, trained by fastmlp. Parameters as :class:`MLPClassifier`; with
    ``early_stopping`` it stops on the validation loss."""

    _output, _loss, _classifier, _multi_output = "linear", "mse", False, True
    _monitor = "val_loss"

    def _targets(self, y, first, classes=None):
        y = np.asarray(y)
        if first:
            self._y_1d = y.ndim == 1
        return np.asarray(y.reshape(len(y), -1), dtype=_checks.float_dtype(self.dtype))

    def partial_fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> MLPRegressor:
        """One epoch on (X, y), going on from the last call. Returns self."""
        return self._fit(X, y, 1, incremental=True)

    def predict(self, X: npt.ArrayLike) -> np.ndarray:
        """Predicted targets: (n_samples,) for a 1-D ``y``, else (n_samples, n_outputs)."""
        out = self._forward(X)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
