"""Validation at the Python boundary: everything below trusts what passes here."""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = ("float32", "float64")
#: Keras's name of the policy: float32 weights, bfloat16 operands in the products.
MIXED_BFLOAT16 = "mixed_bfloat16"
POLICIES = FLOAT_DTYPES + (MIXED_BFLOAT16,)


def policy(dtype) -> tuple:
    """``(name, storage dtype, bf16 products)`` of a dtype or policy name."""
    if isinstance(dtype, str) and dtype == MIXED_BFLOAT16:
        return MIXED_BFLOAT16, np.dtype(np.float32), True
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(POLICIES)}, got {dtype!r}")
    return dt.name, dt, False


def float_dtype(dtype) -> np.dtype:
    """The array dtype of a dtype or policy name (float32 for mixed_bfloat16)."""
    return policy(dtype)[1]


def all_finite(x: np.ndarray) -> bool:
    """Whether a float array holds no NaN or Inf: from its min and max, which a NaN
    or an infinity reaches, so that no temporary as large as x is made."""
    return bool(np.isfinite(x.min()) and np.isfinite(x.max()))


def features(x, n_features: int, dtype, name="x") -> np.ndarray:
    """x as a C-contiguous (N, n_features) array of ``dtype``; (N, 28, 28) is flattened."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name} must be 2-D (samples, features) or 3-D (samples, rows, "
                         f"columns), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    got = int(np.prod(x.shape[1:]))
    if got != n_features:
        raise ValueError(f"{name} has {got} features per sample (shape {x.shape}), "
                         f"the model expects {n_features}")
    x = np.ascontiguousarray(x.reshape(x.shape[0], got), dtype=dtype)
    if not all_finite(x):
        bad = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise ValueError(f"{name} contains NaN or Inf (first in sample {bad})")
    return x


def targets(y, n_samples: int, n_outputs: int, dtype, name="y") -> np.ndarray:
    """Targets as a C-contiguous (N, n_outputs) array.

    ``y`` is either integer labels (N,) in [0, n_outputs) (in {0, 1} for one
    output), turned into one-hot rows, or already a (N, n_outputs) target matrix.
    """
    y = np.asarray(y)
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise TypeError(f"{name} must hold numbers, got dtype {y.dtype}")
    if y.shape[:1] != (n_samples,):
        raise ValueError(f"x has {n_samples} samples but {name} has "
                         f"{y.shape[0] if y.ndim else 'no'} (shape {y.shape})")
    if y.ndim == 2 and not (n_outputs > 1 and y.shape[1] == 1):
        if y.shape[1] != n_outputs:
            raise ValueError(f"{name} has {y.shape[1]} columns, the model has {n_outputs} outputs")
        y = np.ascontiguousarray(y, dtype=dtype)
        if not all_finite(y):
            raise ValueError(f"{name} contains NaN or Inf")
        return y
    labels = labels_1d(y.reshape(n_samples), max(n_outputs, 2), name)
    if n_outputs == 1:
        return np.ascontiguousarray(labels.reshape(-1, 1), dtype=dtype)
    out = np.zeros((n_samples, n_outputs), dtype=dtype)
    out[np.arange(n_samples), labels] = 1
    return out


def labels_1d(y, n_classes: int, name="y") -> np.ndarray:
    """Integer class labels in [0, n_classes) as int64, or a ValueError naming the problem."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D labels, got shape {y.shape}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating):
            raise TypeError(f"{name} must hold integer labels, got dtype {y.dtype}")
        finite = np.isfinite(y)
        if not finite.all() or (y != np.round(y)).any():
            i = int(np.argmax(~finite | (y != np.round(np.where(finite, y, 0)))))
            raise ValueError(f"{name} must hold integer labels; sample {i} has {y[i].item()!r}")
    if y.size:
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= n_classes:
            i = int(np.argmax((y < 0) | (y >= n_classes)))
            raise ValueError(f"{name} has label {y[i].item()!r} at sample {i}; labels must be in "
                             f"[0, {n_classes - 1}]")
    return y.astype(np.int64)
