"""Threads of the compiled ``cpu`` backend (OpenMP)."""

from __future__ import annotations

from . import _checks


def _ext():
    try:
        from . import _cpu
    except ImportError:
        return None
    return _cpu


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the ``cpu`` backend's kernels from now on.

    The results do not depend on ``n``: every kernel gives bitwise-identical
    output for any thread count.
    """
    n = _checks.integer("threads", n, 1)
    ext = _ext()
    if ext is not None:
        ext.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the ``cpu`` backend uses (1 when it was built without OpenMP)."""
    ext = _ext()
    return ext.get_num_threads() if ext is not None else 1


def openmp_enabled() -> bool:
    """Was the ``cpu`` backend compiled with OpenMP?"""
    ext = _ext()
    return bool(ext is not None and ext.have_openmp())


def simd_level() -> str:
    """Best SIMD instruction set of this CPU (``avx512``, ``avx2``, ..., ``scalar``)."""
    ext = _ext()
    return ext.simd_level() if ext is not None else "unknown (cpu backend not built)"
