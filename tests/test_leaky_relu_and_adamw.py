"""leaky_relu and AdamW: their definitions (PyTorch's), on every backend."""

import numpy as np
import pytest
from conftest import TESTED_BACKENDS, tol

import fastmlp
from fastmlp.backends import get_backend
from fastmlp.functions import LEAKY_RELU, LEAKY_RELU_SLOPE

HOST = ("numpy", "cpu")


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_leaky_relu_is_z_above_zero_and_a_hundredth_below(backend, dtype):
    be = get_backend(backend)
    z = np.array([[-3.0, -1e-3, 0.0, 1e-3, 2.5]], dtype)
    a = np.empty_like(z)
    be.activation_forward(LEAKY_RELU, z, a)
    np.testing.assert_array_equal(a, np.where(z > 0, z, z * np.asarray(0.01, dtype)))
    g = np.ones_like(z)
    be.activation_backward(LEAKY_RELU, a, g)
    # The derivative: 1 above zero, the slope at and below (as PyTorch's backward).
    np.testing.assert_array_equal(g[0], np.array([0.01, 0.01, 0.01, 1, 1], dtype))
    assert LEAKY_RELU_SLOPE == 0.01


def adamw_reference(p, grads, lr, b1, b2, eps, wd, n_decayed):
    """PyTorch's AdamW, step by step as its documentation writes it, in float64,
    with the decay on the first n_decayed entries only."""
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p[:n_decayed] *= 1 - lr * wd
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("backend", HOST)
def test_adamw_against_pytorchs_algorithm(backend):
    rng = np.random.default_rng(3)
    p0 = rng.uniform(-1, 1, 300)
    grads = [rng.uniform(-1, 1, 300) for _ in range(6)]
    opt = fastmlp.optim.AdamW(lr=0.01, weight_decay=0.1)
    assert (opt.beta1, opt.beta2, opt.eps) == (0.9, 0.999, 1e-8)  # PyTorch's defaults
    be, p = get_backend(backend), p0.copy()
    for g in grads:
        opt.update(be, p, g, n_decayed=200)
    ref = adamw_reference(p0, grads, 0.01, 0.9, 0.999, 1e-8, 0.1, 200)
    assert np.abs(p - ref).max() <= tol("float64", steps=6)
    # The decay touched the weights only: with weight_decay=0 the biases are the same.
    plain, q = fastmlp.optim.AdamW(lr=0.01, weight_decay=0.0), p0.copy()
    for g in grads:
        plain.update(be, q, g, n_decayed=200)
    assert np.abs(q[200:] - p[200:]).max() <= tol("float64", steps=6)
    assert np.abs(q[:200] - p[:200]).max() > 1e-4


@pytest.mark.parametrize("backend", TESTED_BACKENDS)
def test_leaky_relu_network_with_adamw_trains_on_every_backend(backend):
    rng = np.random.default_rng(0)
    x = rng.random((200, 8))
    y = (x[:, 0] + x[:, 1] > x[:, 2] + x[:, 3]).astype(int)
    model = fastmlp.MLP([8, 16, 2], ["leaky_relu", "softmax"], backend=backend, seed=1,
                        dtype="float64")
    ref = model.astype(backend="numpy")
    kw = dict(epochs=20, batch_size=20, optimizer="adamw", lr=0.02, verbose=0)
    h = model.fit(x, y, **kw)
    ref.fit(x, y, **kw)
    assert h.history["accuracy"][-1] > 0.9
    for a, b in zip(model.get_weights(), ref.get_weights()):
        assert np.abs(a - b).max() <= 1e-9


def test_same_as_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is the peers extra")
    rng = np.random.default_rng(5)
    x, y = rng.random((64, 6)), rng.integers(0, 3, 64)
    model = fastmlp.MLP([6, 9, 3], ["leaky_relu", "softmax"], backend="cpu", dtype="float64",
                        seed=2)
    W1, b1, W2, b2 = (torch.tensor(w, requires_grad=True) for w in model.get_weights())
    # fastmlp decays the weights only; PyTorch decays what it is given: the biases
    # go in a group of their own without decay.
    opt = torch.optim.AdamW([{"params": [W1, W2]}, {"params": [b1, b2], "weight_decay": 0.0}],
                            lr=0.01, weight_decay=0.05)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for start in range(0, 64, 16):
        opt.zero_grad()
        hidden = torch.nn.functional.leaky_relu(xt[start:start + 16] @ W1 + b1)
        loss = torch.nn.functional.cross_entropy(hidden @ W2 + b2, yt[start:start + 16])
        loss.backward()
        opt.step()
    model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0,
              optimizer=fastmlp.optim.AdamW(lr=0.01, weight_decay=0.05))
    for ours, theirs in zip(model.get_weights(), (W1, b1, W2, b2)):
        assert np.abs(ours - theirs.detach().numpy()).max() <= 1e-12
