"""Backends: one set of kernels per engine, all with the same functions.

A backend is a module exposing ``take_rows`` (batch gathering),
``dense_forward`` (with the activation fused), ``dense_backward_input`` (with the
lower layer's activation derivative fused), ``dense_backward_weight``,
``activation_forward``, ``activation_backward``, ``loss_grad`` and the
``*_update`` optimizer kernels (in place, or into ``out``), all working on
preallocated float32 or float64 arrays. ``numpy`` is the reference; ``cpu`` is
the compiled engine (Cython with OpenMP, and C for the matrix products and
updates); ``cuda`` runs Numba CUDA kernels on an NVIDIA GPU, on device arrays.

Each backend also has ``device`` (whether its arrays live on a GPU), ``empty``,
``zeros``, ``to_device``, ``to_host`` and ``synchronize``; a backend with
``device`` set also has ``Trainer``, which ``fit`` runs instead of its host
loop of steps.
"""

from __future__ import annotations

import importlib

BACKENDS = ("numpy", "cpu", "cuda")

_MODULES = {"numpy": ".numpy_backend", "cpu": ".cpu_backend", "cuda": ".cuda_backend"}


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
