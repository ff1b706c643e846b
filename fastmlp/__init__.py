"""fastmlp: train and study the classic MNIST multilayer perceptron, fast.

>>> import fastmlp
>>> model = fastmlp.MLP([784, 512, 10], ["relu", "softmax"], backend="cpu")  # doctest: +SKIP
"""

from . import datasets, metrics, numerical, optim, preprocessing, recipes
from ._version import __version__
from .backends import BACKENDS, available_backends
from .gradcheck import gradcheck
from .model import MLP, load
from .threads import get_num_threads, set_num_threads, set_simd_level
from .training import History

__all__ = [
    "BACKENDS",
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
    "set_num_threads",
    "set_simd_level",
]
