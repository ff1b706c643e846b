"""Every kernel of the cpu backend against the numpy reference."""

import numpy as np
import pytest
from conftest import max_rel_err, tol

import fastmlp
from fastmlp.backends import get_backend
from fastmlp.functions import ACTIVATIONS, LOSS_OUTPUTS, LOSSES, activation_id, loss_id

REF = get_backend("numpy")
CPU = get_backend("cpu")
DTYPES = ["float32", "float64"]
SHAPES = [(1, 1, 1), (3, 5, 7), (13, 29, 11), (5, 4, 1), (67, 33, 130), (128, 784, 10)]


def rand(rng, shape, dtype, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,m", SHAPES)
def test_dense_products(n, k, m, dtype):
    rng = np.random.default_rng(n * 1000 + k * 10 + m)
    x, W, b, g = rand(rng, (n, k), dtype), rand(rng, (k, m), dtype), rand(rng, m, dtype), \
        rand(rng, (n, m), dtype)
    out = {}
    for be in (REF, CPU):
        z, gx = np.empty((n, m), dtype), np.empty((n, k), dtype)
        gW, gb = np.empty((k, m), dtype), np.empty(m, dtype)
        be.dense_forward(x, W, b, z)
        be.dense_backward_input(g, W, gx)
        be.dense_backward_weight(x, g, gW, gb)
        out[be.name] = (z, gx, gW, gb)
    for ref, got in zip(out["numpy"], out["cpu"]):
        assert max_rel_err(got, ref) < tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activations(act, dtype):
    rng = np.random.default_rng(activation_id(act))
    z = rand(rng, (17, 23), dtype, -6, 6)
    z[0, :3] = [0, 40, -40]  # saturation and the relu kink
    g = rand(rng, (17, 23), dtype)
    res = {}
    for be in (REF, CPU):
        a = np.empty_like(z)
        be.activation_forward(activation_id(act), z, a)
        gg = g.copy()
        be.activation_backward(activation_id(act), a, gg)
        res[be.name] = (a, gg)
    for ref, got in zip(res["numpy"], res["cpu"]):
        assert max_rel_err(got, ref) < tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_in_place(dtype):
    rng = np.random.default_rng(3)
    z = rand(rng, (9, 31), dtype, -3, 3)
    for act in ACTIVATIONS:
        a = np.empty_like(z)
        CPU.activation_forward(activation_id(act), z, a)
        inplace = z.copy()
        CPU.activation_forward(activation_id(act), inplace, inplace)
        np.testing.assert_array_equal(inplace, a)


# Softmax over a single output is constant, so it is left out of the one-output cases.
CASES = [(loss, out, m) for loss in LOSSES for out in LOSS_OUTPUTS[loss] for m in (1, 10)
         if not (out == "softmax" and m == 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,act,m", CASES)
def test_losses(loss, act, m, dtype):
    rng = np.random.default_rng(loss_id(loss) * 10 + activation_id(act))
    n = 37
    z = rand(rng, (n, m), dtype, -5, 5)
    a = np.empty_like(z)
    REF.activation_forward(activation_id(act), z, a)
    y = np.zeros((n, m), dtype)
    if m == 1:
        y[:, 0] = rng.integers(0, 2, n)
    else:
        y[np.arange(n), rng.integers(0, m, n)] = 1
    y[0] = 0.3  # soft targets take the general formulas
    res = {}
    for be in (REF, CPU):
        g, rows = np.empty_like(z), np.empty(n, dtype)
        total, hits = be.loss_grad(loss_id(loss), activation_id(act), z, a, y, g, rows)
        res[be.name] = (total, hits, g, rows)
    ref, got = res["numpy"], res["cpu"]
    assert abs(got[0] - ref[0]) <= tol(dtype) * abs(ref[0]) * 10
    assert got[1] == ref[1]
    assert max_rel_err(got[2], ref[2]) < tol(dtype)
    assert max_rel_err(got[3], ref[3]) < tol(dtype) * 10


def optimizer_calls(dtype, n):
    rng = np.random.default_rng(n)
    p, g = rand(rng, n, dtype), rand(rng, n, dtype)
    s1, s2 = rand(rng, n, dtype, 0, 1), rand(rng, n, dtype, 0, 1)
    yield "sgd_update", (p, g), (0.1, 0.01)
    yield "momentum_update", (p, g, s1), (0.1, 0.9, 0.01)
    yield "nesterov_update", (p, g, s1), (0.1, 0.9, 0.01)
    yield "rmsprop_update", (p, g, s1), (1e-3, 0.9, 1e-7, 0.0)
    yield "adam_update", (p, g, s1, s2), (1e-3, 0.9, 0.999, 1e-7, 1e-4, 1 / 0.1, 1 / 0.001)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 1001])
def test_optimizer_updates(dtype, n):
    for name, arrays, scalars in optimizer_calls(dtype, n):
        ref = [a.copy() for a in arrays]
        got = [a.copy() for a in arrays]
        getattr(REF, name)(*ref, *scalars)
        getattr(CPU, name)(*got, *scalars)
        for r, c in zip(ref, got):
            assert max_rel_err(c, r) < tol(dtype), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_identical_for_1_and_2_threads(dtype, threads):
    if not fastmlp.threads.openmp_enabled():
        pytest.skip("the cpu backend was built without OpenMP")
    rng = np.random.default_rng(0)
    x, W, b = rand(rng, (130, 97), dtype), rand(rng, (97, 51), dtype), rand(rng, 51, dtype)
    results = []
    for t in (1, 2):
        fastmlp.set_num_threads(t)
        z, gW, gb, gx = (np.empty((130, 51), dtype), np.empty((97, 51), dtype),
                         np.empty(51, dtype), np.empty((130, 97), dtype))
        CPU.dense_forward(x, W, b, z)
        CPU.dense_backward_weight(x, z, gW, gb)
        CPU.dense_backward_input(z, W, gx)
        results.append((z, gW, gb, gx))
    for a, b_ in zip(*results):
        np.testing.assert_array_equal(a, b_)
