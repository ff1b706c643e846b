"""Every kernel of the cpu backend against the numpy reference."""

import numpy as np
import pytest
from conftest import max_rel_err, tol, update_cases

import fastmlp
from fastmlp.backends import get_backend
from fastmlp.functions import ACTIVATIONS, LOSS_OUTPUTS, LOSSES, RULES, activation_id, loss_id

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
    for ref, got, k_sum in zip(out["numpy"], out["cpu"], (k, m, n, n)):
        assert max_rel_err(got, ref) < tol(dtype, k_sum)


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
        # softmax sums over the row's 23 outputs
        assert max_rel_err(got, ref) < tol(dtype, 23 if act == "softmax" else 1)


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
@pytest.mark.parametrize("n", [37, 150])  # one block of rows for the exponentials, and three
def test_losses(loss, act, m, n, dtype):
    rng = np.random.default_rng(loss_id(loss) * 10 + activation_id(act) + n)
    z = rand(rng, (n, m), dtype, -5, 5)
    y = np.zeros((n, m), dtype)
    if m == 1:
        y[:, 0] = rng.integers(0, 2, n)
    else:
        y[np.arange(n), rng.integers(0, m, n)] = 1
    y[0] = 0.3  # soft targets take the general formulas
    res = {}
    for be in (REF, CPU):
        a, g, rows = np.full_like(z, np.nan), np.empty_like(z), np.empty(n, dtype)
        total, hits = be.loss_grad(loss_id(loss), activation_id(act), z, a, y, g, rows)
        res[be.name] = (total, hits, a, g, rows)
    ref, got = res["numpy"], res["cpu"]
    assert got[1] == ref[1]
    # Each row's loss sums m terms, and the total n rows.
    assert abs(got[0] - ref[0]) <= tol(dtype, m + n) * abs(ref[0])
    for r, c in zip(ref[2:], got[2:]):
        assert max_rel_err(c, r) < tol(dtype, m)


def _float_bits(v):
    return int(np.float32(v).view(np.uint32))


def test_softmax_exp_gives_the_c_librarys_floats():
    # The float32 softmax takes e^x by fastmlp's own function, which must give the
    # float that (float)exp((double)x) gives (measured: on all 2^32 floats): a
    # sample across every float, and every float where e^x becomes subnormal, zero
    # and infinite, at 0, and the special values (tests/test_exp.py: every float).
    from fastmlp import _cpu

    assert _cpu.exp_mismatches(0, 0xFFFFFFFF, 997) == 0
    for lo, hi in [(-86.0, -88.0), (-103.0, -105.0), (-109.0, -111.0), (88.0, 89.0),
                   (99.0, 101.0), (-0.5, -0.5001), (0.0, 1e-44), (-0.0, -1e-44)]:
        first, last = sorted((_float_bits(lo), _float_bits(hi)))
        assert _cpu.exp_mismatches(first, last, 1) == 0, (lo, hi)
    for bits in (0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001, 0xFF812345):
        assert _cpu.exp_mismatches(bits, bits, 1) == 0, hex(bits)
    with pytest.raises(ValueError, match="step > 0"):
        _cpu.exp_mismatches(0, 10, 0)


@pytest.mark.parametrize("backend", [REF, CPU], ids=["numpy", "cpu"])
def test_gathered_rows_and_accumulator(backend):
    # idx reads rows x[idx], y[idx]; acc adds (loss sum, hits) to a row of an array.
    rng = np.random.default_rng(11)
    x, W, b = rand(rng, (20, 6), "float64"), rand(rng, (6, 4), "float64"), rand(rng, 4, "float64")
    y = np.eye(4)[rng.integers(0, 4, 20)]
    idx = np.array([3, 17, 0, 3, 9], np.intp)
    z, z_ref = np.empty((5, 4)), np.empty((5, 4))
    backend.dense_forward(x, W, b, z, 0, idx)
    REF.dense_forward(x[idx], W, b, z_ref, 0)
    np.testing.assert_allclose(z, z_ref, rtol=0, atol=tol("float64", 6))
    gW, gb, gW_ref, gb_ref = np.empty((6, 4)), np.empty(4), np.empty((6, 4)), np.empty(4)
    backend.dense_backward_weight(x, z, gW, gb, idx)
    REF.dense_backward_weight(x[idx], z, gW_ref, gb_ref)
    np.testing.assert_allclose(gW, gW_ref, rtol=0, atol=tol("float64", 5) * np.abs(gW_ref).max())
    acc = np.zeros((3, 2))
    a, g, rows = np.empty((5, 4)), np.empty((5, 4)), np.empty(5)
    total, hits = backend.loss_grad(0, activation_id("softmax"), z, a, y, g, rows, idx, (acc, 1))
    np.testing.assert_array_equal(acc, [[0, 0], [total, hits], [0, 0]])
    plain = REF.loss_grad(0, activation_id("softmax"), z, a.copy(), y[idx], g.copy(), rows.copy())
    assert plain[1] == hits and abs(plain[0] - total) <= tol("float64", 9) * abs(total)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,n_decayed", [(1, 1), (7, 3), (1001, 1000), (70001, 50000)])
@pytest.mark.parametrize("name,rule,n_slots,hyper", list(update_cases()))
def test_optimizer_updates(name, rule, n_slots, hyper, n, n_decayed, dtype):
    # Every rule, with L2 on the leading n_decayed entries only.
    rng = np.random.default_rng(n)
    p, g = rand(rng, n, dtype), rand(rng, n, dtype)
    states = [rand(rng, n, dtype, 0, 1) for _ in range(n_slots)] + [None] * (2 - n_slots)
    res = {}
    for be in (REF, CPU):
        q, s = p.copy(), [None if v is None else v.copy() for v in states]
        be.update(rule, q, g, s[0], s[1], hyper, 0.01, n_decayed)
        res[be.name] = [q] + s[:n_slots]
    for r, c in zip(res["numpy"], res["cpu"]):
        assert max_rel_err(c, r) < tol(dtype), name
    # L2 reached exactly the decayed entries: without it the others are the same.
    plain = p.copy()
    CPU.update(rule, plain, g, *[None if v is None else v.copy() for v in states], hyper, 0.0,
               n_decayed)
    np.testing.assert_array_equal(plain[n_decayed:], res["cpu"][0][n_decayed:])
    assert (plain[:n_decayed] != res["cpu"][0][:n_decayed]).any()


@pytest.mark.parametrize("backend", [REF, CPU], ids=["numpy", "cpu"])
def test_checked_update_skips_and_flags_a_non_finite_step(backend):
    p, g = np.ones(10), np.ones(10)
    acc, flag = np.array([[1.0, 0], [np.nan, 0], [2.0, 0]]), np.zeros(1, np.int32)
    hyper = fastmlp.optim.SGD(0.5).kernel_hyper(1)
    backend.update(0, p, g, None, None, hyper, 0.0, 10, None, (acc, 0, flag))
    np.testing.assert_array_equal(p, 0.5)
    backend.update(0, p, g, None, None, hyper, 0.0, 10, None, (acc, 1, flag))
    assert flag[0] == 2
    backend.update(0, p, g, None, None, hyper, 0.0, 10, None, (acc, 2, flag))
    np.testing.assert_array_equal(p, 0.5)  # every step after a flagged one is skipped
    assert flag[0] == 2


def test_id_tables_match_the_compiled_header():
    # The Python table (fastmlp.functions) against src_c/fm_ids.h, through the extension.
    from fastmlp import _cpu, functions

    assert _cpu.id_tables() == {"activations": functions.ACTIVATIONS,
                                "losses": functions.LOSSES, "rules": functions.RULES,
                                "simd_levels": functions.SIMD_LEVELS,
                                "hyper_parameters": functions.HYPER_PARAMETERS}
    for name, cls in fastmlp.optim.OPTIMIZERS.items():
        assert functions.RULES[cls.rule] == name


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


@pytest.mark.parametrize("threads_", [1, 2])
def test_streaming_bandwidth_moves_what_it_counts(threads_):
    from fastmlp import _cpu

    src = np.arange(10_001, dtype=np.float32)
    dst = np.zeros_like(src)
    nbytes, seconds = _cpu.stream_bandwidth(src, dst, None, 3, threads_)
    np.testing.assert_array_equal(dst, src)
    assert nbytes == 2 * src.nbytes * 3 and seconds > 0
    nbytes, seconds = _cpu.stream_bandwidth(src, None, None, 3, threads_)
    assert nbytes == src.nbytes * 3 and seconds > 0
    # The optimizer's pattern: dst = src / 2 + dst and aux += that, element by element.
    b, c = np.ones_like(src), np.full_like(src, 2)
    want_b, want_c = b.copy(), c.copy()
    for _ in range(3):
        want_b = src + np.float32(0.5) * want_b
        want_c = want_c + want_b
    nbytes, seconds = _cpu.stream_bandwidth(src, b, c, 3, threads_)
    np.testing.assert_array_equal(b, want_b)
    np.testing.assert_array_equal(c, want_c)
    assert nbytes == 5 * src.nbytes * 3 and seconds > 0
    with pytest.raises(ValueError, match="non-empty src, and a dst as long"):
        _cpu.stream_bandwidth(src, dst[:10], None, 1, threads_)
    with pytest.raises(ValueError, match="non-empty src"):
        _cpu.stream_bandwidth(src[:0], None, None, 1, threads_)
    with pytest.raises(ValueError, match="only with a dst"):
        _cpu.stream_bandwidth(src, None, c, 1, threads_)
    with pytest.raises(ValueError, match="an aux as long"):
        _cpu.stream_bandwidth(src, b, c[:5], 1, threads_)


def test_profile_counts_the_updates_traffic_and_footprint():
    from fastmlp.tools.profile import _cost

    p, g, s1 = (np.zeros(1000, np.float32) for _ in range(3))
    out = np.zeros_like(p)
    rms = RULES.index("rmsprop")
    args = (rms, p, g, s1, None, None, 0.0, 1000, out)
    label, flops, nbytes, footprint = _cost("update", args, 0)
    # p and g read, s1 read and written, out written; four distinct arrays.
    assert nbytes == 5 * p.nbytes and footprint == 4 * p.nbytes
    in_place = args[:8] + (p,)
    assert _cost("update", in_place, 0)[3] == 3 * p.nbytes
    adam = (RULES.index("adam"), p, g, s1, np.zeros_like(p), None, 0.0, 1000, out)
    _, _, nbytes, footprint = _cost("update", adam, 0)
    assert nbytes == 7 * p.nbytes and footprint == 5 * p.nbytes
    batch = np.zeros((4, 5), np.float32)
    _, _, nbytes, footprint = _cost("take_rows", (None, None, batch), 0)
    assert footprint == nbytes == 2 * batch.nbytes


def test_profile_holds_the_update_to_its_square_roots():
    from fastmlp.tools.ceilings import roofline_bound
    from fastmlp.tools.profile import _roots

    p = np.zeros(1000, np.float32)
    # RMSprop and Adam divide by a square root once per parameter; the others never.
    for rule in RULES:
        want = p.size if rule in ("rmsprop", "adam", "adamw") else 0
        assert _roots("update", (RULES.index(rule), p)) == want
    assert _roots("dense_forward", (p,)) == 0
    # The bound is the longest of the three times; without a measured rate (a GPU's
    # ceilings) the square roots do not count.
    ceil = {"gflops": 100.0, "roots": 2.0}
    assert roofline_bound(ceil, 1e9, 1e6, 10.0) == pytest.approx(0.01)  # the flops
    assert roofline_bound(ceil, 1e6, 1e9, 10.0) == pytest.approx(0.1)  # the bytes
    assert roofline_bound(ceil, 1e6, 1e6, 10.0, 1e9) == pytest.approx(0.5)  # the roots
    assert roofline_bound({"gflops": 100.0}, 1e6, 1e6, 10.0, 1e9) == pytest.approx(1e-4)


@pytest.mark.parametrize("threads_", [1, 2])
def test_root_peak_counts_its_square_roots(threads_):
    from fastmlp import _cpu

    best = _cpu.GEMM_LEVELS.index(_cpu.gemm_best_level())
    for i, level in enumerate(_cpu.GEMM_LEVELS):
        if i > best:
            with pytest.raises(ValueError, match="does not support"):
                _cpu.root_peak(level, 10, threads_)
            continue
        elements, seconds = _cpu.root_peak(level, 1000, threads_)
        # 8 chains, each of the update's vector width: AVX2 from AVX2 up.
        lanes = 8 if i >= _cpu.GEMM_LEVELS.index("avx2") else 1
        team = threads_ if fastmlp.threads.openmp_enabled() else 1
        assert elements == 8 * lanes * 1000 * team and seconds > 0


def test_cpu_ceilings_measure_every_footprint():
    from fastmlp.tools.ceilings import BANDWIDTH_FOOTPRINTS, bandwidth_at, cpu_ceilings

    ceil = cpu_ceilings(seconds=0.01)
    assert [fp for fp, _ in ceil["bandwidth"]] == list(BANDWIDTH_FOOTPRINTS)
    assert all(gbs > 0 for _, gbs in ceil["bandwidth"])
    assert ceil["gflops"] > 0 and ceil["gflops_1thread"] > 0 and ceil["roots"] > 0
    # A kernel is held to the bandwidth interpolated at its footprint: the measured
    # figure at a measured footprint, between the two around it elsewhere, the end
    # figures beyond them.
    curve = ceil["bandwidth"]
    assert bandwidth_at(ceil, 1) == curve[0][1]
    assert bandwidth_at(ceil, BANDWIDTH_FOOTPRINTS[-1] + 1) == ceil["gbs"] == curve[-1][1]
    for (f0, g0), (f1, g1) in zip(curve, curve[1:]):
        assert bandwidth_at(ceil, f1) == pytest.approx(g1)
        assert min(g0, g1) <= bandwidth_at(ceil, 2 * f0) <= max(g0, g1)
    two = {"bandwidth": [[1 << 20, 100.0], [1 << 22, 25.0]], "gbs": 25.0}
    assert bandwidth_at(two, 1 << 21) == pytest.approx(50.0)  # halfway in logarithms
