"""The cuda backend: every kernel against the NumPy reference, backprop against the
numerical derivative, and training against the numpy backend.

Without a GPU these run in Numba's CUDA simulator (set up in conftest.py), on small
odd sizes; on an NVIDIA GPU the same tests run on it, and the ``gpu``-marked ones
(full training parity) run too.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import CUDA_SIMULATOR, max_rel_err, tol, update_cases

import fastmlp
from fastmlp.backends import get_backend, numpy_backend
from fastmlp.functions import RELU, SGD, SIGMOID, TANH

cb = pytest.importorskip("fastmlp.backends.cuda.backend",
                         reason="numba-cuda is missing (it comes with the test extra)")
from cuda_twins import permutation_host  # noqa: E402  (needs numba-cuda)

from fastmlp.backends.cuda import kernels as K  # noqa: E402
from fastmlp.backends.cuda import ops, shuffle  # noqa: E402

gpu = pytest.mark.skipif(CUDA_SIMULATOR, reason="needs an NVIDIA GPU")

DTYPES = ["float64", "float32"]
ACTS = list(fastmlp.functions.ACTIVATIONS)


def rand(shape, dtype, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def dev(a):
    return cb.to_device(a)


# ------------------------------------------------------------------ the matrix product

def launch_gemm(A, B, C, V, bias, act, M, N, Kd, ta, tb, mode, idx, tm, ts):
    kern = K.gemm(np.dtype(C.dtype), tm, ta, tb, idx is not None, mode, ts)
    bm = ts * tm
    kern[(-(-N // bm), -(-M // bm)), (ts, ts)](
        A, dev(np.zeros(1, np.int32)) if idx is None else idx, B, C,
        ops._dummy(C.dtype, 2) if V is None else V,
        ops._dummy(C.dtype, 1) if bias is None else bias, act, M, N, Kd)


# The register tiles 2, 4, 8 with the simulator's small blocks, and the GPU's block
# of 16 x 16 threads (slow in the simulator). Each case has 2 x 2 blocks with ragged
# edges and two K tiles; the activations are covered through the backend's functions.
TILES = [(2, 4), (4, 4), (8, 4), (2, 16)]


def sizes(tm, ts):
    bm = tm * ts
    return bm + 3, 19, bm + 5


@pytest.mark.parametrize("tm,ts", TILES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_product_matches_numpy(tm, ts, dtype):
    n, k, m = sizes(tm, ts)
    x, W, b = rand((n + 5, k), dtype, 1), rand((k, m), dtype, 2), rand(m, dtype, 3)
    idx = np.random.default_rng(4).permutation(n + 5)[:n].astype(np.int32)
    out = cb.empty((n, m), dtype)
    launch_gemm(dev(x), dev(W), out, None, dev(b), SIGMOID, n, m, k, False, False, K.FWD,
                dev(idx), tm, ts)
    ref = np.empty((n, m), dtype)
    numpy_backend.dense_forward(x[idx], W, b, ref, SIGMOID)
    assert max_rel_err(out.copy_to_host(), ref) < tol(dtype, k)


@pytest.mark.parametrize("tm,ts", TILES[:3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_input_product_matches_numpy(tm, ts, dtype):
    n, k, m = sizes(tm, ts)
    g, W = rand((n, m), dtype, 1), rand((k, m), dtype, 2)
    act_out = rand((n, k), dtype, 3, 0.05, 0.95)  # a valid activation value
    gx = cb.empty((n, k), dtype)
    launch_gemm(dev(g), dev(W), gx, dev(act_out), None, TANH, n, k, m, False, True,
                K.BWD_IN, None, tm, ts)
    ref = np.empty((n, k), dtype)
    numpy_backend.dense_backward_input(g, W, ref, TANH, act_out)
    assert max_rel_err(gx.copy_to_host(), ref) < tol(dtype, m)


@pytest.mark.parametrize("tm,ts", TILES[:3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gather", [False, True])
def test_weight_gradient_product_matches_numpy(tm, ts, dtype, gather):
    k, n, m = sizes(tm, ts)
    x, g = rand((n + 3, k), dtype, 1), rand((n, m), dtype, 2)
    idx = np.random.default_rng(5).permutation(n + 3)[:n].astype(np.int32) if gather \
        else np.arange(n, dtype=np.int32)
    gW, gb = cb.empty((k, m), dtype), cb.empty(m, dtype)
    launch_gemm(dev(x if gather else x[:n]), dev(g), gW, None, gb, 0, k + 1, m, n, True,
                False, K.BWD_W, dev(idx) if gather else None, tm, ts)
    rW, rb = np.empty((k, m), dtype), np.empty(m, dtype)
    numpy_backend.dense_backward_weight(x[idx], g, rW, rb)
    assert max_rel_err(gW.copy_to_host(), rW) < tol(dtype, n)
    assert max_rel_err(gb.copy_to_host(), rb) < tol(dtype, n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_backend_dense_functions_match_numpy(dtype, act):
    # The backend's own entry points: tile choice, softmax outside the product.
    n, k, m = 11, 13, 7
    x, W, b, g = (rand((n, k), dtype, 1), rand((k, m), dtype, 2), rand(m, dtype, 3),
                  rand((n, m), dtype, 4))
    a = fastmlp.functions.activation_id(act)
    out, ref = cb.empty((n, m), dtype), np.empty((n, m), dtype)
    cb.dense_forward(dev(x), dev(W), dev(b), out, a)
    numpy_backend.dense_forward(x, W, b, ref, a)
    assert max_rel_err(out.copy_to_host(), ref) < tol(dtype, k + m)
    gx, rgx = cb.empty((n, k), dtype), np.empty((n, k), dtype)
    below = rand((n, k), dtype, 5, 0.05, 0.95)
    if act == "softmax":
        below /= below.sum(axis=1, keepdims=True)
    cb.dense_backward_input(dev(g), dev(W), gx, a, dev(below))
    numpy_backend.dense_backward_input(g, W, rgx, a, below)
    assert max_rel_err(gx.copy_to_host(), rgx) < tol(dtype, m + k)


def test_tile_choice_gives_every_multiprocessor_a_block(monkeypatch):
    monkeypatch.setattr(ops, "_SMS", 132)
    monkeypatch.setattr(ops, "TS", 16)
    assert ops.tile_for(8192, 512) == 8  # 64 x 4 blocks of 128
    assert ops.tile_for(128, 512) == 2  # 4 x 16 blocks of 32: too few for anything larger
    assert ops.tile_for(1024, 1024) == 4  # 16 x 16 blocks of 64 (8 x 8 of 128: too few)
    assert ops.tile_for(785, 512) == 2  # the keras weight gradient: 13 x 8 blocks of 64


# ------------------------------------------------------------------ elementwise kernels

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_activations_match_numpy(dtype, act):
    a = fastmlp.functions.activation_id(act)
    z = rand((9, 5), dtype, 1, -30, 30)  # large magnitudes: the stable forms
    out, ref = cb.empty(z.shape, dtype), np.empty_like(z)
    cb.activation_forward(a, dev(z), out)
    numpy_backend.activation_forward(a, z, ref)
    assert max_rel_err(out.copy_to_host(), ref) < tol(dtype, 5)
    g = rand(z.shape, dtype, 2)
    gd = dev(g)
    cb.activation_backward(a, dev(ref), gd)
    numpy_backend.activation_backward(a, ref, g)
    assert max_rel_err(gd.copy_to_host(), g) < tol(dtype, 5)


# Every loss with every output it accepts, for 6 outputs and (but softmax) for 1.
LOSS_OUTPUTS = [(loss, act, m) for loss, acts in fastmlp.functions.LOSS_OUTPUTS.items()
                for act in acts for m in (1, 6) if not (act == "softmax" and m == 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,act,m", LOSS_OUTPUTS)
def test_loss_gradient_and_hits_match_numpy(dtype, loss, act, m):
    n = 13
    z = rand((n, m), dtype, 1, -4, 4)
    labels = np.random.default_rng(2).integers(0, max(m, 2), n)
    y = (np.eye(max(m, 2))[labels][:, :m] if m > 1 else (labels[:, None] == 1)).astype(dtype)
    lid, aid = fastmlp.functions.loss_id(loss), fastmlp.functions.activation_id(act)
    g_ref, rl_ref, a_ref = np.empty_like(z), np.empty(n, dtype), np.empty_like(z)
    total_ref, hits_ref = numpy_backend.loss_grad(lid, aid, z, a_ref, y, g_ref, rl_ref)
    a, g, rl = cb.empty((n, m), dtype), cb.empty((n, m), dtype), cb.empty(n, dtype)
    total, hits = cb.loss_grad(lid, aid, dev(z), a, dev(y), g, rl)
    assert hits == hits_ref
    assert abs(total - total_ref) <= tol(dtype, m + n) * abs(total_ref)
    for d, r in ((a, a_ref), (g, g_ref), (rl, rl_ref)):
        assert max_rel_err(d.copy_to_host(), r) < tol(dtype, m)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,rule,n_slots,hyper", list(update_cases()))
@pytest.mark.parametrize("l2", [0.0, 0.01])
@pytest.mark.parametrize("into_out", [False, True])
def test_updates_match_numpy(dtype, name, rule, n_slots, hyper, l2, into_out):
    n, n_decayed = 77, 50
    p, g = rand(n, dtype, 1), rand(n, dtype, 2)
    state = [rand(n, dtype, 3 + i, 0.0, 0.5) for i in range(n_slots)]
    pad = [None] * (2 - n_slots)
    ref_p, ref_state = p.copy(), [s.copy() for s in state]
    numpy_backend.update(rule, ref_p, g, *ref_state, *pad, hyper, l2, n_decayed)
    dp, ds = dev(p), [dev(s) for s in state]
    out = cb.empty(n, dtype) if into_out else None
    cb.update(rule, dp, dev(g), *ds, *pad, hyper, l2, n_decayed, out)
    got = (out if into_out else dp).copy_to_host()
    assert max_rel_err(got, ref_p) < tol(dtype)
    if into_out:
        np.testing.assert_array_equal(dp.copy_to_host(), p)  # p left as it was
    for d, r in zip(ds, ref_state):
        assert max_rel_err(d.copy_to_host(), r) < tol(dtype)


def test_update_with_check_skips_a_non_finite_step_and_flags_it():
    p, g = rand(10, "float64", 1), rand(10, "float64", 2)
    acc = dev(np.array([[1.0, 0.0], [np.inf, 0.0], [2.0, 0.0]]))
    flag = dev(np.zeros(1, np.int32))
    dp, out = dev(p), cb.empty(10, "float64")
    hyper = fastmlp.optim.SGD(0.1).kernel_hyper(1)
    cb.update(SGD, dp, dev(g), None, None, hyper, 0.0, 10, out, (acc, 0, flag))
    np.testing.assert_allclose(out.copy_to_host(), p - 0.1 * g)
    for s in (1, 2):  # the bad step, and one after it: both leave p alone
        cb.update(SGD, out, dev(g), None, None, hyper, 0.0, 10, dp, (acc, s, flag))
        np.testing.assert_array_equal(dp.copy_to_host(), p)
    assert flag.copy_to_host()[0] == 2


def test_take_rows_and_fill():
    src = rand((9, 4), "float32", 1)
    idx = np.array([8, 0, 3, 3], np.int32)
    out = cb.empty((4, 4), "float32")
    cb.take_rows(dev(src), idx, out)
    np.testing.assert_array_equal(out.copy_to_host(), src[idx])
    z = cb.zeros((3, 5), "float64")
    np.testing.assert_array_equal(z.copy_to_host(), np.zeros((3, 5)))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 60001])
def test_device_permutation_is_a_permutation_and_matches_host_twin(n):
    keys = (123, 2**32 - 1, 0, 987654321)
    lbits, rbits = shuffle.split_bits(n)
    got = permutation_host(n, keys)
    assert np.array_equal(np.sort(got), np.arange(n))
    if n <= 1000:  # the simulator runs one Python thread per element
        order = cb.empty(n, np.int32)
        shuffle.permutation[ops.blocks(n), ops.TPB](order, n, lbits, rbits, *keys, True)
        np.testing.assert_array_equal(order.copy_to_host(), got)
    if n >= 64:
        assert (got != np.arange(n)).mean() > 0.9  # it does shuffle
        other = permutation_host(n, (1, 2, 3, 4))
        assert (got != other).mean() > 0.9


# ------------------------------------------------------------------ the model on the backend

def small_data(n=21, features=7, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, features)), np.arange(n) % classes


NETS = [
    dict(layers=[7, 5, 3], activations=["tanh", "softmax"]),
    dict(layers=[7, 6, 3], activations=["leaky_relu", "softmax"]),
    dict(layers=[7, 6, 4, 1], activations=["relu", "sigmoid", "sigmoid"],
         loss="binary_cross_entropy"),
]


def data_for(cfg, n):
    x, y = small_data(n=n)
    return x, (y % 2 if cfg["layers"][-1] == 1 else y)


@pytest.mark.parametrize("cfg", NETS)
def test_gradcheck_cuda_backend(cfg):
    x, y = data_for(cfg, 9)
    model = fastmlp.MLP(backend="cuda", dtype="float64", seed=3, **cfg)
    errors = fastmlp.gradcheck(model, x, y, max_entries=4)
    assert set(errors) == set(model.param_names)
    assert max(errors.values()) < 1e-6


@pytest.mark.parametrize("cfg", NETS)
def test_inference_and_gradients_match_numpy_backend(cfg):
    x, y = data_for(cfg, 11)
    ref = fastmlp.MLP(backend="numpy", dtype="float64", seed=4, **cfg)
    model = ref.astype(backend="cuda")
    assert max_rel_err(model.predict_proba(x, batch_size=4), ref.predict_proba(x)) < 1e-12
    np.testing.assert_array_equal(model.predict(x), ref.predict(x))
    ev, rev = model.evaluate(x, y, batch_size=5), ref.evaluate(x, y)
    assert ev["accuracy"] == rev["accuracy"] and abs(ev["loss"] - rev["loss"]) < 1e-12
    loss, grads = model.loss_and_gradients(x, y)
    rloss, rgrads = ref.loss_and_gradients(x, y)
    assert abs(loss - rloss) < 1e-12
    for g, r in zip(grads, rgrads):
        assert isinstance(g, np.ndarray) and max_rel_err(g, r) < 1e-12
    # The host weights are untouched by all that.
    for a, b in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(fastmlp.optim.OPTIMIZERS))
def test_fit_matches_numpy_backend(name):
    x, y = small_data()
    ref = fastmlp.MLP([7, 5, 3], ["tanh", "softmax"], backend="numpy", dtype="float64", seed=1)
    model = ref.astype(backend="cuda")
    kw = dict(epochs=2, batch_size=8, optimizer=name, l2=0.01, shuffle=False, verbose=0,
              validation_data=(x[:5], y[:5]))
    h_ref, h = ref.fit(x, y, **kw), model.fit(x, y, **kw)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        assert max_rel_err(a, b) < 1e-12
    for key in h_ref.history:
        np.testing.assert_allclose(h.history[key], h_ref.history[key], rtol=1e-12)
    assert h.steps == h_ref.steps == 6
    assert model.optimizer.iterations == 6
    # A second fit goes on from the optimizer's state, as on the host.
    ref.fit(x, y, **kw)
    model.fit(x, y, **kw)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        assert max_rel_err(a, b) < 1e-12


def test_a_users_optimizer_subclass_runs_on_the_gpu():
    # Its kernel rule comes with the class (rules were once looked up by name).
    class Gentle(fastmlp.optim.RMSprop):
        name = "gentle"

        def __init__(self):
            super().__init__(lr=0.005, rho=0.8)

    x, y = small_data()
    ref = fastmlp.MLP([7, 5, 3], ["tanh", "softmax"], backend="numpy", dtype="float64", seed=1)
    model = ref.astype(backend="cuda")
    for m in (ref, model):
        m.fit(x, y, epochs=1, batch_size=8, optimizer=Gentle(), shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        assert max_rel_err(a, b) < 1e-12


def test_fit_float32_three_layers_matches_numpy_backend():
    x, y = small_data(n=19)
    cfg = NETS[1]
    ref = fastmlp.MLP(backend="numpy", dtype="float32", seed=5, **cfg)
    model = ref.astype(backend="cuda")
    kw = dict(epochs=2, batch_size=6, optimizer="rmsprop", lr=0.01, shuffle=False, verbose=0)
    ref.fit(x, y % 2, **kw)
    model.fit(x, y % 2, **kw)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        assert max_rel_err(a, b) < 1e-4


def test_shuffled_fit_uses_the_device_permutation_drawn_from_the_seed():
    x, y = small_data(n=20)
    model = fastmlp.MLP([7, 5, 3], ["tanh", "softmax"], backend="cuda", dtype="float64",
                        seed=6)
    ref = model.astype(backend="numpy")
    model.fit(x, y, epochs=1, batch_size=6, optimizer="sgd", verbose=0)
    # The same epoch on the host: the keys come from the model's shuffling stream.
    keys = np.random.default_rng([6, 1]).integers(0, 2**32, size=4, dtype=np.uint64)
    order = permutation_host(20, [int(k) for k in keys])
    assert not np.array_equal(order, np.arange(20))
    ref.fit(x[order], y[order], epochs=1, batch_size=6, optimizer="sgd", shuffle=False,
            verbose=0)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        assert max_rel_err(a, b) < 1e-12
    # And the same seed gives the same training.
    again = fastmlp.MLP([7, 5, 3], ["tanh", "softmax"], backend="cuda", dtype="float64",
                        seed=6)
    again.fit(x, y, epochs=1, batch_size=6, optimizer="sgd", verbose=0)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


# (The NaN test of test_training.py runs on every backend, this one included.)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_in_the_middle_of_an_epoch():
    x, y = small_data(n=24)
    cfg = dict(layers=[7, 5, 3], activations=["linear", "linear"], loss="mse", seed=2,
               dtype="float64")
    # A host run finds the step at which this diverges; the GPU must stop at the same one.
    outcome = {}
    for backend in ("numpy", "cuda"):
        model = fastmlp.MLP(backend=backend, **cfg)
        with pytest.raises(FloatingPointError) as info:
            model.fit(x, np.eye(3)[y] * 1e3, epochs=3, batch_size=3, optimizer="sgd", lr=0.5,
                      shuffle=False, verbose=0)
        outcome[backend] = (str(info.value), model.history.steps, model.get_weights())
    # (The non-finite value itself, inf or nan, depends on the order of the sums.)
    where = {k: re.search(r"at epoch \d+, step \d+", v[0]).group(0) for k, v in outcome.items()}
    assert where["cuda"] == where["numpy"] and outcome["cuda"][1] == outcome["numpy"][1]
    assert where["cuda"] == "at epoch 1, step 6"  # mid-epoch, with steps after it
    for a, b in zip(outcome["cuda"][2], outcome["numpy"][2]):
        assert max_rel_err(a, b) < 1e-9


def test_ctrl_c_on_the_gpu_keeps_the_queued_steps(monkeypatch):
    x, y = small_data(n=64)
    model = fastmlp.MLP([7, 8, 3], ["relu", "softmax"], backend="cuda", dtype="float64",
                        seed=2)
    ref = model.astype(backend="numpy")
    calls = {"n": 0}
    real = ops.update

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # before the 7th step's update is queued
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "update", interrupting)
    with pytest.warns(UserWarning, match="interrupted"):
        h = model.fit(x, y, epochs=5, batch_size=16, optimizer="sgd", lr=0.1, shuffle=False,
                      verbose=0)
    assert h.interrupted and h.steps == 6
    assert len(h.history["loss"]) == 2  # one full epoch, one partial (2 of 4 steps)
    ref.fit(x, y, epochs=1, batch_size=16, optimizer="sgd", lr=0.1, shuffle=False, verbose=0)
    ref.fit(x[:32], y[:32], epochs=1, batch_size=16, optimizer="sgd", lr=0.1, shuffle=False,
            verbose=0)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        assert max_rel_err(a, b) < 1e-12
    assert h.history["loss"][1] == pytest.approx(
        ref.history.history["loss"][0], rel=1e-12)


def test_not_enough_gpu_memory_is_a_clear_error():
    x, y = small_data()
    model = fastmlp.MLP([7, 5, 3], ["tanh", "softmax"], backend="cuda")
    X, Y = model.check_xy(x, y)
    with pytest.raises(MemoryError, match=r"needs about .* MiB .* free"):
        cb.Trainer(model.network, model.params, X, Y, fastmlp.optim.get("sgd"), 0.0, 8,
                   model.shuffle_rng, free_bytes=100)


@pytest.mark.parametrize("layers,acts", [([7, 5, 3], ["relu", "softmax"]),
                                         ([7, 6, 5, 3], ["tanh", "sigmoid", "softmax"]),
                                         ([7, 3], ["softmax"])])
def test_a_training_step_makes_the_stated_number_of_launches(monkeypatch, layers, acts):
    x, y = small_data(n=16)
    launches = []
    # Each of these launches one kernel per call.
    for fn in ("_gemm", "loss_grad", "update", "_activation", "fill"):
        real = getattr(ops, fn)

        def counted(*args, real=real, fn=fn, **kwargs):
            launches.append(fn)
            return real(*args, **kwargs)

        monkeypatch.setattr(ops, fn, counted)
    monkeypatch.setattr(shuffle, "permutation", _CountedLaunch(shuffle.permutation, launches))
    model = fastmlp.MLP(layers, acts, backend="cuda")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # 2 steps
    per_epoch = ["fill", "fill", "permutation"]  # the accumulator, the flag, the shuffle
    assert sorted(launches[:3]) == sorted(per_epoch)
    assert len(launches) - 3 == 2 * cb.launches_per_step(len(layers) - 1)
    assert cb.launches_per_step(2) == 7  # the keras recipe


class _CountedLaunch:
    def __init__(self, kernel, log):
        self.kernel, self.log = kernel, log

    def __getitem__(self, config):
        self.log.append("permutation")
        return self.kernel[config]


def test_info_names_the_gpu_or_the_simulator():
    info = cb.device_info()
    assert info["gpu"]
    text = subprocess.run([sys.executable, "-m", "fastmlp", "info"], capture_output=True,
                          text=True, check=True).stdout
    assert "backend cuda" in text and "gpu" in text


NO_GPU = """
import os, sys
os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
{setup}
import fastmlp
try:
    fastmlp.MLP([3, 2], ["softmax"], backend="cuda")
except RuntimeError as exc:
    print(exc)
"""


@pytest.mark.skipif(not CUDA_SIMULATOR, reason="this machine has a GPU")
def test_no_gpu_is_a_clear_error():
    out = subprocess.run([sys.executable, "-c", NO_GPU.format(setup="")], capture_output=True,
                         text=True, check=True).stdout
    assert "backend 'cuda' is not available" in out and "no CUDA GPU or driver" in out


def test_missing_numba_cuda_is_a_clear_error():
    setup = "sys.modules['numba'] = None"  # as if numba were not installed
    out = subprocess.run([sys.executable, "-c", NO_GPU.format(setup=setup)],
                         capture_output=True, text=True, check=True).stdout
    assert "pip install 'fastmlp[cuda]'" in out


def test_get_backend_lists_cuda():
    assert "cuda" in fastmlp.backends.BACKENDS
    assert get_backend("cuda") is cb


# ------------------------------------------------------------------ on a GPU only

@gpu
@pytest.mark.slow
def test_keras_recipe_on_fashion_mnist_matches_cpu_within_half_a_point(shared_data):
    (x, y), (xt, yt) = fastmlp.datasets.load("fashion-mnist", shared_data / "fashion-mnist")
    recipe = fastmlp.recipes.get("keras")
    x, xt = recipe.inputs(x, "float32"), recipe.inputs(xt, "float32")
    accuracy = {}
    for backend in ("cpu", "cuda"):
        model = recipe.build(backend=backend, seed=0)
        model.fit(x, recipe.targets(y, "float32"), verbose=0, **recipe.fit_args())
        accuracy[backend] = model.evaluate(xt, recipe.targets(yt, "float32"))["accuracy"]
    assert abs(accuracy["cuda"] - accuracy["cpu"]) <= 0.005, accuracy


@gpu
def test_large_products_on_the_gpu_match_numpy():
    # Sizes the simulator cannot run: every tile size on a real multiprocessor count.
    for n, k, m in [(8192, 784, 512), (128, 784, 512), (1000, 512, 10)]:
        x, W, b = rand((n, k), "float32", 1), rand((k, m), "float32", 2), rand(m, "float32", 3)
        out, ref = cb.empty((n, m), "float32"), np.empty((n, m), "float32")
        cb.dense_forward(dev(x), dev(W), dev(b), out, RELU)
        numpy_backend.dense_forward(x.astype(np.float64), W.astype(np.float64),
                                    b.astype(np.float64), ref, RELU)
        assert max_rel_err(out.copy_to_host(), ref) < 1e-5


# ------------------------------------------------------------------ fastmlp profile

def run_cli(argv):
    import io

    from fastmlp.cli import main

    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


def test_profile_command_both_backends(tmp_path):
    path = tmp_path / "p.json"
    code, out = run_cli(["profile", "--backend", "cpu,cuda", "--batch-sizes", "4,7",
                         "--layers", "13,8,3", "--samples", "20", "--repeats", "2",
                         "--json", str(path)])
    assert code == 0, out
    result = json.loads(path.read_text())
    assert set(result["backends"]) == {"cpu", "cuda"}
    for entry in result["backends"].values():
        assert entry["ceilings"]["gflops"] > 0 and entry["ceilings"]["gbs"] > 0
        assert list(entry["batches"]) == ["4", "7"]
        for rec in entry["batches"].values():
            names = [k["kernel"] for k in rec["kernels"]]
            assert names[-1].startswith("rmsprop update") and all(k["us"] > 0 for k in
                                                                   rec["kernels"])
            # The calls of one training step: on the host two gathers come first.
            assert names[-7:] == ["forward 1 (13x8 relu)", "forward 2 (8x3)",
                                  "softmax + cross_entropy gradient", "weight grad 2 (8x3)",
                                  "input grad 1 (3->8, relu')", "weight grad 1 (13x8)",
                                  names[-1]]
            assert rec["steps"] in (5, 3)  # 20 samples in batches of 4 or 7
            assert rec["epoch_s"] > 0
    # The cpu step in parts: each thread's time in each, the forward products and the
    # weight gradients (with their updates) among them.
    from fastmlp import _cpu

    for rec in result["backends"]["cpu"]["batches"].values():
        ph = rec["phases"]
        assert ph["parts"] == list(_cpu.step_phases()) and ph["step_us"] > 0
        us = np.array(ph["us"])
        assert us.shape[1] == len(ph["parts"]) and (us >= 0).all()
        for part in ("forward products", "weight gradients and updates"):
            assert us[0, ph["parts"].index(part)] > 0
    assert "the compiled step in parts" in out and "waiting at barriers" in out
    assert result["backends"]["cuda"]["batches"]["4"]["phases"] is None
    assert result["backends"]["cuda"]["launches_per_step"] == 7
    assert "gpu_overtakes_cpu_at" in result
    assert "kernel launches per training step: 7" in out
    assert "epoch seconds by batch size" in out and "the GPU's epoch is faster" in out


@pytest.mark.parametrize("argv,message", [
    (["--backend", "numpy"], "unknown backend numpy; valid backends are: cpu, cuda"),
    (["--batch-sizes", "0,8"], "--batch-sizes must be comma-separated values of at least 1"),
    (["--layers", "784"], "--layers needs at least"),
])
def test_profile_bad_arguments(argv, message, capsys):
    code, _ = run_cli(["profile", *argv])
    assert code != 0 and message in capsys.readouterr().err


def test_profile_plot_without_matplotlib(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _ = run_cli(["profile", "--backend", "cpu", "--plot", "x.png"])
    assert code != 0 and "pip install 'fastmlp[plot]'" in capsys.readouterr().err


def test_crossover_is_the_batch_from_which_the_gpu_stays_faster():
    from fastmlp.tools.profile import crossover

    def res(cpu, gpu):
        return {"backends": {
            "cpu": {"batches": {b: {"epoch_s": t} for b, t in cpu.items()}},
            "cuda": {"batches": {b: {"epoch_s": t} for b, t in gpu.items()}}}}

    assert crossover(res({32: 1, 128: 1, 1024: 1}, {32: 2, 128: 0.5, 1024: 0.1})) == 128
    assert crossover(res({32: 1, 128: 1}, {32: 0.5, 128: 2})) is None
    assert crossover(res({32: 1, 128: 1}, {32: 0.5, 128: 0.5})) == 32


# ------------------------------------------------------------------ compiled for a real GPU

PTX = """
import json, os
os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
from numba.cuda.cudadrv import nvvm
try:
    nvvm.NVVM()
except Exception as exc:
    print(json.dumps({"no_nvvm": str(exc)}))
else:
    from fastmlp.tools import cuda_diagnostics
    print(json.dumps(cuda_diagnostics.ptx_report((9, 0))))
"""


@pytest.mark.slow
def test_every_kernel_compiles_for_hopper_without_local_memory():
    # The simulator runs the kernels as Python: only Numba's CUDA compiler checks their
    # typing and code generation. It needs NVVM (the cuda extra), not a GPU.
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", PTX], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if "no_nvvm" in report:
        pytest.skip(f"NVVM is not installed (pip install '.[cuda]'): {report['no_nvvm']}")
    assert len(report) == 2 * (3 * 5 + 2 + 1 + len(fastmlp.functions.RULES) + 1) + 2
    assert {k: v for k, v in report.items() if v} == {}
