"""The packed matrix-product kernels and their fused epilogues, at every SIMD level
this CPU supports, against the NumPy reference; bitwise identity across threads."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import max_rel_err, relu_outputs, tol, update_cases

import fastmlp
from fastmlp import _cpu, threads
from fastmlp.backends import get_backend
from fastmlp.functions import ACTIVATIONS, activation_id
from fastmlp.network import empty_aligned

REF = get_backend("numpy")
CPU = get_backend("cpu")
DTYPES = ["float32", "float64"]
BEST = threads.SIMD_LEVELS.index(_cpu.gemm_best_level())

# (M, N, K): single elements, edge tiles in both directions, K over several cache
# blocks (of at most 256), and the keras layer's shapes.
SHAPES = [(1, 1, 1), (7, 13, 5), (6, 16, 8), (37, 10, 512), (200, 33, 1000),
          (3, 600, 1100), (128, 512, 784), (1000, 10, 300), (300, 3, 1000)]


def operands(rng, M, N, K, dtype, ta, tb):
    a = rng.uniform(-1, 1, (K, M) if ta else (M, K)).astype(dtype)
    b = rng.uniform(-1, 1, (N, K) if tb else (K, N)).astype(dtype)
    return (a.T if ta else a), (b.T if tb else b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_against_numpy(level, M, N, K, ta, tb, dtype):
    rng = np.random.default_rng(M * 7 + N * 3 + K)
    a, b = operands(rng, M, N, K, dtype, ta, tb)
    out = np.full((M, N), np.nan, dtype)
    _cpu.matmul(a, b, out)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    assert max_rel_err(out, ref) < tol(dtype, K)


def test_matmul_rejects_strided_operands():
    a = np.ones((8, 8), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="row-major"):
        _cpu.matmul(a.T, np.ones((3, 8), np.float32).T, np.empty((4, 3), np.float32))


def test_matmul_rejects_an_output_over_its_operands():
    # A is read where it lies while C is written: a C over A or B is refused.
    buf = np.arange(200.0)
    out = buf[:64].reshape(8, 8)
    ones = np.ones((8, 8))
    rows = buf.reshape(25, 8)
    for a, b in ((buf[32:96].reshape(8, 8), ones), (buf[40:104].reshape(8, 8).T, ones),
                 (ones, buf[63:127].reshape(8, 8)), (rows[10:2:-1], ones)):
        with pytest.raises(ValueError, match="share memory"):
            _cpu.matmul(a, b, out)
    # Next to each other (rows in reverse too), and operands sharing memory with each
    # other: computed.
    a = buf[64:128].reshape(8, 8)
    _cpu.matmul(a, a, out)
    np.testing.assert_array_equal(out, a @ a)
    _cpu.matmul(rows[15:7:-1], a, out)
    np.testing.assert_array_equal(out, rows[15:7:-1] @ a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n,k,m", [(5, 3, 7), (130, 97, 51), (128, 784, 512)])
def test_fused_forward(level, act, n, k, m, dtype):
    rng = np.random.default_rng(n + k + m)
    x = rng.uniform(-1, 1, (n, k)).astype(dtype)
    W = rng.uniform(-0.2, 0.2, (k, m)).astype(dtype)
    b = rng.uniform(-1, 1, m).astype(dtype)
    ref, got = np.empty((n, m), dtype), np.empty((n, m), dtype)
    REF.dense_forward(x, W, b, ref, activation_id(act))
    CPU.dense_forward(x, W, b, got, activation_id(act))
    assert max_rel_err(got, ref) < tol(dtype, k + m)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("n,k,m", [(5, 3, 7), (130, 97, 51), (128, 512, 10), (300, 517, 10)])
def test_fused_backward_input(level, act, n, k, m, dtype):
    # gx = (g @ W.T) * act'(z), with act' from the lower layer's output a = act(z).
    # A shallow product (m of 10) takes its tiles a strip of rows at a time and
    # applies act' once per strip: 300 rows are several blocks and an edge strip.
    rng = np.random.default_rng(n * k + m)
    g = rng.uniform(-1, 1, (n, m)).astype(dtype)
    W = rng.uniform(-1, 1, (k, m)).astype(dtype)
    a = np.empty((n, k), dtype)
    z = rng.uniform(-3, 3, (n, k)).astype(dtype)
    REF.activation_forward(activation_id(act), z, a)
    ref, got = np.empty((n, k), dtype), np.empty((n, k), dtype)
    REF.dense_backward_input(g, W, ref, activation_id(act), a)
    CPU.dense_backward_input(g, W, got, activation_id(act), a)
    assert max_rel_err(got, ref) < tol(dtype, m + k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_gradient(level, dtype):
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (129, 785)).astype(dtype)
    g = rng.uniform(-1, 1, (129, 33)).astype(dtype)
    gW, gb = np.empty((785, 33), dtype), np.empty(33, dtype)
    CPU.dense_backward_weight(x, g, gW, gb)
    assert max_rel_err(gW, x.T.astype(np.float64) @ g) < tol(dtype, 129)
    assert max_rel_err(gb, g.astype(np.float64).sum(axis=0)) < tol(dtype, 129)


@pytest.mark.parametrize("dtype", DTYPES)
def test_products_identical_for_any_threads_and_shares(level, dtype, threads):
    if not fastmlp.threads.openmp_enabled():
        pytest.skip("the cpu backend was built without OpenMP")
    # Large enough to be split between threads, with K over several cache blocks; the
    # threads' shares of the tiles adapt to their speeds, here also fixed unevenly.
    rng = np.random.default_rng(1)
    n, k, m = 200, 900, 130
    x = rng.uniform(-1, 1, (n, k)).astype(dtype)
    W = rng.uniform(-0.1, 0.1, (k, m)).astype(dtype)
    b = rng.uniform(-1, 1, m).astype(dtype)
    runs = []
    for t, shares in ((1, None), (2, None), (2, [0.1, 0.9]), (2, [0.8, 0.2]),
                      (3, [0.2, 0.3, 0.5]), (3, None)):
        fastmlp.set_num_threads(t)
        _cpu._set_tile_shares(shares)
        try:
            a = np.empty((n, m), dtype)
            gx, gW, gb = np.empty((n, k), dtype), np.empty((k, m), dtype), np.empty(m, dtype)
            CPU.dense_forward(x, W, b, a, activation_id("relu"))
            CPU.dense_backward_input(a, W, gx, activation_id("tanh"), x)
            CPU.dense_backward_weight(x, a, gW, gb)
        finally:
            _cpu._set_tile_shares(None)
        runs.append((a, gx, gW, gb))
    for run in runs[1:]:
        for one, other in zip(runs[0], run):
            np.testing.assert_array_equal(one, other)


def test_tile_shares_are_checked():
    for bad in ([1.0], [0.5, 0.6], [1.2, -0.2], [1 / 17] * 17):
        with pytest.raises(ValueError, match="shares"):
            _cpu._set_tile_shares(bad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,rule,n_slots,hyper", list(update_cases()))
def test_updates_at_each_level(level, name, rule, n_slots, hyper, dtype):
    rng = np.random.default_rng(2)
    n = 70001  # split between threads, with a ragged end
    p, g = rng.uniform(-1, 1, n).astype(dtype), rng.uniform(-1, 1, n).astype(dtype)
    s_ref = [rng.uniform(0, 1, n).astype(dtype) for _ in range(n_slots)] + [None] * (2 - n_slots)
    s_got = [None if s is None else s.copy() for s in s_ref]
    p_ref, p_got = p.copy(), p.copy()
    REF.update(rule, p_ref, g, *s_ref, hyper, 1e-4, 60000)
    CPU.update(rule, p_got, g, *s_got, hyper, 1e-4, 60000)
    assert max_rel_err(p_got, p_ref) < tol(dtype)
    for a, b in zip(s_got[:n_slots], s_ref[:n_slots]):
        assert max_rel_err(a, b) < tol(dtype)


@pytest.mark.parametrize("backend", [REF, CPU], ids=["numpy", "cpu"])
@pytest.mark.parametrize("name,rule,n_slots,hyper", list(update_cases()))
def test_update_into_another_buffer_keeps_the_parameters(backend, name, rule, n_slots, hyper):
    rng = np.random.default_rng(4)
    p, g = rng.uniform(-1, 1, 50000).astype(np.float32), rng.uniform(-1, 1, 50000).astype(
        np.float32)
    states = [rng.uniform(0, 1, 50000).astype(np.float32) for _ in range(n_slots)]
    pad = [None] * (2 - n_slots)
    in_place, in_place_states = p.copy(), [s.copy() for s in states]
    backend.update(rule, in_place, g, *in_place_states, *pad, hyper, 0.01, 40000)
    kept, out = p.copy(), np.full_like(p, np.nan)
    backend.update(rule, kept, g, *states, *pad, hyper, 0.01, 40000, out)
    np.testing.assert_array_equal(kept, p)
    np.testing.assert_array_equal(out, in_place)
    for a, b in zip(states, in_place_states):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_take_rows(dtype):
    rng = np.random.default_rng(6)
    src = rng.uniform(-1, 1, (1000, 37)).astype(dtype)
    idx = rng.permutation(1000)[:130].astype(np.intp)
    out = np.empty((130, 37), dtype)
    CPU.take_rows(src, idx, out)
    np.testing.assert_array_equal(out, src[idx])


def test_set_simd_level():
    before = threads.gemm_level()
    try:
        assert threads.set_simd_level("scalar") == "scalar"
        assert threads.gemm_level() == "scalar"
        # Asking for more than the CPU has gives the best it has.
        assert threads.set_simd_level("avx512") == threads.SIMD_LEVELS[BEST]
    finally:
        threads.set_simd_level(before)
    with pytest.raises(ValueError, match="unknown SIMD level 'sse9'"):
        threads.set_simd_level("sse9")


def _level_in_fresh_process(value, tmp_path):
    env = dict(os.environ, FASTMLP_SIMD=value)
    code = "import fastmlp.threads as t; print(t.gemm_level())"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True)


def test_environment_variable_caps_the_level(tmp_path):
    res = _level_in_fresh_process("scalar", tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "scalar"
    res = _level_in_fresh_process("avx512", tmp_path)
    assert res.stdout.strip() == threads.SIMD_LEVELS[BEST]
    res = _level_in_fresh_process("bogus", tmp_path)
    assert res.returncode != 0 and "FASTMLP_SIMD='bogus' is not a SIMD level" in res.stderr


def test_training_is_identical_at_each_level_within_rounding(level):
    # Four steps of the keras network: every level agrees with the numpy backend (its
    # BLAS sums in another order) within the rounding of 4 steps of 784-term sums.
    # In float64: float32 RMSprop divides tiny gradients by their own size, so a
    # rounding-level gradient can flip a whole step (the bound does not hold there).
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1, (256, 784))
    y = np.eye(10)[rng.integers(0, 10, 256)]
    models = {b: fastmlp.recipes.get("keras").build(backend=b, dtype="float64")
              for b in ("numpy", "cpu")}
    for m in models.values():
        m.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False)
    for a, b in zip(models["cpu"].get_weights(), models["numpy"].get_weights()):
        assert max_rel_err(a, b) < tol("float64", 784, steps=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("N", [1, 10, 17])
def test_thin_products_computed_transposed_give_the_same_bits(level, N, ta, tb, dtype):
    # Many rows and few columns: computed as the transpose (C^T = B^T A^T), or with
    # the thin kernel (a row-major A). Blocks of 64 rows are too short for the
    # transpose, and each row's sums do not depend on the others.
    rng = np.random.default_rng(N)
    M, K = 1000, 700
    a, b = operands(rng, M, N, K, dtype, ta, tb)
    whole = np.empty((M, N), dtype)
    _cpu.matmul(a, b, whole)
    for i in range(0, M, 64):
        part = np.empty((min(64, M - i), N), dtype)
        _cpu.matmul(a[i:i + 64], b, part)
        np.testing.assert_array_equal(whole[i:i + 64], part)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("M,N,K", [(7, 40, 5), (13, 64, 257), (129, 100, 300),
                                   (300, 33, 513), (128, 512, 784)])
def test_a_read_in_place_gives_the_packed_bits(level, M, N, K, ta, dtype, threads,
                                               a_in_place):
    # The general path reads A's whole panels where they lie (along A's rows, or, for
    # a transposed A, a row of A per k) instead of packing them: the same values
    # summed in the same order. Fewer rows than a panel, ragged last panels (always
    # packed), one to three blocks of k, operands inside larger arrays (rows longer
    # than the operand), two threads, and the fused bias and activation.
    rng = np.random.default_rng(M + N + K + ta)
    big = rng.uniform(-1, 1, (K + 3, M + 5) if ta else (M + 3, K + 5)).astype(dtype)
    a = big[1:K + 1, 2:M + 2].T if ta else big[1:M + 1, 2:K + 2]
    b = rng.uniform(-1, 1, (K, N)).astype(dtype)
    bias = rng.uniform(-1, 1, N).astype(dtype)
    fastmlp.set_num_threads(2)
    results = []
    for mode in (1, 2, 0):  # packed, in place wherever it can, by the rule
        _cpu._set_a_in_place(mode)
        plain, fused = np.full((M, N), np.nan, dtype), np.full((M, N), np.nan, dtype)
        _cpu.matmul(a, b, plain)
        CPU.dense_forward(np.ascontiguousarray(a), b, bias, fused, activation_id("tanh"))
        results.append((plain, fused))
    for other in results[1:]:
        for one, two in zip(results[0], other):
            np.testing.assert_array_equal(one, two)
    assert max_rel_err(results[0][0], a.astype(np.float64) @ b) < tol(dtype, K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("m,K,N", [(8, 40, 32), (13, 257, 64), (129, 300, 100),
                                   (300, 513, 33), (128, 784, 512), (1000, 784, 40)])
def test_a_read_through_row_pointers_gives_the_gathered_bits(level, m, K, N, trans, dtype,
                                                             threads, a_in_place):
    # A batch whose rows lie apart in the training set, read through their pointers
    # (the compiled step at a large batch): x[rows] @ b (a forward product) and
    # x[rows].T @ b (a weight gradient), against the same product of the gathered
    # rows, bit for bit: whole panels read through the pointers and ragged last ones
    # packed from them, a row taken twice, one to three blocks of k, two threads.
    rng = np.random.default_rng(m + K + N + trans)
    x = rng.uniform(-1, 1, (3 * m + 7, K)).astype(dtype)
    rows = rng.permutation(x.shape[0])[:m].astype(np.intp)
    rows[-1] = rows[0]
    b = rng.uniform(-1, 1, (m if trans else K, N)).astype(dtype)
    a = x[rows].T if trans else x[rows]
    fastmlp.set_num_threads(2)
    want = np.full(a.shape[:1] + (N,), np.nan, dtype)
    for mode in (1, 2, 0):  # packed, in place wherever it can, by the rule
        _cpu._set_a_in_place(mode)
        _cpu.matmul(a, b, want)
        got = np.full_like(want, np.nan)
        assert _cpu._matmul_rows(x, rows, b, got, trans)
        np.testing.assert_array_equal(got, want)
    assert max_rel_err(want, a.astype(np.float64) @ b) < tol(dtype, a.shape[1])


def test_row_pointers_are_refused_where_a_product_cannot_take_them():
    # The thin kernels (10 columns) and a product computed as its transpose (20
    # columns, 200 rows) read the gathered rows instead, with the same result.
    rng = np.random.default_rng(3)
    for trans, width, m, n in ((False, 30, 40, 10), (True, 64, 40, 10), (False, 30, 200, 20)):
        x = rng.uniform(-1, 1, (250, width)).astype(np.float32)
        rows = rng.permutation(250)[:m].astype(np.intp)
        b = rng.uniform(-1, 1, (m if trans else width, n)).astype(np.float32)
        a = x[rows].T if trans else x[rows]
        got, want = np.empty((a.shape[0], n), np.float32), np.empty((a.shape[0], n), np.float32)
        assert not _cpu._matmul_rows(x, rows, b, got, trans)
        _cpu.matmul(a, b, want)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(IndexError, match="outside"):
        _cpu._matmul_rows(x, np.array([0, 250], np.intp), b, got[:2], False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("M,N,K", [(5, 10, 40), (8, 1, 1), (13, 7, 300), (300, 10, 512),
                                   (129, 16, 700), (64, 17, 20), (600, 10, 512),
                                   (403, 7, 700)])
def test_thin_kernels_give_the_portable_kernels_bits(level, M, N, K, tb, dtype, threads):
    # Products of at most 16 columns with a row-major A run the level's thin kernel
    # (rows in registers, op(A) read in place): each element summed as the portable
    # 4x4 kernel sums it. Fewer rows than the kernel's, one k, two and three blocks
    # of k, ragged row groups, 17 columns (the general path), split between threads,
    # with the fused bias and activation; the last two have A large enough for all
    # of op(B) to be packed at once, each group going through its blocks of k.
    rng = np.random.default_rng(M + N + K)
    a, b = operands(rng, M, N, K, dtype, False, tb)
    bias = rng.uniform(-1, 1, N).astype(dtype)
    results = []
    for name in (level, "scalar"):
        _cpu.set_gemm_level(name)
        fastmlp.set_num_threads(2)
        plain, fused = np.empty((M, N), dtype), np.empty((M, N), dtype)
        _cpu.matmul(a, b, plain)
        CPU.dense_forward(np.ascontiguousarray(a), np.ascontiguousarray(b), bias, fused,
                          activation_id("tanh"))
        results.append((plain, fused))
    _cpu.set_gemm_level(level)
    for one, other in zip(*results):
        np.testing.assert_array_equal(one, other)
    assert max_rel_err(results[0][0], a.astype(np.float64) @ b) < tol(dtype, K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,K", [(512, 10, 128), (512, 10, 1024), (1000, 10, 700),
                                   (33, 7, 300), (784, 1, 50), (100, 10, 1), (64, 10, 513),
                                   (40, 11, 20), (32, 10, 50000)])
def test_thin_weight_gradients_give_the_portable_kernels_bits(level, M, N, K, dtype, threads):
    # A^T B with at most 10 columns (an output layer's weight gradient) runs the level's
    # thin weight-gradient kernel (runs of C's rows, A's rows read in place): each
    # element summed as the portable 4x4 kernel sums it. One block of k and several,
    # rows past the last whole run (1000 = 31 x 32 + 8; 33), one k, one column, and
    # 11 columns and a depth of 50,000 (the general path: B packed whole would not fit
    # the reserved scratch); split between two threads.
    rng = np.random.default_rng(M + N + K)
    x = rng.uniform(-1, 1, (K, M)).astype(dtype)
    g = rng.uniform(-1, 1, (K, N)).astype(dtype)
    results = []
    for name in (level, "scalar"):
        _cpu.set_gemm_level(name)
        fastmlp.set_num_threads(2)
        c = np.empty((M, N), dtype)
        _cpu.matmul(x.T, g, c)
        gW, gb = np.empty((M, N), dtype), np.empty(N, dtype)
        CPU.dense_backward_weight(x, g, gW, gb)
        results.append((c, gW))
    _cpu.set_gemm_level(level)
    for one, other in zip(*results):
        np.testing.assert_array_equal(one, other)
    np.testing.assert_array_equal(results[0][0], results[0][1])
    assert max_rel_err(results[0][0], x.T.astype(np.float64) @ g) < tol(dtype, K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,K", [(300, 256, 512), (784, 512, 600), (200, 70, 300),
                                   (20, 32, 64), (129, 33, 1)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_bias_gradient_is_the_sum_in_row_order(level, M, N, K, dtype, n_threads, threads,
                                               bias_sums):
    # dense_backward_weight's bias gradient, summed as the product packs g where it can
    # (the threads' columns as the step splits them, over several blocks of k, a last
    # panel cut short, a product too small to split), is each column's sum over the
    # rows in order from zero: bitwise numpy's running sum, and the separate pass's.
    rng = np.random.default_rng(M + N + K)
    x = rng.uniform(-1, 1, (K, M)).astype(dtype)
    g = rng.uniform(-1, 1, (K, N)).astype(dtype)
    fastmlp.set_num_threads(n_threads)
    results = []
    for fused in (True, False):
        _cpu._set_bias_sums(fused)
        gW, gb = np.full((M, N), np.nan, dtype), np.full(N, np.nan, dtype)
        CPU.dense_backward_weight(x, g, gW, gb)
        results.append((gW, gb))
    np.testing.assert_array_equal(results[0][1], np.cumsum(g, axis=0, dtype=dtype)[-1])
    for one, other in zip(*results):
        np.testing.assert_array_equal(one, other)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("M,N,K", [(600, 64, 700), (1000, 100, 513), (300, 33, 257),
                                   (160, 240, 2000)])
def test_all_of_k_packed_first_gives_the_same_bits(level, M, N, K, dtype, n_threads,
                                                   threads, all_k):
    # With several blocks of k and of rows, a product packs B for all of K first and
    # takes each block of rows through every block of k (where the scratch holds it:
    # not for K = 2000 by 240 columns), instead of each block of k through every block of
    # rows: the same sums in the same order. Both layouts of each operand, the fused
    # bias and activation on the last block of k, and a weight gradient with its bias
    # sums taken while B is packed.
    rng = np.random.default_rng(M + N + K)
    a = rng.uniform(-1, 1, (M, K)).astype(dtype)
    b = rng.uniform(-1, 1, (K, N)).astype(dtype)
    bias = rng.uniform(-1, 1, N).astype(dtype)
    g = rng.uniform(-1, 1, (K, N)).astype(dtype)
    fastmlp.set_num_threads(n_threads)
    results = []
    for on in (True, False):
        _cpu._set_all_k(on)
        outs = []
        for ta in (False, True):
            for tb in (False, True):
                A = np.ascontiguousarray(a.T).T if ta else a
                B = np.ascontiguousarray(b.T).T if tb else b
                outs.append(np.full((M, N), np.nan, dtype))
                _cpu.matmul(A, B, outs[-1])
        outs.append(np.full((M, N), np.nan, dtype))
        CPU.dense_forward(a, b, bias, outs[-1], activation_id("tanh"))
        outs += [np.full((M, N), np.nan, dtype), np.full(N, np.nan, dtype)]
        CPU.dense_backward_weight(np.ascontiguousarray(a.T), g, outs[-2], outs[-1])
        results.append(outs)
    for one, other in zip(*results):
        np.testing.assert_array_equal(one, other)
    assert max_rel_err(results[0][0], a.astype(np.float64) @ b) < tol(dtype, K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "sigmoid"])
def test_thin_fused_layers_computed_transposed_give_the_same_bits(level, act, dtype):
    rng = np.random.default_rng(3)
    n, k, m = 1000, 512, 10
    x = rng.uniform(-1, 1, (n, k)).astype(dtype)
    W = rng.uniform(-0.1, 0.1, (k, m)).astype(dtype)
    b = rng.uniform(-1, 1, m).astype(dtype)
    g = rng.uniform(-1, 1, (n, m)).astype(dtype)
    a_low = CPU.empty((n, m), dtype=dtype)
    REF.activation_forward(activation_id(act), g, a_low)
    out, gx = np.empty((n, m), dtype), np.empty((n, m), dtype)
    CPU.dense_forward(x, W, b, out, activation_id(act))
    V = rng.uniform(-0.1, 0.1, (m, m)).astype(dtype)
    CPU.dense_backward_input(g, V, gx, activation_id(act), a_low)
    for i in range(0, n, 64):
        rows = slice(i, i + 64)
        o, h = np.empty_like(out[rows]), np.empty_like(gx[rows])
        CPU.dense_forward(x[rows], W, b, o, activation_id(act))
        CPU.dense_backward_input(g[rows], V, h, activation_id(act), a_low[rows])
        np.testing.assert_array_equal(out[rows], o)
        np.testing.assert_array_equal(gx[rows], h)
    np.testing.assert_allclose(out, reference_forward(x, W, b, act), rtol=tol(dtype, k))


@pytest.mark.parametrize("dtype", DTYPES)
def test_thin_deep_products_with_an_epilogue_computed_transposed(level, dtype):
    # 3 columns over 600 values of k: where no thin kernel takes it (the portable
    # level), computed as the transpose, summed over three blocks of k in the
    # scratch and written across C once, then act' applied; blocks of 64 rows are
    # computed as they are.
    rng = np.random.default_rng(7)
    n, k, m = 1000, 3, 600
    g = rng.uniform(-1, 1, (n, m)).astype(dtype)
    W = rng.uniform(-0.1, 0.1, (k, m)).astype(dtype)
    a_low = np.empty((n, k), dtype)
    REF.activation_forward(activation_id("relu"), rng.uniform(-1, 1, (n, k)).astype(dtype),
                           a_low)
    gx = np.empty((n, k), dtype)
    CPU.dense_backward_input(g, W, gx, activation_id("relu"), a_low)
    for i in range(0, n, 64):
        rows = slice(i, i + 64)
        h = np.empty_like(gx[rows])
        CPU.dense_backward_input(g[rows], W, h, activation_id("relu"), a_low[rows])
        np.testing.assert_array_equal(gx[rows], h)
    ref = np.empty_like(gx)
    REF.dense_backward_input(g, W, ref, activation_id("relu"), a_low)
    assert max_rel_err(gx, ref) < tol(dtype, m)


def reference_forward(x, W, b, act):
    out = np.empty((x.shape[0], W.shape[1]), x.dtype)
    REF.dense_forward(x, W, b, out, activation_id(act))
    return out


@pytest.mark.parametrize("n_threads", [1, 2])
def test_shallow_strip_kernel_changes_no_bit(n_threads, level, threads, shallow, stream):
    # An input gradient from at most 12 classes with relu's derivative runs its whole
    # strips through a strip kernel at AVX-512 and AVX2 (float): against the tiles
    # and their epilogue, the same bits, with the layer's output at zero, above and
    # below it, subnormal, infinite and not a number; strips and panels cut short,
    # one to 12 classes and 13 (beyond the kernel); and the values of NumPy's
    # product. The
    # kernel's non-temporal stores, by its rule (an output above 8 MiB: the 4200 x
    # 512 case), forced where the output is aligned, and forced where it is not
    # (ordinary stores then), give the same bits.
    fastmlp.set_num_threads(n_threads)
    rng = np.random.default_rng(5)
    relu = activation_id("relu")
    for n, k, m in [(128, 10, 512), (1000, 10, 512), (13, 3, 64), (37, 12, 96),
                    (64, 1, 32), (24, 13, 64), (40, 10, 40), (4200, 10, 512)]:
        g = rng.standard_normal((n, k)).astype(np.float32)
        W = rng.standard_normal((m, k)).astype(np.float32)
        a = relu_outputs(rng, n, m)
        got = []
        for on, mode, offset in ((False, 0, 0), (True, 0, 0), (True, 1, 0), (True, 2, 0),
                                 (True, 2, 1)):
            _cpu._set_shallow(on)
            _cpu._set_stream(mode)
            gx = empty_aligned(n * m + 1, np.float32)[offset:offset + n * m].reshape(n, m)
            gx[...] = np.nan
            _cpu.dense_backward_input(g, W, gx, relu, a)
            got.append(gx)
        for other in got[1:]:
            np.testing.assert_array_equal(other.view(np.uint32), got[0].view(np.uint32))
        want = np.where(a > 0, g.astype(np.float64) @ W.T.astype(np.float64), 0)
        np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)
