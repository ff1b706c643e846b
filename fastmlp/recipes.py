"""The seed recipes as ready configurations.

=========  ===============================  ==================================================
recipe     network                          training
=========  ===============================  ==================================================
keras      784-512 relu-10 softmax, xavier  RMSprop lr 1e-3, cross-entropy, batch 128, 5 epochs,
                                            inputs x/255 (Chollet, Deep Learning with Python)
dl4j       784-1000 relu-10 softmax,        SGD + Nesterov 0.9, lr 0.006, L2 1e-4, batch 128,
           xavier_normal, seed 123          15 epochs, negative log-likelihood, inputs x/255
lecture    784-30 sigmoid-10 sigmoid,       one sample per step, SGD lr 1e-2, 1 epoch, summed
           N(0,1)/sqrt(fan_in), b U(0,1)    binary cross-entropy on targets 0.01/0.99, inputs
                                            x/255*0.99+0.01
=========  ===============================  ==================================================

Examples
--------
>>> r = fastmlp.recipes.get("keras")                                   # doctest: +SKIP
>>> model = r.build()
>>> model.fit(r.inputs(x_train), r.targets(y_train), **r.fit_args())
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import optim, preprocessing
from ._util import choose
from .model import MLP


@dataclass(frozen=True)
class Recipe:
    """A network, its initialization and loss, and how to train it."""

    name: str
    layers: tuple
    activations: tuple
    loss: str
    init: str
    optimizer: str
    optimizer_args: dict = field(default_factory=dict)
    l2: float = 0.0
    batch_size: int = 128
    epochs: int = 5
    scaling: str = "unit"
    target_range: tuple = (0.0, 1.0)
    seed: int = 0
    dtype: str = "float32"
    source: str = ""
    published: str = ""

    def build(self, backend="cpu", dtype=None, seed=None, n_inputs=None) -> MLP:
        """The recipe's untrained model (``n_inputs`` overrides the 784 inputs)."""
        layers = list(self.layers)
        if n_inputs is not None:
            layers[0] = n_inputs
        model = MLP(layers, self.activations, loss=self.loss, init=self.init,
                    seed=self.seed if seed is None else seed, backend=backend,
                    dtype=self.dtype if dtype is None else dtype)
        model.meta["recipe"] = self.name
        model.meta["scaling"] = self.scaling
        return model

    def inputs(self, x, dtype=None):
        """Images scaled as the recipe does."""
        return preprocessing.scale(x, self.scaling, self.dtype if dtype is None else dtype)

    def targets(self, y, dtype=None):
        """Labels as the recipe's target rows (one-hot, or 0.01/0.99 for the lecture)."""
        off, on = self.target_range
        return preprocessing.one_hot(y, self.layers[-1], on=on, off=off,
                                     dtype=self.dtype if dtype is None else dtype)

    def make_optimizer(self) -> optim.Optimizer:
        return optim.get(self.optimizer, **self.optimizer_args)

    def fit_args(self, **overrides) -> dict:
        """Keyword arguments for ``MLP.fit``; ``overrides`` replace any of them."""
        args = {"epochs": self.epochs, "batch_size": self.batch_size,
                "optimizer": self.make_optimizer(), "l2": self.l2}
        args.update(overrides)
        return args


KERAS = Recipe(
    name="keras", layers=(784, 512, 10), activations=("relu", "softmax"),
    loss="cross_entropy", init="xavier", optimizer="rmsprop",
    optimizer_args={"lr": 1e-3, "rho": 0.9, "eps": 1e-7}, batch_size=128, epochs=5,
    scaling="unit", source="Chollet, Deep Learning with Python, 2.1",
    published="97.93% MNIST test accuracy (train 98.85%)",
)

DL4J = Recipe(
    name="dl4j", layers=(784, 1000, 10), activations=("relu", "softmax"),
    loss="cross_entropy", init="xavier_normal", optimizer="nesterov",
    optimizer_args={"lr": 0.006, "momentum": 0.9}, l2=1e-4, batch_size=128, epochs=15,
    scaling="unit", seed=123, source="Deeplearning4j MLPMnistSingleLayerExample",
    published="97.1% MNIST test accuracy",
)

LECTURE = Recipe(
    name="lecture", layers=(784, 30, 10), activations=("sigmoid", "sigmoid"),
    loss="binary_cross_entropy", init="lecture", optimizer="sgd",
    optimizer_args={"lr": 1e-2}, batch_size=1, epochs=1, scaling="lecture",
    target_range=(0.01, 0.99), dtype="float64",
    source="university lecture on training by numerical derivative",
    published="92.4% MNIST test accuracy",
)

RECIPES = {r.name: r for r in (KERAS, DL4J, LECTURE)}


def get(name) -> Recipe:
    """The recipe called ``name``; ValueError lists the valid names."""
    return RECIPES[choose("recipe", name, tuple(RECIPES))]
