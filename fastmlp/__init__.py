"""fastmlp: train and study the classic MNIST multilayer perceptron, fast.

>>> import fastmlp
>>> model = fastmlp.MLP([784, 512, 10], ["relu", "softmax"], backend="cpu")  # doctest: +SKIP
"""

from . import callbacks, datasets, export, metrics, numerical, optim, preprocessing, recipes
from ._version import __version__
from .backends import BACKENDS, available_backends
from .gradcheck import gradcheck
from .model import MLP, load
from .threads import (
    flush_denormals,
    get_flush_denormals,
    get_num_threads,
    set_flush_denormals,
    set_num_threads,
    set_simd_level,
)
from .training import History

__all__ = [
    "BACKENDS",
    "callbacks",
    "export",
    "flush_denormals",
    "get_flush_denormals",
    "History",
    "MLP",
    "__version__",
    "available_backends",
    "datasets",
    "get_num_threads",
    "gradcheck",
    "load",
    "metrics",
    "numerical",
    "optim",
    "preprocessing",
    "recipes",
    "set_flush_denormals",
    "set_num_threads",
    "set_simd_level",
]


def __getattr__(name):
    # fastmlp.plot and fastmlp.sklearn need optional extras: imported on first use.
    if name in ("plot", "sklearn"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")
