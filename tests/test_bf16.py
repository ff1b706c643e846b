"""mixed_bfloat16: the rounding, the compiled products against their exact reference
in every kernel, layout, SIMD level and thread count, and the policy in models."""

import numpy as np
import pytest
from conftest import max_rel_err, relu_outputs
from test_fingerprint import fixed_run

import fastmlp
from fastmlp import _cpu, bf16, optim, training
from fastmlp.backends import get_backend
from fastmlp.functions import activation_id
from fastmlp.network import empty_aligned

#: sha256 of the float32 weights after the mixed_bfloat16 run below: the same at
#: every SIMD level, thread count and bfloat16 kernel (recorded on an AVX-512
#: machine without avx512_bf16, where the emulation and the paired layout give it).
FINGERPRINT_BF16 = "c7722836723a01c5ceb36c4d6e2291bc5d293b71830f931c8cc64776ab662d35"

FLT_MIN = float(np.finfo(np.float32).tiny)


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# ---------------------------------------------------------------- rounding
def test_round_bf16_ties_to_even_and_keeps_the_special_values():
    one = 1.0
    cases = {
        one: one,
        one + 2.0 ** -8: one,                      # a tie, to the even neighbour below
        one + 3 * 2.0 ** -8: one + 2.0 ** -6,      # a tie, to the even neighbour above
        one + 2.0 ** -8 + 2.0 ** -20: one + 2.0 ** -7,  # above the tie
        -(one + 2.0 ** -9): -one,
        3.0: 3.0,
        float(np.finfo(np.float32).max): np.inf,    # rounds past the largest bfloat16
        np.inf: np.inf, -np.inf: -np.inf, 0.0: 0.0,
    }
    x = np.array(list(cases), dtype=np.float32)
    np.testing.assert_array_equal(bf16.round_bf16(x), np.array(list(cases.values()),
                                                               dtype=np.float32))
    # Subnormals become zeros of their sign; NaN stays NaN.
    sub = bf16.round_bf16(np.array([1e-40, -1e-40, np.nan], dtype=np.float32))
    assert bits(sub)[0] == 0 and bits(sub)[1] == 0x80000000 and np.isnan(sub[2])


def test_round_bf16_is_the_nearest_bfloat16_for_random_floats():
    rng = np.random.default_rng(0)
    u = rng.integers(0x00800000, 0x7F000000, 20000, dtype=np.uint32)
    u |= rng.integers(0, 2, 20000, dtype=np.uint32) << np.uint32(31)
    x = u.view(np.float32)
    r = bf16.round_bf16(x)
    assert not (bits(r) & 0xFFFF).any()  # representable in bfloat16
    down = (u & 0xFFFF0000).view(np.float32).astype(np.float64)
    up = ((u & 0xFFFF0000) + 0x10000).view(np.float32).astype(np.float64)
    xd = x.astype(np.float64)
    nearest = np.where(np.abs(xd - down) < np.abs(up - xd), down, up)
    tie = np.abs(xd - down) == np.abs(up - xd)
    even = np.where((u >> 16) & 1 == 0, down, up)
    np.testing.assert_array_equal(r.astype(np.float64), np.where(tie, even, nearest))


# ---------------------------------------------------------------- products
SHAPES = [(5, 7, 3), (37, 301, 45), (64, 256, 40), (9, 600, 13), (200, 513, 10),
          (10, 512, 130)]
#: The bfloat16 kernels: the emulation in the float microkernels, the instruction's
#: paired layout with a portable kernel, and the instruction where the CPU has it
#: (test_vdpbf16ps_is_present_where_the_cpu_has_it says when it is left out).
MODES = {"emulated": 0, "paired": 2}
if _cpu.bf16_hardware_supported():
    MODES["vdpbf16ps"] = 1


@pytest.fixture(params=list(MODES))
def bf16_kernel(request):
    """Run the test with each bfloat16 kernel of this CPU, restoring the choice after."""
    before = _cpu.bf16_hardware()
    _cpu.set_bf16_hardware(MODES[request.param])
    yield request.param
    _cpu.set_bf16_hardware(before)


def products(a, b):
    """``a @ b`` in the bfloat16 product for both layouts of each operand."""
    for ta in (False, True):
        for tb in (False, True):
            A = np.ascontiguousarray(a.T).T if ta else a
            B = np.ascontiguousarray(b.T).T if tb else b
            out = np.full((a.shape[0], b.shape[1]), np.nan, dtype=np.float32)
            _cpu.matmul(A, B, out, True)
            yield (ta, tb), out


@pytest.mark.parametrize("shape", SHAPES + [(600, 700, 64)],
                         ids=lambda s: "x".join(map(str, s)))
def test_bf16_product_is_the_exact_reference(shape, bf16_kernel, level, threads, all_k):
    # Also with several blocks of k and of rows, where B is packed for all of K first
    # (each block of rows through every block of k) or a block of k at a time.
    m, k, n = shape
    rng = np.random.default_rng(k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    ref = bits(bf16.matmul_exact(a, b))
    for t in (1, 2):
        fastmlp.set_num_threads(t)
        for on in (True, False):
            _cpu._set_all_k(on)
            for layout, out in products(a, b):
                np.testing.assert_array_equal(bits(out), ref,
                                              err_msg=f"{layout}, {t} threads, {on}")


@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("m,K,N", [(8, 40, 32), (13, 257, 64), (300, 513, 33),
                                   (1000, 784, 40)])
def test_bf16_product_reads_the_rows_where_they_lie(m, K, N, trans, bf16_kernel, threads):
    # The native packing reads a batch's rows through their pointers (the compiled
    # step at a large batch, without gathering them): x[rows] @ b and x[rows].T @ b,
    # the exact reference's bits, with a row taken twice; the other kernels read the
    # gathered rows.
    rng = np.random.default_rng(m + K + N + trans)
    x = rng.standard_normal((3 * m + 7, K)).astype(np.float32)
    rows = rng.permutation(x.shape[0])[:m].astype(np.intp)
    rows[-1] = rows[0]
    b = rng.standard_normal((m if trans else K, N)).astype(np.float32)
    a = x[rows].T if trans else x[rows]
    ref = bits(bf16.matmul_exact(np.ascontiguousarray(a), b))
    for t in (1, 2):
        fastmlp.set_num_threads(t)
        got = np.full((a.shape[0], N), np.nan, np.float32)
        took = _cpu._matmul_rows(x, rows, b, got, trans, True)
        assert took == (bf16_kernel == "vdpbf16ps")
        np.testing.assert_array_equal(bits(got), ref, err_msg=f"{t} threads")


def test_bf16_product_rounds_its_operands_as_the_reference(bf16_kernel, level, threads):
    # Each operand's packing rounds ties to even and reads subnormals as zero, in every
    # layout and both places: a product with the identity is the rounded operand.
    rng = np.random.default_rng(5)
    ties = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -8 + 2.0 ** -20,
                     -(1 + 2.0 ** -9), 3.0, 1e-40, -1e-40, 0.0], dtype=np.float32)
    x = rng.choice(ties, (40, 70)) * np.exp2(rng.integers(-60, 60, (40, 70)))
    x = x.astype(np.float32)
    x[0, :6] = np.array([1e-40, -1e-40, 1e-39, -3e-39, 2e-45, 1.2e-38], np.float32)
    assert bits(bf16.round_bf16(x)).tolist() != bits(x).tolist()
    for t in (1, 2):
        fastmlp.set_num_threads(t)
        for a, b in ((x, np.eye(70, dtype=np.float32)), (np.eye(40, dtype=np.float32), x)):
            ref = bits(bf16.matmul_exact(a, b))
            for layout, out in products(a, b):
                np.testing.assert_array_equal(bits(out), ref, err_msg=f"{layout}, {t}")


def test_probe_exercises_flushing_and_order_and_matches(bf16_kernel, level):
    a, b = bf16._probe_operands()
    ra = bf16.round_bf16(a).astype(np.float64)
    rb = bf16.round_bf16(b).astype(np.float64)
    prods = np.abs(ra[:, :, None] * rb[None, :, :])
    assert ((prods > 0) & (prods < FLT_MIN)).any()  # products below the normals
    assert (a.view(np.uint32) & 0x7F800000 == 0).any()  # a subnormal operand
    ref = bf16.matmul_exact(a, b)
    # The pair order matters here: swapping it changes some bits.
    swapped = bf16.matmul_exact(a[:, [i ^ 1 for i in range(35)] + [35, 36]],
                                b[[i ^ 1 for i in range(35)] + [35, 36]])
    assert not np.array_equal(bits(ref), bits(swapped))
    for _, out in products(a, b):
        np.testing.assert_array_equal(bits(out), bits(ref))


@pytest.mark.parametrize("daz", [False, True], ids=["subnormals-kept", "read-as-zero"])
def test_shallow_input_gradient_strip_kernel_changes_no_bit(daz, bf16_kernel, threads,
                                                            shallow, stream):
    # A bfloat16 input gradient from at most 12 classes with relu's derivative runs
    # its whole strips through a strip kernel on vdpbf16ps, in the products' DAZ and
    # FTZ mode, where the tiles' epilogue compares the layer's output in the
    # caller's: against the emulation with the tiles, the same bits, with outputs at
    # zero, negative, subnormal (kept, or read as zero where the caller flushes
    # them), infinite and not a number; strips cut short, 1 to 12 classes and 13;
    # written past the caches or not, on 1 and 2 threads.
    rng = np.random.default_rng(7)
    relu = activation_id("relu")
    mode = _cpu.bf16_hardware()
    with fastmlp.threads.flush_denormals(daz):
        for n_threads in (1, 2):
            fastmlp.set_num_threads(n_threads)
            for n, k, m in [(128, 10, 512), (1000, 10, 512), (13, 3, 64), (37, 12, 96),
                            (64, 1, 32), (24, 13, 64), (40, 10, 40)]:
                g = rng.standard_normal((n, k)).astype(np.float32)
                W = rng.standard_normal((m, k)).astype(np.float32)
                a = relu_outputs(rng, n, m)
                got = []
                for hw, on, stream_mode in ((0, False, 0), (mode, True, 1), (mode, True, 2)):
                    _cpu.set_bf16_hardware(hw)
                    _cpu._set_shallow(on)
                    _cpu._set_stream(stream_mode)
                    gx = empty_aligned((n, m), np.float32)
                    gx[...] = np.nan
                    _cpu.dense_backward_input(g, W, gx, relu, a, True)
                    got.append(gx)
                _cpu.set_bf16_hardware(mode)
                for other in got[1:]:
                    np.testing.assert_array_equal(other.view(np.uint32),
                                                  got[0].view(np.uint32))
                kept = a > (np.float32(1.17549435e-38) if daz else 0)
                assert np.all(got[0][~kept] == 0)


def test_bf16_product_restores_the_floating_point_mode():
    # DAZ/FTZ are set for the products only: float arithmetic afterwards keeps
    # subnormals (numpy here runs on the same thread).
    a = np.ones((8, 8), np.float32)
    _cpu.matmul(a, a, np.empty((8, 8), np.float32), True)
    tiny = np.array([FLT_MIN], np.float32)
    assert (tiny / np.float32(4))[0] > 0


def test_bf16_needs_float32_storage():
    from fastmlp.network import Network

    with pytest.raises(ValueError, match="float32"):
        Network((4, 2), ("softmax",), "cross_entropy", np.dtype("float64"), True)


@pytest.mark.skipif(not _cpu.bf16_hardware_supported(),
                    reason="this CPU has no avx512_bf16: vdpbf16ps is not tested here, its "
                    "paired layout is (the 'paired' kernel)")
def test_vdpbf16ps_is_present_where_the_cpu_has_it():
    assert "vdpbf16ps" in MODES
    assert bf16.hardware_status() is None  # it passed the probe, so fit uses it


def test_hardware_status_says_why():
    status = bf16.hardware_status()
    if _cpu.bf16_hardware_supported():
        assert status is None or "bits" in status or "FASTMLP_BF16_HARDWARE" in status
    else:
        assert status == "this CPU has no avx512_bf16"


# ---------------------------------------------------------------- models
@pytest.mark.parametrize("n_threads", [1, 2])
def test_bf16_fingerprint_at_every_level_kernel_and_thread_count(n_threads, level,
                                                                  bf16_kernel, threads):
    assert fixed_run(n_threads, dtype="mixed_bfloat16") == FINGERPRINT_BF16


def small_model(dtype, backend="cpu"):
    return fastmlp.MLP([30, 24, 5], ["tanh", "softmax"], backend=backend, dtype=dtype, seed=2)


def small_data(n=96):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 30)), rng.integers(0, 5, n)


def test_bf16_compiled_step_is_bitwise_the_python_loop():
    x, y = small_data()
    models = []
    for compiled in (True, False):
        model = small_model("mixed_bfloat16")
        if not compiled:
            model.make_runner = lambda *a, m=model: training.BackpropRunner(
                get_backend("cpu"), m.network, m.params, *a[:5], m.shuffle_rng)
        model.fit(x, y, epochs=2, batch_size=16, optimizer=optim.Adam(1e-2), verbose=0)
        models.append(model)
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bf16_differs_from_float32_and_stays_close_to_it():
    x, y = small_data()
    runs = {}
    for dtype in ("float32", "mixed_bfloat16"):
        model = small_model(dtype)
        model.fit(x, y, epochs=1, batch_size=16, optimizer=optim.SGD(0.1), verbose=0)
        runs[dtype] = model.get_weights()
    for a, b in zip(runs["mixed_bfloat16"], runs["float32"]):
        assert a.dtype == np.float32
        assert max_rel_err(a, b) < 0.05
    assert any(not np.array_equal(a, b) for a, b in zip(runs["mixed_bfloat16"],
                                                       runs["float32"]))


def test_bf16_gradients_match_the_numpy_reference_and_float32():
    x, y = small_data(40)
    grads = {}
    for backend, dtype in (("cpu", "mixed_bfloat16"), ("numpy", "mixed_bfloat16"),
                           ("cpu", "float32")):
        _, grads[backend, dtype] = small_model(dtype, backend).loss_and_gradients(x, y)
    for a, b, c in zip(grads["cpu", "mixed_bfloat16"], grads["numpy", "mixed_bfloat16"],
                       grads["cpu", "float32"]):
        assert max_rel_err(a, b) < 1e-5   # the same rounding, another summation order
        assert max_rel_err(a, c) < 3e-2   # bfloat16 keeps 8 bits of each operand


def test_bf16_policy_in_the_api(tmp_path):
    model = small_model("mixed_bfloat16")
    assert model.dtype == np.float32 and model.dtype_policy == "mixed_bfloat16"
    assert model.compute_dtype == "bfloat16" and small_model("float32").compute_dtype == \
        "float32"
    assert model.get_config()["dtype"] == "mixed_bfloat16"
    assert "mixed_bfloat16" in model.summary(print_fn=None)
    x, y = small_data()
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = fastmlp.load(path)
    assert loaded.dtype_policy == "mixed_bfloat16"
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    f32 = model.astype("float32")
    assert f32.dtype_policy == "float32" and not f32.network.bf16
    assert not np.array_equal(f32.predict_proba(x), model.predict_proba(x))


def test_bf16_errors_are_clear():
    with pytest.raises(ValueError, match="not supported on the cuda backend"):
        small_model("mixed_bfloat16", backend="cuda")
    with pytest.raises(ValueError, match="mixed_bfloat16"):
        small_model("bfloat16")
