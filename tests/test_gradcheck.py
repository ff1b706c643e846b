"""Backprop of every backend against the numerical derivative."""

import numpy as np
import pytest
from conftest import TESTED_BACKENDS

import fastmlp
from fastmlp.cli import gradcheck_networks

NETWORKS = gradcheck_networks(["keras", "dl4j", "lecture"], pairs=True)


@pytest.mark.parametrize("backend", TESTED_BACKENDS)
@pytest.mark.parametrize("label,cfg", NETWORKS, ids=[n[0] for n in NETWORKS])
def test_backprop_matches_numerical_derivative(backend, label, cfg):
    rng = np.random.default_rng(1)
    model = fastmlp.MLP(backend=backend, dtype="float64", **cfg)
    x = rng.random((6, cfg["layers"][0]))
    y = rng.integers(0, cfg["layers"][-1], 6)
    errors = fastmlp.gradcheck(model, x, y, max_entries=12)
    assert set(errors) == set(model.param_names)
    assert max(errors.values()) < 1e-6, errors


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    # A backend whose weight gradient is off by 1% must fail the check.
    model = fastmlp.MLP([6, 5, 3], ["tanh", "softmax"], backend="numpy", dtype="float64")
    backend = fastmlp.backends.get_backend(model.backend)
    real = backend.dense_backward_weight

    def skewed(x, g, gW, gb, idx=None):
        real(x, g, gW, gb, idx)
        gW *= 1.01

    monkeypatch.setattr(backend, "dense_backward_weight", skewed)
    x, y = np.random.default_rng(0).random((4, 6)), np.array([0, 1, 2, 0])
    errors = fastmlp.gradcheck(model, x, y)
    assert errors["W1"] > 1e-3 and errors["W2"] > 1e-3
    assert errors["b1"] < 1e-6


def test_gradcheck_works_from_a_float32_model():
    model = fastmlp.MLP([5, 4, 2], ["sigmoid", "sigmoid"], loss="binary_cross_entropy",
                        backend="cpu", dtype="float32")
    x, y = np.random.default_rng(0).random((3, 5)), np.array([0, 1, 1])
    errors = fastmlp.gradcheck(model, x, y)
    assert max(errors.values()) < 1e-6
    assert model.dtype == np.float32  # the check ran on a float64 copy


def test_gradcheck_rejects_bad_arguments():
    model = fastmlp.MLP([3, 2], ["softmax"], backend="numpy")
    x, y = np.ones((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match="eps"):
        fastmlp.gradcheck(model, x, y, eps=0)
    with pytest.raises(TypeError, match="MLP"):
        fastmlp.gradcheck("model", x, y)
    with pytest.raises(ValueError, match="features"):
        fastmlp.gradcheck(model, np.ones((2, 4)), y)
