"""fastmlp.set_flush_denormals: subnormal floats flushed to zero in the cpu kernels.

Each kernel is given operands or results below the smallest normal float and must
give zero where the setting is on and the subnormal value where it is off; the
compiled training step must read a subnormal input as zero (the same bits as a
zero input); the setting must leave the calling thread's own arithmetic (NumPy's)
as it was, and keep every thread count and SIMD level bitwise equal.
"""

import platform

import numpy as np
import pytest

import fastmlp
from fastmlp import _cpu
from fastmlp.functions import HYPER_PARAMETERS, RULES

TINY = np.float32(1e-39)  # subnormal in float32
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
needs_x86 = pytest.mark.skipif(not X86, reason="the setting is x86's DAZ and FTZ")


@pytest.fixture
def flush():
    """Put the setting back after a test changes it."""
    before = fastmlp.get_flush_denormals()
    yield
    fastmlp.set_flush_denormals(before)


def test_off_by_default_and_set_and_put_back(flush):
    assert fastmlp.get_flush_denormals() is False
    assert fastmlp.set_flush_denormals(True) is X86
    assert fastmlp.get_flush_denormals() is X86
    with fastmlp.flush_denormals(False):
        assert fastmlp.get_flush_denormals() is False
    assert fastmlp.get_flush_denormals() is X86
    fastmlp.set_flush_denormals(False)
    assert fastmlp.get_flush_denormals() is False


@pytest.mark.parametrize("bad", [1, "yes", None, 0.0])
def test_takes_only_a_bool(bad, flush):
    with pytest.raises(TypeError, match="True or False"):
        fastmlp.set_flush_denormals(bad)
    assert fastmlp.get_flush_denormals() is False


def _forward(x):
    k = x.shape[1]
    out = np.empty((x.shape[0], k), np.float32)
    _cpu.dense_forward(x, np.eye(k, dtype=np.float32), np.zeros(k, np.float32), out, 0,
                       False)
    return out


@needs_x86
@pytest.mark.parametrize("threads_n", [1, 2])
def test_products_read_and_write_subnormals_as_zero(level, threads_n, flush, threads):
    fastmlp.set_num_threads(threads_n)
    x = np.full((64, 48), TINY, np.float32)
    assert np.all(_forward(x) == TINY)
    fastmlp.set_flush_denormals(True)
    assert np.all(_forward(x) == 0)
    # The weight and bias gradients: x^T g and the column sums of g.
    g = np.full((64, 5), TINY, np.float32)
    gW, gb = np.empty((48, 5), np.float32), np.empty(5, np.float32)
    _cpu.dense_backward_weight(x, g, gW, gb)
    assert not gW.any() and not gb.any()
    fastmlp.set_flush_denormals(False)
    _cpu.dense_backward_weight(np.ones_like(x), g, gW, gb)
    assert np.all(gW == np.float32(64) * TINY) and np.all(gb == gW[0])


@needs_x86
def test_the_calling_threads_own_arithmetic_is_left_as_it_was(flush):
    fastmlp.set_flush_denormals(True)
    _forward(np.full((8, 8), TINY, np.float32))
    assert np.float32(1e-39) * np.float32(1) == TINY
    assert np.nextafter(np.float32(0), np.float32(1)) > 0


@needs_x86
def test_softmax_rows_and_the_update_flush(flush):
    # exp(-95) / 2 is about 2.8e-42, a subnormal float.
    z = np.array([[0.0, -95.0, 0.0]], np.float32)
    a = np.empty_like(z)
    probs = {}
    for on in (False, True):
        fastmlp.set_flush_denormals(on)
        _cpu.activation_forward(fastmlp.functions.ACTIVATIONS.index("softmax"), z, a)
        probs[on] = a[0, 1]
    assert probs[False] > 0 and probs[True] == 0
    # sgd: p - lr * g, a subnormal result from normal operands (g above the
    # update's gradient floor, fastmlp.functions.GRAD_FLOOR).
    hyper = np.zeros(len(HYPER_PARAMETERS))
    hyper[HYPER_PARAMETERS.index("lr")] = 1e-21
    new = {}
    for on in (False, True):
        fastmlp.set_flush_denormals(on)
        p = np.full(4096, np.float32(2e-38), np.float32)
        g = np.full(4096, np.float32(1.5e-17), np.float32)
        _cpu.update(RULES.index("sgd"), p, g, None, None, hyper, 0.0, 0)
        new[on] = p
    assert np.all(new[False] > 0) and np.all(new[False] < np.finfo(np.float32).tiny)
    assert not new[True].any()


def _fit(x, y, threads_n=2):
    fastmlp.set_num_threads(threads_n)
    m = fastmlp.MLP([x.shape[1], 16, 3], ["relu", "softmax"], backend="cpu", seed=5)
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return [w.copy() for w in m.get_weights()]


def _subnormal_data():
    """Inputs all subnormal, and the same as zeros: with the biases starting at zero,
    a zero input leaves every hidden unit at relu(0) = 0, with a zero derivative,
    and the hidden biases where they were; a subnormal one, read as it is, makes
    some units' sums positive (subnormal), their derivative 1, and moves their
    biases by normal amounts."""
    rng = np.random.default_rng(0)
    x = np.full((96, 12), TINY, np.float32)
    return x, rng.integers(0, 3, 96), np.zeros_like(x)


@needs_x86
def test_the_compiled_step_reads_a_subnormal_input_as_zero(flush, threads):
    x, y, zeroed = _subnormal_data()
    kept = _fit(x, y)
    fastmlp.set_flush_denormals(True)
    flushed, of_zeros = _fit(x, y), _fit(zeroed, y)
    for a, b in zip(flushed, of_zeros):
        assert np.array_equal(a, b)
    assert not flushed[1].any() and kept[1].any()  # the hidden biases


@needs_x86
def test_flushed_runs_are_the_same_for_every_level_and_thread_count(flush, threads):
    rng = np.random.default_rng(1)
    x, y = rng.random((96, 12), dtype=np.float32), rng.integers(0, 3, 96)
    x[::3, 3:7] = TINY
    fastmlp.set_flush_denormals(True)
    levels = fastmlp.threads.SIMD_LEVELS
    present = levels[: levels.index(_cpu.gemm_best_level()) + 1]
    before, runs = _cpu.gemm_level(), []
    try:
        for lv in present:
            _cpu.set_gemm_level(lv)
            for n in (1, 2):
                runs.append(_fit(x, y, n))
    finally:
        _cpu.set_gemm_level(before)
    assert len(runs) == 2 * len(present)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert np.array_equal(a, b)
