"""What this machine is: CPU, cores, SIMD level, threads, versions and GPU."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from .. import threads
from .._version import __version__
from ..backends import get_backend


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """The CPU side: names, cores, SIMD levels, OpenMP threads and versions (and
    PyTorch's, when it is installed: read from its metadata, since importing it
    would load its own OpenMP runtime into this process)."""
    info = {"fastmlp": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(),
            "machine": platform.machine(), "cpu": cpu_name(), "cores": cores(),
            "cpu_simd": threads.simd_level(), "gemm_kernels": threads.gemm_level(),
            "openmp": threads.openmp_enabled(), "threads": threads.get_num_threads(),
            "cpu_count": os.cpu_count()}
    try:
        info["torch"] = version("torch")
    except PackageNotFoundError:
        pass
    return info


def gpu() -> dict:
    """The GPU's facts (see ``fastmlp.backends.cuda.backend.device_info``), or {} when
    the cuda backend does not load here."""
    try:
        return get_backend("cuda").device_info()
    except RuntimeError:
        return {}
