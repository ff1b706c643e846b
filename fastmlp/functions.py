"""Names of the activations, losses and optimizers, and the checks on them.

The order of ``ACTIVATIONS`` and ``LOSSES`` gives the integer ids that the
compiled kernels use.
"""

from __future__ import annotations

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")

#: Output activations each loss accepts. Cross-entropies need outputs in (0, 1).
LOSS_OUTPUTS = {
    "cross_entropy": ("softmax", "sigmoid"),
    "binary_cross_entropy": ("sigmoid", "softmax"),
    "mse": ACTIVATIONS,
}


def _choose(kind: str, name, valid, plural=None) -> str:
    if not isinstance(name, str) or name not in valid:
        raise ValueError(f"unknown {kind} {name!r}; valid {plural or kind + 's'} are: "
                         f"{', '.join(valid)}")
    return name


def activation_id(name) -> int:
    """The kernel id of an activation, or ValueError listing the valid names."""
    return ACTIVATIONS.index(_choose("activation", name, ACTIVATIONS))


def loss_id(name) -> int:
    """The kernel id of a loss, or ValueError listing the valid names."""
    return LOSSES.index(_choose("loss", name, LOSSES, "losses"))


def check_loss_output(loss: str, activation: str) -> None:
    """Raise ValueError when ``loss`` is undefined for the output ``activation``."""
    valid = LOSS_OUTPUTS[_choose("loss", loss, LOSSES, "losses")]
    if activation not in valid:
        raise ValueError(
            f"loss {loss!r} needs an output activation in (0, 1): one of {', '.join(valid)}; "
            f"got {activation!r}"
        )
