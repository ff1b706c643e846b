"""The ``cpu`` backend: the compiled kernels of ``fastmlp._cpu`` (Cython with OpenMP)."""

from __future__ import annotations

try:
    from .._cpu import (  # noqa: F401
        activation_backward,
        activation_forward,
        adam_update,
        dense_backward_input,
        dense_backward_weight,
        dense_forward,
        loss_grad,
        momentum_update,
        nesterov_update,
        rmsprop_update,
        sgd_update,
        take_rows,
    )
except ImportError as exc:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "the compiled extension fastmlp._cpu is missing; reinstall fastmlp with "
        "'pip install .' from a source tree (needs a C compiler)"
    ) from exc

from ._host import device, empty, synchronize, to_device, to_host, zeros  # noqa: E402, F401

name = "cpu"
