"""Pinned results: the same bits at every SIMD level, any thread count, on every machine.

The data and the starting weights are made from integer formulas, exact in
float32, so that nothing but fastmlp's own arithmetic decides the bits: no
random generator and no platform's sin or exp. The first pinned run uses only
operations IEEE 754 rounds exactly (+, *, fused multiply-add, /, sqrt): relu
and leaky_relu, a linear output under mean squared error, and Adam. The second
has a softmax output under cross-entropy (the keras recipe's pairing): float32's
softmax takes its exponentials from fastmlp's own function (fm_exp_to_float), and
the logarithm enters only the loss's value, not the weights. tanh, sigmoid and
float64's exp come from the C library, whose last bits may differ between
versions, so the networks that use them are compared across levels and thread
counts on this machine instead of against a pinned value.
"""

import hashlib

import numpy as np
import pytest

import fastmlp

#: sha256 of the float32 weights after the run below, on any CPU at any SIMD level
#: and thread count (recorded on an AVX-512 machine, where the portable, AVX2 and
#: AVX-512 kernels all give it).
FINGERPRINT = "86deed40364a7eb2044948bc78e71c615a99d8ece1af8a86f0a10d454c14f236"

#: The same for the run with a softmax output under cross-entropy (SOFTMAX_RUN).
FINGERPRINT_SOFTMAX = "30496d80d3c452865e199e9ca19fe0af6c24e24f1faaf3a73f6d102fdf92aa5b"
SOFTMAX_RUN = {"activations": ("relu", "leaky_relu", "softmax"), "loss": "cross_entropy"}

LAYERS = [256, 128, 64, 10]  # products large enough to be split between two threads


def _grid(rows, cols, a, b, scale):
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return ((i * a + j * b) % 1000 - 500).astype(np.float64) / scale


def fixed_run(threads, activations=("relu", "leaky_relu", "linear"), loss="mse",
              dtype="float32"):
    fastmlp.set_num_threads(threads)
    model = fastmlp.MLP(LAYERS, list(activations), loss=loss, backend="cpu", dtype=dtype)
    model.set_weights([_grid(a, b, 7919 + k, 104729 + k, 500.0 * np.sqrt(a)) if w == "W"
                       else _grid(1, b, 31 + k, 17, 5000.0)[0]
                       for k, (a, b) in enumerate(zip(LAYERS[:-1], LAYERS[1:]))
                       for w in "Wb"])
    x = (_grid(512, LAYERS[0], 613, 1009, 1.0) + 500) / 1000  # in [0, 1)
    y = np.arange(512) * 7 % LAYERS[-1]
    model.fit(x, y, epochs=2, batch_size=64, optimizer="adam", l2=1e-4, shuffle=False,
              verbose=0)
    digest = hashlib.sha256()
    for w in model.get_weights():
        assert w.dtype == np.float32
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("n_threads", [1, 2])
def test_weights_fingerprint_at_every_level_and_thread_count(level, n_threads, threads):
    assert fixed_run(n_threads) == FINGERPRINT


@pytest.mark.parametrize("n_threads", [1, 2])
def test_softmax_fingerprint_at_every_level_and_thread_count(level, n_threads, threads):
    assert fixed_run(n_threads, **SOFTMAX_RUN) == FINGERPRINT_SOFTMAX


def test_library_functions_give_the_same_bits_at_every_level_and_thread_count(threads):
    # tanh and sigmoid fused into the products, softmax and cross-entropy in the rows.
    from fastmlp import _cpu

    before = _cpu.gemm_level()
    runs = {}
    try:
        for name in fastmlp.threads.SIMD_LEVELS[:fastmlp.threads.SIMD_LEVELS.index(
                _cpu.gemm_best_level()) + 1]:
            _cpu.set_gemm_level(name)
            for n in (1, 2):
                runs[name, n] = fixed_run(n, ("tanh", "sigmoid", "softmax"), "cross_entropy")
    finally:
        _cpu.set_gemm_level(before)
    assert len(set(runs.values())) == 1, runs


def test_numerical_trainer_identical_at_every_level():
    # The lecture's numerical-derivative trainer: its kernels, too, fuse the same
    # products at every level (float64; the AVX2 path serves AVX-512 CPUs as well).
    from fastmlp import _cpu

    recipe = fastmlp.recipes.get("lecture")
    x = (_grid(40, 784, 613, 1009, 1.0) + 500) / 1000 * 0.99 + 0.01
    t = recipe.targets(np.arange(40) % 10, "float64")
    before = _cpu.gemm_level()
    results = []
    try:
        for name in fastmlp.threads.SIMD_LEVELS[:fastmlp.threads.SIMD_LEVELS.index(
                _cpu.gemm_best_level()) + 1]:
            _cpu.set_gemm_level(name)
            model = recipe.build()
            model.fit(x, t, **recipe.fit_args(trainer="numerical"), verbose=0)
            results.append(model.get_weights())
    finally:
        _cpu.set_gemm_level(before)
    if len(results) < 2:
        pytest.skip("this CPU has only the portable kernels")
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
