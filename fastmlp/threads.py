"""Threads and SIMD level of the compiled ``cpu`` backend (OpenMP, AVX2/AVX-512).

The matrix-product microkernels are chosen when the extension loads: the best
the CPU supports, capped by the environment variable ``FASTMLP_SIMD``
(``scalar``, ``avx2`` or ``avx512``) when it is set. ``set_simd_level`` changes
the cap at run time.

The thread count is OpenMP's, which belongs to each Python thread:
:func:`set_num_threads`, :func:`num_threads` and ``threadpoolctl`` set it for the
thread that calls them, and a new thread starts from ``OMP_NUM_THREADS`` (or
all the cores). A thread that trains sets its own count; two threads training
with different counts do not disturb each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ._util import choose, integer
from .functions import SIMD_LEVELS

try:
    from . import _cpu
except ImportError:  # pragma: no cover - depends on how the package was installed
    _cpu = None


def _ext():
    return _cpu


#: The most threads :func:`set_num_threads` takes.
MAX_THREADS = 1024


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1 to ``MAX_THREADS``) in the ``cpu`` backend's kernels from now
    on.

    The results do not depend on ``n``: every kernel gives bitwise-identical
    output for any thread count.
    """
    n = integer("threads", n, 1, MAX_THREADS)
    ext = _ext()
    if ext is not None:
        ext.set_num_threads(n)


def set_flush_denormals(on: bool) -> bool:
    """Flush subnormal floats (below about 1.2e-38, or 2.2e-308 in double) to zero
    in the ``cpu`` backend's kernels from now on (``True``), or keep them (``False``,
    the default). Returns whether the CPU can: True on x86, where the setting is
    the SSE control register's DAZ and FTZ, set in each kernel's threads and put
    back when it returns; False elsewhere, where nothing changes.

    Why: as a model grows confident, a few of its softmax outputs and gradients
    fall below the smallest normal float, and an x86 core takes a microcode assist
    for each operation on one. Over a long fit that slows every epoch (in the
    keras recipe, epochs 11 to 16 took 1.12x the time of a flushed run's).
    Flushing keeps the epochs even, like ``torch.set_flush_denormal(True)``.

    What changes: only values that would be subnormal, each read and written as
    zero, so a run's bits may differ from one without the setting, and the
    ``numpy`` backend (which never flushes) matches only to rounding. Every
    thread count and SIMD level still gives the same bits. The ``cuda`` backend
    and the numerical-derivative trainer ignore it. The setting is the
    process's, not a thread's.
    """
    if not isinstance(on, (bool, np.bool_)):
        raise TypeError(f"set_flush_denormals takes True or False, got {on!r}")
    ext = _ext()
    if ext is None:
        return False
    return bool(ext.set_flush_denormals(bool(on)))


def get_flush_denormals() -> bool:
    """Whether the ``cpu`` backend's kernels flush subnormal floats to zero
    (:func:`set_flush_denormals`)."""
    ext = _ext()
    return ext is not None and bool(ext.flush_denormals())


@contextmanager
def flush_denormals(on: bool) -> Iterator[None]:
    """Within it, subnormal floats are flushed (or kept) as :func:`set_flush_denormals`
    says; the setting is put back on leaving."""
    before = get_flush_denormals()
    set_flush_denormals(on)
    try:
        yield
    finally:
        set_flush_denormals(before)


@contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Within it, the ``cpu`` backend uses ``n`` threads (None: leave as it is); the
    count is put back on leaving."""
    if n is None:
        yield
        return
    before = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)


def get_num_threads() -> int:
    """Threads the ``cpu`` backend uses (1 when it was built without OpenMP).

    It is OpenMP's ``omp_get_max_threads()``: ``OMP_NUM_THREADS``, then what
    :func:`set_num_threads` or ``threadpoolctl.threadpool_limits`` (which sees
    fastmlp's OpenMP runtime) set last.
    """
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


def gemm_level() -> str:
    """Instruction set of the matrix-product kernels in use: ``scalar``, ``avx2`` or
    ``avx512``."""
    ext = _ext()
    return ext.gemm_level() if ext is not None else "unknown (cpu backend not built)"


def set_simd_level(level: str) -> str:
    """Use the kernels of ``level`` or, if the CPU lacks it, the best it has below;
    returns the level now in use.

    Raises
    ------
    ValueError
        ``level`` is not one of ``SIMD_LEVELS``.
    RuntimeError
        The compiled extension is not installed.
    """
    choose("SIMD level", level, SIMD_LEVELS, "levels")
    ext = _ext()
    if ext is None:
        raise RuntimeError("the cpu backend is not built, so it has no SIMD level to set")
    best = SIMD_LEVELS.index(ext.gemm_best_level())
    ext.set_gemm_level(SIMD_LEVELS[min(SIMD_LEVELS.index(level), best)])
    return ext.gemm_level()
