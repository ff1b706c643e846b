"""Backends: one set of kernels per engine, all with the same functions.

``numpy`` is the readable reference; ``cpu`` is the compiled engine (C with
OpenMP, bound with Cython); ``cuda`` runs Numba CUDA kernels on an NVIDIA GPU,
on device arrays. ``fastmlp.step`` writes the training step once over these
functions, on preallocated float32 or float64 arrays (x is (n, k), W (k, m),
b (m,), z, a and g (n, m)):

* ``dense_forward(x, W, b, out, act=LINEAR, idx=None)``: ``out = act(x W + b)``;
* ``dense_backward_input(g, W, gx, act=LINEAR, a=None)``: ``gx = (g W^T) * act'``,
  with the lower layer's activation ``a``;
* ``dense_backward_weight(x, g, gW, gb, idx=None)``: ``gW = x^T g``, ``gb = sum(g)``;
* ``activation_forward(act, z, a)``, ``activation_backward(act, a, g)``;
* ``loss_grad(loss, act, z, a, y, g, row_loss, idx=None, acc=None)``: ``a = act(z)``,
  the per-row losses, ``g = d(mean loss)/dz``; returns ``(loss sum, hits)``;
* ``update(rule, p, g, s1, s2, hyper, l2, n_decayed, out=None, check=None)``: one
  optimizer step of ``rule`` (``fastmlp.functions.RULES``) with the state arrays
  ``s1``, ``s2`` and ``hyper`` in the order of ``functions.HYPER_PARAMETERS``; L2
  on ``p[:n_decayed]``; into ``out`` when given, leaving ``p`` as it was;
* ``take_rows(src, idx, out)``: ``out = src[idx]``.

The three dense kernels of the backends that support the ``mixed_bfloat16``
policy (``numpy`` and ``cpu``) also take ``bf16=False``: with ``bf16=True`` the
product's operands are rounded to bfloat16 first (see ``fastmlp.bf16``).

Ids (``act``, ``loss``, ``rule``) come from ``fastmlp.functions``. The optional
arguments serve a runner that queues steps on a device: ``idx`` reads the rows
``x[idx]`` and ``y[idx]`` (a GPU fuses the gather; a host backend copies), ``acc
= (array, s)`` adds the loss sum and hits to ``array[s]``, and ``check = (acc, s,
flag)`` makes the update skip a step whose loss sum ``acc[s, 0]`` is not finite,
or any step once ``flag[0]`` is set, setting it to ``s + 1``.

Each backend also has ``device`` (whether its arrays live on a GPU), ``empty``,
``zeros``, ``to_device`` and ``to_host``. A backend may offer ``make_runner`` to
train its own way (see ``fastmlp.training``).
"""

from __future__ import annotations

import importlib

BACKENDS = ("numpy", "cpu", "cuda")

_MODULES = {"numpy": ".numpy_backend", "cpu": ".cpu_backend", "cuda": ".cuda.backend"}


def get_backend(name):
    """The backend module called ``name``.

    Raises
    ------
    ValueError
        ``name`` is not a backend; the message lists the valid ones.
    RuntimeError
        The backend exists but cannot run here (for example, the compiled
        extension is missing); the message says why.
    """
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends are: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(_MODULES[name], __name__)
    except ImportError as exc:
        raise RuntimeError(f"backend {name!r} is not available: {exc}") from exc


def available_backends() -> dict:
    """``{name: None}`` for each usable backend, ``{name: reason}`` for the others."""
    status = {}
    for name in BACKENDS:
        try:
            get_backend(name)
            status[name] = None
        except RuntimeError as exc:
            status[name] = str(exc)
    return status


def default_backends() -> list:
    """The usable backends, but cuda only on a GPU (not in Numba's simulator, where
    a full-size network takes hours): what commands run when not told."""
    usable = [name for name, reason in available_backends().items() if reason is None]
    if "cuda" in usable and get_backend("cuda").SIMULATOR:
        usable.remove("cuda")
    return usable
