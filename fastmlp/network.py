"""What a network is, built once: its description, its parameters and its workspace.

Every way of training and of running a network receives these three objects
instead of reaching into ``MLP``:

* :class:`Network`, immutable: layer sizes, activation and loss names and kernel
  ids, dtype, and the layout of the one flat parameter vector
  ``[W1, ..., WL, b1, ..., bL]`` (the weights first, so L2 applies to one
  contiguous slice);
* :class:`Parameters`: a flat vector with its ``W`` and ``b`` views, on the host
  or a backend's device; two of them trade places for double buffering;
* :class:`Workspace`: every buffer of a forward and backward pass for batches
  of up to ``batch`` rows, allocated once, so that a step allocates nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import _checks
from ._util import integer
from .functions import activation_id, check_loss_output, loss_id


@dataclass(frozen=True)
class Network:
    """Layer sizes, activations, loss and dtype, with their kernel ids and layout.

    ``bf16``: the products take bfloat16 operands (the ``mixed_bfloat16`` policy;
    ``dtype`` is then float32, the type of everything stored).
    """

    layers: tuple
    activations: tuple
    loss: str
    dtype: np.dtype
    bf16: bool = False
    act_ids: tuple = field(init=False)
    loss_id: int = field(init=False)
    n_weights: int = field(init=False)
    n_params: int = field(init=False)

    def __post_init__(self):
        layers = tuple(integer("layer size", n, 1) for n in self.layers)
        if len(layers) < 2:
            raise ValueError(f"layers needs at least an input and an output size, "
                             f"got {list(layers)}")
        acts = tuple(self.activations)
        if len(acts) != len(layers) - 1:
            raise ValueError(f"{len(layers) - 1} weight layers need {len(layers) - 1} "
                             f"activations, got {len(acts)}")
        ids = tuple(activation_id(a) for a in acts)
        lid = loss_id(self.loss)
        check_loss_output(self.loss, acts[-1])
        n_weights = sum(a * b for a, b in zip(layers[:-1], layers[1:]))
        dtype = _checks.float_dtype(self.dtype)
        if self.bf16 and dtype != np.float32:
            raise ValueError("bfloat16 products need float32 storage")
        for key, value in (("layers", layers), ("activations", acts), ("act_ids", ids),
                           ("loss_id", lid), ("dtype", dtype),
                           ("n_weights", n_weights),
                           ("n_params", n_weights + sum(layers[1:]))):
            object.__setattr__(self, key, value)

    @property
    def shapes(self) -> list:
        """(inputs, outputs) of each weight matrix."""
        return list(zip(self.layers[:-1], self.layers[1:]))

    @property
    def param_names(self) -> list:
        """``["W1", "b1", "W2", "b2", ...]``, the order of ``get_weights``."""
        return [f"{k}{i}" for i in range(1, len(self.layers)) for k in "Wb"]

    def split(self, flat):
        """The views ``([W1, ...], [b1, ...])`` of a flat parameter vector."""
        Ws, bs, at = [], [], 0
        for a, b in self.shapes:
            Ws.append(flat[at:at + a * b].reshape(a, b))
            at += a * b
        for b in self.layers[1:]:
            bs.append(flat[at:at + b])
            at += b
        return Ws, bs


def empty_aligned(shape, dtype, align: int = 64):
    """An uninitialised array whose data starts on an ``align``-byte boundary: by
    default a cache line (a large NumPy array starts 16 bytes into one)."""
    shape = tuple(shape) if np.iterable(shape) else (shape,)
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


class Parameters:
    """A flat parameter (or gradient) vector ``flat`` and its views ``W`` and ``b``."""

    __slots__ = ("flat", "W", "b")

    def __init__(self, net: Network, flat):
        self.flat = flat
        self.W, self.b = net.split(flat)

    def swap(self, other: Parameters) -> None:
        """Trade buffers with ``other``: each object keeps its identity."""
        self.flat, other.flat = other.flat, self.flat
        self.W, other.W = other.W, self.W
        self.b, other.b = other.b, self.b

    def pairs(self) -> list:
        """``[W1, b1, W2, b2, ...]``."""
        return [p for pair in zip(self.W, self.b) for p in pair]


class Workspace:
    """The buffers of a pass over batches of up to ``batch`` rows.

    ``a[i]`` is layer i's activation, ``z`` the last layer's logits (the losses
    need both), ``g[i]`` the gradient at layer i's pre-activation and
    ``row_loss`` the per-sample losses. ``x`` and ``y`` hold a gathered batch,
    made with ``gather``; inference and scoring pass row slices of the caller's
    arrays instead, and need no ``g`` below the output.
    """

    def __init__(self, net: Network, batch, backward, gather=False, backend=None):
        # On the host, each array starts a cache line: the compiled kernels' vector
        # loads and stores of its rows then never straddle two lines, and an input
        # gradient too large for the caches is written past them (gemm.c's
        # FM_STREAM_C_BYTES).
        alloc = empty_aligned if backend is None or not backend.device else backend.empty
        dt = net.dtype

        def new(m):
            return alloc((batch, m), dtype=dt)

        outs = net.layers[1:]
        self.x = new(net.layers[0]) if gather else None
        self.y = new(net.layers[-1]) if gather else None
        self.a = [new(m) for m in outs]
        self.z = new(outs[-1])
        self.g = [new(m) for m in outs] if backward else [None] * (len(outs) - 1) + [
            new(outs[-1])]
        self.row_loss = alloc(batch, dtype=dt)
        self.batch = batch
        self._views = {}

    @staticmethod
    def row_values(net: Network) -> int:
        """Values per batch row of a training workspace (``backward`` and ``gather``):
        x and y, each layer's a and g, z and the row's loss, as ``__init__`` makes them."""
        outs = net.layers[1:]
        return net.layers[0] + outs[-1] + 2 * sum(outs) + outs[-1] + 1

    def views(self, n) -> Workspace:
        """The buffers cut to ``n`` rows (a workspace view), made once per distinct ``n``."""
        if n == self.batch:
            return self
        v = self._views.get(n)
        if v is None:
            v = object.__new__(Workspace)

            def cut(b):
                return None if b is None else b[:n]

            v.x, v.y, v.z, v.row_loss = cut(self.x), cut(self.y), cut(self.z), cut(self.row_loss)
            v.a, v.g = [cut(b) for b in self.a], [cut(b) for b in self.g]
            v.batch, v._views = n, {}
            self._views[n] = v
        return v
