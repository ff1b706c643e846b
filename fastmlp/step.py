"""The training step, written once for every backend.

A step is a sequence of a backend's kernels (see ``fastmlp.backends`` for their
contract): the forward products, the loss with its gradient, the backward
products, and the optimizer's update. Every runner calls :func:`train_step`
(the host backprop runner and the CUDA trainer), inference calls
:func:`forward` and :func:`output`, and the profiler records the kernels of the
same call with :class:`Recorder`. The shapes, layer by layer, for a batch of n
rows: x is (n, k0), ``W[i]`` is (k_i, k_{i+1}), ``a[i]``, ``g[i]`` are
(n, k_{i+1}).
"""

from __future__ import annotations

import math

from .functions import LINEAR


def _products(net) -> dict:
    """The dense kernels' extra argument for a network with bfloat16 products (a
    backend without them is never handed one: the model refuses it)."""
    return {"bf16": True} if net.bf16 else {}


def forward(be, net, params, x, ws, idx=None):
    """Hidden activations into ``ws.a[i]`` and the last layer's logits into ``ws.z``.

    With ``idx``, the inputs are the rows ``x[idx]`` (a backend may fuse the gather).
    """
    last = len(net.act_ids) - 1
    inp, kw = x, _products(net)
    for i, act in enumerate(net.act_ids):
        # Hidden layers write act(x W + b) in one fused call; the last keeps its logits.
        out, fused = (ws.a[i], act) if i < last else (ws.z, LINEAR)
        be.dense_forward(inp, params.W[i], params.b[i], out, fused, idx if i == 0 else None,
                         **kw)
        inp = ws.a[i]


def output(be, net, ws):
    """The last layer's activation of its logits, into ``ws.a[-1]``."""
    be.activation_forward(net.act_ids[-1], ws.z, ws.a[-1])


def loss_grad(be, net, ws, y, idx=None, acc=None):
    """The output activation, the loss of each row and the gradient at the logits;
    returns the backend's (loss sum, hits) (None from a device that accumulates)."""
    return be.loss_grad(net.loss_id, net.act_ids[-1], ws.z, ws.a[-1], y, ws.g[-1],
                        ws.row_loss, idx, acc)


def forward_loss(be, net, params, x, y, ws, idx=None, acc=None):
    """:func:`forward`, then :func:`loss_grad`: the loss of a batch (and its gradient at
    the logits), as scoring, gradcheck and every step need it."""
    forward(be, net, params, x, ws, idx)
    return loss_grad(be, net, ws, y, idx, acc)


def backward(be, net, params, grads, x, ws, idx=None):
    """Gradients of the mean loss into ``grads``, from ``ws.g[-1]`` down."""
    kw = _products(net)
    for i in range(len(net.act_ids) - 1, -1, -1):
        inp = x if i == 0 else ws.a[i - 1]
        be.dense_backward_weight(inp, ws.g[i], grads.W[i], grads.b[i], idx if i == 0 else None,
                                 **kw)
        if i > 0:
            be.dense_backward_input(ws.g[i], params.W[i], ws.g[i - 1], net.act_ids[i - 1],
                                    ws.a[i - 1], **kw)


def train_step(be, net, params, grads, x, y, ws, opt, l2, out, state=None, idx=None,
               acc=None, check=None):
    """One step of mini-batch backprop: forward, loss, backward, and the update of
    ``params`` into ``out`` (another :class:`~fastmlp.network.Parameters`), leaving
    ``params`` as it was; returns what :func:`loss_grad` returns.

    ``idx`` gathers the batch's rows of ``x`` and ``y``; ``acc = (array, s)`` adds
    the loss sum and hits to ``array[s]``; ``check = (acc, s, flag)`` makes the
    update skip, and flag, a step whose loss is not finite (see
    ``fastmlp.backends``). ``state`` replaces the optimizer's own state arrays.
    """
    result = forward_loss(be, net, params, x, y, ws, idx, acc)
    backward(be, net, params, grads, x, ws, idx)
    if check is None and result is not None and not math.isfinite(result[0]):
        return result
    opt.update(be, params.flat, grads.flat, l2, net.n_weights, out=out.flat, check=check,
               state=state)
    return result


#: The kernels of a step, the names :class:`Recorder` records.
KERNELS = ("take_rows", "dense_forward", "dense_backward_input", "dense_backward_weight",
           "activation_forward", "activation_backward", "loss_grad", "update")


class Recorder:
    """A backend that runs each kernel call and records it as ``(name, args, kwargs)``
    in ``calls``: the profiler runs one real step through it and then times each
    recorded call alone."""

    def __init__(self, backend):
        self._backend = backend
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(self._backend, name)
        if name not in KERNELS:
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return attr(*args, **kwargs)

        return call
