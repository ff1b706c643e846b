"""The table of kernel ids: activations, losses, optimizer rules and SIMD levels.

This is the Python side of ``src_c/fm_ids.h``; a test checks the two against
each other through the compiled module. The position of a name is its id in
every backend's kernels (the CUDA kernels take their constants from here).
"""

from __future__ import annotations

from ._util import choose

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu")
LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")
#: Optimizer update rules; each ``fastmlp.optim.Optimizer`` class names its own.
RULES = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
#: Instruction-set levels of the cpu backend's SIMD kernels, lowest first.
SIMD_LEVELS = ("scalar", "avx2", "avx512")
#: The order of the hyper-parameters an update kernel takes (``fm_hyper`` in
#: ``src_c/update.h``); a rule reads only those it uses.
HYPER_PARAMETERS = ("lr", "mu", "rho", "eps", "beta1", "beta2", "c1", "c2", "wd")
#: The gradient floor, by float type, on every backend: every rule reads a gradient
#: value d (with its L2 term) of |d| below it as zero, so that neither d * d, scaled
#: by a rule's 1 - rho or 1 - beta2 down to 2**-14, nor lr * d is subnormal, which
#: some CPUs compute a hundred times slower; the loss gradient's values below it are
#: zero too. It is 2**7 times the square root of the type's smallest normal number
#: (``FM_GRAD_FLOOR_S`` and ``_D`` in src_c/update.h).
GRAD_FLOOR = {"float32": 2.0 ** -56, "float64": 2.0 ** -504}
#: leaky_relu(z) = z for z > 0, else this times z (PyTorch's default slope).
LEAKY_RELU_SLOPE = 0.01

LINEAR, RELU, SIGMOID, TANH, SOFTMAX, LEAKY_RELU = range(len(ACTIVATIONS))
CROSS_ENTROPY, BINARY_CROSS_ENTROPY, MSE = range(len(LOSSES))
SGD, MOMENTUM, NESTEROV, RMSPROP, ADAM, ADAMW = range(len(RULES))

#: Output activations each loss accepts. Cross-entropies need outputs in (0, 1).
LOSS_OUTPUTS = {
    "cross_entropy": ("softmax", "sigmoid"),
    "binary_cross_entropy": ("sigmoid", "softmax"),
    "mse": ACTIVATIONS,
}


def activation_id(name) -> int:
    """The kernel id of an activation, or ValueError listing the valid names."""
    return ACTIVATIONS.index(choose("activation", name, ACTIVATIONS))


def loss_id(name) -> int:
    """The kernel id of a loss, or ValueError listing the valid names."""
    return LOSSES.index(choose("loss", name, LOSSES, "losses"))


def check_loss_output(loss: str, activation: str) -> None:
    """Raise ValueError when ``loss`` is undefined for the output ``activation``."""
    valid = LOSS_OUTPUTS[choose("loss", loss, LOSSES, "losses")]
    if activation not in valid:
        raise ValueError(
            f"loss {loss!r} needs an output activation in (0, 1): one of {', '.join(valid)}; "
            f"got {activation!r}"
        )
