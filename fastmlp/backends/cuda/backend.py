"""The ``cuda`` backend as ``fastmlp.backends.get_backend("cuda")`` loads it: the
functions of :mod:`.ops` and the runner of :mod:`.trainer`, once a GPU (or the
simulator) is there. Importing it raises ``ImportError`` with the reason when
numba-cuda, the driver or a GPU is missing."""

from __future__ import annotations

from .ops import cuda


def _probe():
    try:
        ok = cuda.is_available()
    except Exception as exc:  # noqa: BLE001 - any driver failure means "no GPU"
        return f"no usable CUDA driver ({exc})"
    if not ok:
        return ("no CUDA GPU or driver found (numba-cuda is installed; "
                "NUMBA_ENABLE_CUDASIM=1 runs the kernels in the CPU simulator)")
    return None


_reason = _probe()
if _reason:
    raise ImportError(_reason)

from .ops import (  # noqa: E402, F401
    SIMULATOR,
    activation_backward,
    activation_forward,
    dense_backward_input,
    dense_backward_weight,
    dense_forward,
    device,
    device_info,
    empty,
    is_device_array,
    launches_per_step,
    loss_grad,
    name,
    take_rows,
    to_device,
    to_host,
    update,
    zeros,
)
from .trainer import Trainer, make_runner  # noqa: E402, F401
