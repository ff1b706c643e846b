"""The multilayer perceptron: its network, weights and inference, and ``fit``.

The model owns one flat parameter vector ``[W1, ..., WL, b1, ..., bL]`` (see
:mod:`fastmlp.network`); training is run by a runner (see
:mod:`fastmlp.training`) and files are read and written by
:mod:`fastmlp.serialization`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _checks, _memory, export, initializers, serialization, step
from ._lock import serialised
from ._util import integer
from .backends import get_backend
from .fitting import TRAINERS, Fitting  # noqa: F401  (TRAINERS: the CLI's choices)
from .network import Network, Parameters, Workspace
from .training import History  # noqa: F401  (the type fit returns)


class MLP(Fitting):
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
        ``float32``, ``float64``, or ``mixed_bfloat16`` (Keras's policy name): float32
        weights, optimizer state and update, with the operands of every matrix
        product rounded to bfloat16 and the products summed in float32 (on the
        ``cpu`` and ``numpy`` backends; see :mod:`fastmlp.bf16`).

    Raises
    ------
    ValueError
        An unknown name (the message lists the valid ones), a loss undefined for
        the output activation, or layer sizes that are not positive integers.
    MemoryError
        The parameters do not fit in the memory available (Linux's MemAvailable,
        or the room under the cgroup's limit): the message gives both figures,
        and nothing was allocated. The weights are drawn a piece at a time, in
        float64, into the model's own dtype, so a float32 model needs no float64
        copy of itself.

    Notes
    -----
    Calls on one model from several threads are serialised: ``fit``,
    ``evaluate``, ``predict``, ``predict_proba``, ``get_weights``,
    ``set_weights``, ``save``, the exports and pickling each hold the model's
    re-entrant lock, so a second thread's call waits for the first to return
    and the model always holds the result of whole calls in some order. A
    callback may call the model inside ``fit`` on the fitting thread; one that
    waits for another thread calling the model deadlocks. Different models in
    different threads run in parallel. ``params`` itself is not guarded.

    Examples
    --------
    >>> import numpy as np, fastmlp
    >>> model = fastmlp.MLP([4, 8, 3], ["relu", "softmax"], backend="numpy", seed=1)
    >>> x, y = np.random.default_rng(0).random((32, 4)), np.arange(32) % 3
    >>> history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    >>> model.predict(x).shape
    (32,)
    """

    def __init__(self, layers: Sequence[int] = (784, 512, 10),
                 activations: Sequence[str] = ("relu", "softmax"), loss: str = "cross_entropy",
                 init: str = "xavier", seed: int = 0, backend: str = "cpu",
                 dtype: str | np.dtype = "float32") -> None:
        policy, storage, bf16 = _checks.policy(dtype)
        if bf16 and backend == "cuda":
            raise ValueError("dtype 'mixed_bfloat16' is not supported on the cuda backend "
                             "yet; use backend 'cpu' or 'numpy', or dtype 'float32'")
        self.network = net = Network(tuple(layers), tuple(activations), loss, storage, bf16)
        #: ``float32``, ``float64`` or ``mixed_bfloat16``; ``dtype`` is the weights' type.
        self.dtype_policy = policy
        init_fn = initializers.get(init)
        self.seed = integer("seed", seed, 0)
        self.layers, self.activations = list(net.layers), list(net.activations)
        self.loss, self.init, self.dtype = loss, init, net.dtype
        self.backend = backend
        self._backend = get_backend(backend)
        self.history: History | None = None
        self.meta: dict = {}
        #: The optimizer of the last ``fit``, with its state; the next ``fit`` goes on with it.
        self.optimizer = None
        #: Epochs trained so far (the next ``fit`` numbers its epochs from here).
        self.epochs_trained = 0
        #: Set to True (by a callback) to end ``fit`` after the current step.
        self.stop_training = False
        #: The live parameters (flat vector and W, b views); get_weights gives copies.
        _memory.ensure(net.n_params * np.dtype(self.dtype).itemsize + initializers.CHUNK * 8,
                       f"the {net.n_params:,} {np.dtype(self.dtype).name} parameters of "
                       f"MLP({list(net.layers)})")
        self.params = Parameters(net, np.empty(net.n_params, dtype=self.dtype))
        rng = np.random.default_rng([self.seed, 0])
        for W, b in zip(self.params.W, self.params.b):
            init_fn(rng, W, b)
        # A separate stream for shuffling, so the initial weights do not depend on it.
        self.shuffle_rng = np.random.default_rng([self.seed, 1])
        self._resident = 0

    @contextlib.contextmanager
    def on_backend(self) -> Iterator[None]:
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
    def compute_dtype(self) -> str:
        """The type of the products' operands: ``bfloat16`` under ``mixed_bfloat16``,
        else the weights' dtype (as Keras's ``DTypePolicy.compute_dtype``)."""
        return "bfloat16" if self.network.bf16 else self.dtype.name

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
                "backend": self.backend, "dtype": self.dtype_policy}

    def __repr__(self):
        cfg = self.get_config()
        return "MLP(" + ", ".join(f"{k}={v!r}" for k, v in cfg.items()) + ")"

    def summary(self, print_fn: Callable[[str], Any] | None = print) -> str:
        """Print a table of the layers and their parameter counts, and return it.

        Parameters
        ----------
        print_fn : callable or None
            Called with the table (default ``print``); None prints nothing.
        """
        rows = [f"{'layer':<8}{'shape':>16}{'activation':>12}{'params':>12}"]
        for i, (a, b) in enumerate(self.network.shapes):
            rows.append(f"{'dense' + str(i + 1):<8}{f'({a}, {b})':>16}"
                        f"{self.activations[i]:>12}{a * b + b:>12,}")
        rows.append(f"total params: {self.n_params:,}  loss: {self.loss}  backend: "
                    f"{self.backend}  dtype: {self.dtype_policy}")
        text = "\n".join(rows)
        if print_fn is not None:
            print_fn(text)
        return text

    # ------------------------------------------------------------------ weights
    @serialised
    def get_weights(self) -> list:
        """Copies of ``[W1, b1, W2, b2, ...]``; W has shape (inputs, outputs)."""
        return [p.copy() for p in self.params.pairs()]

    @serialised
    def set_weights(self, weights: Sequence[npt.ArrayLike]) -> None:
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
    def check_x(self, x: npt.ArrayLike, name: str = "x") -> np.ndarray:
        """``x`` validated and converted for this model (see ``fastmlp._checks``)."""
        return _checks.features(x, self.layers[0], self.dtype, name)

    def check_xy(self, x: npt.ArrayLike, y: npt.ArrayLike, name: str = "x",
                 yname: str = "y") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` validated and converted for this model (y as target rows)."""
        x = self.check_x(x, name)
        return x, _checks.targets(y, x.shape[0], self.layers[-1], self.dtype, yname)

    @serialised
    def scores(self, x: Any, y: Any, batch_size: int) -> tuple[float, float]:
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

    # ------------------------------------------------------------------ inference
    @serialised
    def predict_proba(self, x: npt.ArrayLike, batch_size: int = 1024) -> np.ndarray:
        """The network's outputs (class probabilities for softmax), shape (N, outputs)."""
        batch_size = integer("batch_size", batch_size, 1)
        xa = self.check_x(x)
        out = np.empty((len(xa), self.layers[-1]), dtype=self.dtype)
        be, net = self._backend, self.network
        ws = Workspace(net, min(batch_size, len(xa)), backward=False, backend=be)
        with self.on_backend():
            xd = be.to_device(xa)
            for start in range(0, len(xa), ws.batch):
                stop = min(start + ws.batch, len(xa))
                v = ws.views(stop - start)
                step.forward(be, net, self.params, xd[start:stop], v)
                step.output(be, net, v)
                be.to_host(v.a[-1], out[start:stop])
        return out

    def predict(self, x: npt.ArrayLike, batch_size: int = 1024) -> np.ndarray:
        """Predicted integer labels, shape (N,) (for one output: 1 where it is >= 0.5)."""
        p = self.predict_proba(x, batch_size)
        if p.shape[1] == 1:
            return (p[:, 0] >= 0.5).astype(np.int64)
        return p.argmax(axis=1)

    @serialised
    def evaluate(self, x: npt.ArrayLike, y: npt.ArrayLike, batch_size: int = 1024) -> dict:
        """``{"loss": mean loss, "accuracy": fraction correct}`` on (x, y)."""
        batch_size = integer("batch_size", batch_size, 1)
        loss, acc = self.scores(*self.check_xy(x, y), batch_size)
        return {"loss": loss, "accuracy": acc}

    @serialised
    def loss_and_gradients(self, x: npt.ArrayLike,
                           y: npt.ArrayLike) -> tuple[float, list[np.ndarray]]:
        """Mean loss on (x, y) and its gradients ``[dW1, db1, ...]`` by backprop (no L2)."""
        xa, ya = self.check_xy(x, y)
        be, net = self._backend, self.network
        ws = Workspace(net, len(xa), backward=True, backend=be)
        with self.on_backend():
            grads = Parameters(net, be.zeros(self.params.flat.shape, self.dtype))
            xd, yd = be.to_device(xa), be.to_device(ya)
            total, _ = step.forward_loss(be, net, self.params, xd, yd, ws)
            step.backward(be, net, self.params, grads, xd, ws)
            out = [be.to_host(g).copy() for g in grads.pairs()]
        return total / len(xa), out

    # ------------------------------------------------------------------ copies and files
    def astype(self, dtype: str | None = None, backend: str | None = None) -> MLP:
        """A copy with the same weights in another dtype and/or on another backend."""
        cfg = self.get_config()
        cfg["dtype"] = cfg["dtype"] if dtype is None else dtype
        cfg["backend"] = cfg["backend"] if backend is None else backend
        clone = MLP(**cfg)
        clone.set_weights(self.get_weights())
        clone.meta = dict(self.meta)
        return clone

    # ------------------------------------------------------------------ other frameworks
    @serialised
    def to_torch(self) -> Any:
        """A ``torch.nn.Sequential`` with these weights, computing ``predict_proba``
        (see :mod:`fastmlp.export`)."""
        return export.to_torch(self)

    @classmethod
    def from_torch(cls, module: Any, loss: str | None = None, backend: str = "cpu",
                   seed: int = 0) -> MLP:
        """A model from a ``torch.nn.Sequential`` of ``Linear`` layers and activations;
        ``loss`` defaults from the output activation (see :mod:`fastmlp.export`)."""
        return export.from_torch(cls, module, loss, backend, seed)

    @serialised
    def to_onnx(self, path: str | os.PathLike | None = None, opset: int = 17) -> Any:
        """The network as ONNX (``Gemm`` and activation nodes; input ``input``, output
        ``output``, what ``predict_proba`` gives), written atomically to ``path`` when
        given; returns the ``onnx.ModelProto`` (see :mod:`fastmlp.export`)."""
        return export.to_onnx(self, path, opset)

    @serialised
    def save(self, path: str | os.PathLike, include_optimizer: bool = True) -> None:
        """Write the configuration, weights and training state to ``path`` (a versioned
        ``.npz``), atomically.

        The training state (the optimizer's hyper-parameters, state and step
        count, the shuffling stream, the epochs trained) lets a loaded model go
        on training exactly as this one would. The file appears complete or not
        at all: it is written beside its final name and renamed into place.
        """
        arrays = dict(zip(self.param_names, self.get_weights()))
        training_state = serialization.training_state(
            self, arrays, self.optimizer if include_optimizer else None)
        serialization.write(path, self.get_config(), self.meta, arrays, training_state)

    # Pickle, copy.deepcopy and joblib: the configuration, the weights and the
    # training state, rebuilt through the constructor.
    @serialised
    def __getstate__(self):
        return {"config": self.get_config(), "meta": self.meta,
                "flat": np.array(self.params.flat, copy=True), "optimizer": self.optimizer,
                "shuffle": self.shuffle_rng.bit_generator.state,
                "epochs_trained": self.epochs_trained, "history": self.history}

    def __setstate__(self, state):
        self.__init__(**state["config"])
        self.params.flat[...] = state["flat"]
        self.meta, self.optimizer = state["meta"], state["optimizer"]
        self.shuffle_rng.bit_generator.state = state["shuffle"]
        self.epochs_trained, self.history = state["epochs_trained"], state["history"]


def load(path: str | os.PathLike, backend: str | None = None) -> MLP:
    """Read a model written by ``MLP.save``, ready to predict or to go on training.

    Parameters
    ----------
    path : str or path-like
    backend : str, optional
        Put the model on this backend instead of the one it was saved from.

    Raises
    ------
    ValueError
        The file is truncated or damaged, is not a fastmlp model, is from a newer
        format, or holds arrays that disagree with its configuration. Each array's
        header and the layers' shapes are checked before anything is allocated, so
        a crafted file cannot make the loader allocate more than its size.
    FileNotFoundError
        No such file.
    """
    def build(cfg, arrays, meta, training):
        if backend is not None:
            cfg["backend"] = backend
        model = MLP(**cfg)
        model.set_weights([arrays[name] for name in model.param_names])
        model.meta = meta
        serialization.restore_training(model, training, arrays)
        return model

    return serialization.read(path, build)
