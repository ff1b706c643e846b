"""The cpu backend's compiled training step against the Python loop over the same kernels."""

import os
import signal
import threading

import numpy as np
import pytest

import fastmlp
from fastmlp import optim, training
from fastmlp.backends import cpu_backend, get_backend, numpy_backend
from fastmlp.callbacks import Callback
from fastmlp.functions import GRAD_FLOOR, HYPER_PARAMETERS, RMSPROP, RULES

OPTIMIZERS = [optim.SGD(0.05), optim.Momentum(0.05), optim.Nesterov(0.05),
              optim.RMSprop(1e-3), optim.Adam(1e-3), optim.AdamW(1e-3, weight_decay=0.1)]

NETWORKS = [
    ([20, 16, 4], ["relu", "softmax"], "cross_entropy"),
    ([20, 12, 8, 1], ["tanh", "leaky_relu", "sigmoid"], "binary_cross_entropy"),
    ([20, 9, 7, 3], ["sigmoid", "softmax", "linear"], "mse"),
]


def data(n, features, outputs, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = rng.integers(0, max(outputs, 2), n)
    return x, y if outputs > 1 else y.reshape(-1, 1).astype(float)


def python_runner(model, x, y, opt, l2, batch):
    return training.BackpropRunner(get_backend("cpu"), model.network, model.params, x, y,
                                   opt, l2, batch, model.shuffle_rng)


def train(layers, acts, loss, dtype, opt, l2, compiled, epochs=3, batch=16, n=100):
    model = fastmlp.MLP(layers, acts, loss=loss, backend="cpu", dtype=dtype, seed=3)
    if not compiled:
        model.make_runner = lambda *a: python_runner(model, *a)
    x, y = data(n, layers[0], layers[-1])
    h = model.fit(x, y, epochs=epochs, batch_size=batch, optimizer=opt, l2=l2, verbose=0)
    return model, h


def assert_same_training(results):
    """The two (model, history) pairs trained to the same bits."""
    (m1, h1), (m2, h2) = results
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    if m1.optimizer.state is not None:
        np.testing.assert_array_equal(m1.optimizer.state, m2.optimizer.state)
    assert h1.history["loss"] == h2.history["loss"]
    assert h1.history["accuracy"] == h2.history["accuracy"]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.name)
@pytest.mark.parametrize("net", NETWORKS, ids=lambda n: "-".join(n[1]))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_step_is_bitwise_the_python_loop(opt, net, dtype):
    # 100 samples in batches of 16: a short last batch in every shuffled epoch.
    results = [train(*net, dtype, optim.from_config(opt.get_config()), 1e-3, compiled)
               for compiled in (True, False)]
    assert_same_training(results)
    (m1, h1), (m2, _) = results
    assert m1.optimizer.iterations == m2.optimizer.iterations == h1.steps == 3 * 7


@pytest.mark.parametrize("opt", [optim.RMSprop(1e-3), optim.AdamW(1e-3, weight_decay=0.1)],
                         ids=lambda o: o.name)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("batch", [600, 200])
def test_update_fused_into_split_products_is_bitwise_the_python_loop(opt, n_threads, batch,
                                                                      threads):
    # The compiled step updates each weight block in its gradient's epilogue: here with
    # batches of 600 (three k panels before a block is final, summed in the gradient)
    # or 200 (one panel: each block summed in the thread's scratch, 3 blocks of the
    # 300 rows), products split between threads, edge tiles (40 and 3 columns) and
    # L2, against the separate update.
    fastmlp.set_num_threads(n_threads)
    results = [train([300, 40, 3], ["relu", "softmax"], "cross_entropy", "float32",
                     optim.from_config(opt.get_config()), 1e-3, compiled, epochs=2,
                     batch=batch, n=1300)
               for compiled in (True, False)]
    assert_same_training(results)


@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("net", [
    ([30, 70, 50, 4], ["sigmoid", "softmax", "softmax"], "cross_entropy"),
    ([30, 70, 50, 1], ["tanh", "softmax", "sigmoid"], "binary_cross_entropy"),
], ids=["hidden-softmax", "hidden-softmax-sigmoid-out"])
def test_step_in_one_parallel_region_is_bitwise_the_python_loop(net, n_threads, threads):
    # The compiled step runs its kernels in one parallel region, each split between
    # the threads as the kernel alone splits it: the gathered rows, the loss's rows
    # (in runs of 64: batches of 200 leave a short run), a hidden softmax forward and
    # backward between barriers, and the bias gradients by columns. Three threads on
    # the machine's cores split everything unevenly.
    fastmlp.set_num_threads(n_threads)
    results = [train(*net, "float32", optim.Adam(1e-3), 1e-3, compiled, epochs=2,
                     batch=200, n=900)
               for compiled in (True, False)]
    assert_same_training(results)


@pytest.mark.parametrize("mode", [1, 2], ids=["packed", "in-place"])
def test_step_reading_a_in_place_is_bitwise_the_python_loop(mode, threads, a_in_place):
    # The products' A read where it lies wherever it can (the batch along its rows
    # in the forward product, a row per sample in the weight gradient), or always
    # packed: each gives the Python loop's bits on two threads.
    from fastmlp import _cpu

    fastmlp.set_num_threads(2)
    _cpu._set_a_in_place(mode)
    results = [train([300, 200, 40, 3], ["relu", "tanh", "softmax"], "cross_entropy",
                     "float32", optim.RMSprop(1e-3), 0.0, compiled, epochs=2, batch=130,
                     n=600)
               for compiled in (True, False)]
    assert_same_training(results)


def test_host_workspace_arrays_start_on_cache_lines():
    # The step's arrays start a cache line each (NumPy's start 16 bytes into one), so
    # the kernels' vector loads and stores of their rows never straddle two lines.
    from fastmlp.network import Workspace

    net = fastmlp.MLP([30, 70, 10], ["relu", "softmax"]).network
    for batch in (1, 37, 4096):
        ws = Workspace(net, batch, backward=True, gather=True)
        arrays = [ws.x, ws.y, ws.z, ws.row_loss, *ws.a, *ws.g]
        assert [a.ctypes.data % 64 for a in arrays] == [0] * len(arrays)
        assert ws.x.shape == (batch, 30) and ws.row_loss.shape == (batch,)


def test_step_streaming_the_input_gradient_changes_no_bit(threads, stream):
    # The input gradient through relu written past the caches (non-temporal stores,
    # read by the next product on the other thread) gives the bits of the step that
    # writes it in them, and of the Python loop, on two threads.
    from fastmlp import _cpu

    fastmlp.set_num_threads(2)
    results = []
    for mode, compiled in ((2, True), (1, True), (1, False)):
        _cpu._set_stream(mode)
        results.append(train([300, 64, 10], ["relu", "softmax"], "cross_entropy",
                             "float32", optim.RMSprop(1e-3), 0.0, compiled, epochs=2,
                             batch=130, n=600))
    assert_same_training(results[:2])
    assert_same_training(results[1:])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["rule", "packed", "in-place"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_batch_read_where_it_lies_is_bitwise_the_python_loop(dtype, mode, n_threads, threads,
                                                             a_in_place):
    # A batch whose inputs take more than 512 KiB (200 rows of 700) is not gathered:
    # the first layer's forward product and weight gradient read its rows where they
    # lie in the shuffled training set (gemm.h's fm_gemm_a_rows), whole panels through
    # the rows' pointers and ragged ones packed from them, or all packed. The short
    # last batch of each epoch (100 rows; in float32 only 280 KiB) is gathered again.
    from fastmlp import _cpu

    fastmlp.set_num_threads(n_threads)
    _cpu._set_a_in_place(mode)
    results = [train([700, 60, 5], ["relu", "softmax"], "cross_entropy", dtype,
                     optim.RMSprop(1e-3), 1e-3, compiled, epochs=2, batch=200, n=1300)
               for compiled in (True, False)]
    assert_same_training(results)


def test_update_fused_into_a_transposed_gradient_summed_in_scratch(threads):
    # The output layer's weight gradient (200 x 3) is computed as its transpose and,
    # over batches of 600 (several blocks of k), summed in the scratch and written
    # across the gradient once before its update hook runs.
    results = [train([300, 200, 3], ["relu", "softmax"], "cross_entropy", "float32",
                     optim.RMSprop(1e-3), 0.0, compiled, epochs=2, batch=600, n=1300)
               for compiled in (True, False)]
    assert_same_training(results)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_compiled_step_same_bits_for_any_thread_count(n_threads, threads):
    # Products large enough to be split between threads.
    fastmlp.set_num_threads(2)
    ref, _ = train([300, 256, 10], ["relu", "softmax"], "cross_entropy", "float32",
                   optim.RMSprop(), 0.0, True, epochs=1, batch=128, n=512)
    fastmlp.set_num_threads(n_threads)
    model, _ = train([300, 256, 10], ["relu", "softmax"], "cross_entropy", "float32",
                     optim.RMSprop(), 0.0, True, epochs=1, batch=128, n=512)
    for a, b in zip(ref.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layers,acts,batch", [
    ([300, 256, 10], ["relu", "softmax"], 512),
    ([200, 96, 64, 10], ["sigmoid", "relu", "softmax"], 256),
    ([20, 32, 10], ["tanh", "softmax"], 64)], ids=["split-rows", "deeper", "unsplit"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "mixed_bfloat16"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_bias_gradients_summed_in_the_packing_change_no_bit(layers, acts, batch, dtype,
                                                            n_threads, level, threads,
                                                            bias_sums):
    # A hidden layer's bias gradient, summed as its weight gradient's product packs
    # the layer's gradient (where the threads split the product's rows, or one thread
    # takes it whole and the other sums its columns alone; a bfloat16 product sums
    # each block of the gradient's rows after packing it), against a pass of its own:
    # the same bits, with L2 and a short last batch.
    from fastmlp import _cpu

    fastmlp.set_num_threads(n_threads)
    results = []
    for fused in (True, False):
        _cpu._set_bias_sums(fused)
        model = fastmlp.MLP(layers, acts, backend="cpu", dtype=dtype, seed=3)
        x, y = data(3 * batch + 7, layers[0], layers[-1])
        h = model.fit(x, y, epochs=2, batch_size=batch, optimizer=optim.RMSprop(1e-3),
                      l2=1e-4, verbose=0)
        results.append((model, h))
    assert_same_training(results)


def panel_net(on, dtype="float32"):
    """A net whose first layer a run of 32 steps or more keeps in panels (its 128
    units are a whole number of panels at every level, and a batch of 32 makes its
    forward product split their columns), with the panels switched on or off, its
    data (34 steps an epoch, the last one short) and the list of its runners."""
    from fastmlp import _cpu

    _cpu._set_weight_panels(on)
    model = fastmlp.MLP([200, 128, 10], ["relu", "softmax"], backend="cpu", dtype=dtype,
                        seed=3)
    made = []
    make = model.make_runner
    model.make_runner = lambda *args: made.append(make(*args)) or made[-1]
    x, y = data(33 * 32 + 5, 200, 10)
    return model, x, y, made


@pytest.mark.parametrize("opt", [optim.RMSprop(1e-3), optim.Adam(1e-3),
                                 optim.Momentum(0.05)], ids=lambda o: o.name)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_first_layer_kept_in_panels_changes_no_bit(opt, dtype, n_threads, level, threads,
                                                    weight_panels):
    # The forward product reads the first layer's weights where the update wrote
    # them, in its panels, and the weight gradient splits their columns as the
    # forward does; the run lays them back in rows. The same bits as in rows.
    fastmlp.set_num_threads(n_threads)
    results, widths = [], []
    for on in (True, False):
        model, x, y, made = panel_net(on, dtype)
        h = model.fit(x, y, epochs=2, batch_size=32, optimizer=optim.from_config(
            opt.get_config()), l2=1e-3, verbose=0)
        results.append((model, h))
        widths.append(made[0]._stepper.panel_width(32))
    assert widths[0] > 0 and widths[1] == 0
    assert_same_training(results)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("lr", [40.0, 300.0])  # not finite at step 17, at step 10
def test_non_finite_loss_in_a_run_in_panels_keeps_the_last_good_weights(lr, weight_panels):
    # The rollback to the weights of the last finite loss, from a run in panels:
    # those of the run in rows and of the Python loop.
    kept = []
    for how in ("panels", "rows", "python"):
        model, x, y, _ = panel_net(how == "panels")
        if how == "python":
            model.make_runner = lambda *args, m=model: python_runner(m, *args)
        with pytest.raises(FloatingPointError) as info:
            model.fit(x, y, epochs=1, batch_size=32, optimizer=optim.SGD(lr),
                      shuffle=False, verbose=0)
        kept.append((str(info.value), model.get_weights(), model.optimizer.iterations))
    assert kept[0][2] > 1
    for message, weights, steps in kept[1:]:
        assert (message, steps) == (kept[0][0], kept[0][2])
        for a, b in zip(weights, kept[0][1]):
            np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(w).all() for w in kept[0][1])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_timing_the_steps_parts_changes_no_bit(n_threads, threads):
    # The profiler's table of the step in parts: each thread's seconds added to each
    # part, over steps whose results are those of untimed steps.
    from time import perf_counter

    from fastmlp import _cpu

    fastmlp.set_num_threads(n_threads)
    x, y = data(512, 300, 10)
    x = x.astype(np.float32)
    y = np.eye(10, dtype=np.float32)[y]
    rows = np.random.default_rng(1).permutation(len(x))
    names = _cpu.step_phases()
    runs = []
    for timed in (False, True):
        model = fastmlp.MLP([300, 256, 10], ["relu", "softmax"], backend="cpu", seed=3)
        opt = optim.RMSprop()
        runner = model.make_runner(x, y, opt, 0.0, 128)
        seconds = np.zeros((2, len(names)))
        runner.phase = seconds if timed else None
        t0 = perf_counter()
        runner.run(rows, False)
        runs.append((model, opt, seconds, perf_counter() - t0))
    (plain, plain_opt, untouched, _), (timed, timed_opt, seconds, wall) = runs
    np.testing.assert_array_equal(plain.params.flat, timed.params.flat)
    np.testing.assert_array_equal(plain_opt.state, timed_opt.state)
    assert not untouched.any() and (seconds >= 0).all()
    for part in ("gather", "forward products", "loss and softmax rows",
                 "weight gradients and updates", "input gradients"):
        assert seconds[0, names.index(part)] > 0, part
    assert 0 < seconds[0].sum() <= wall
    runner.phase = np.zeros((2, len(names) - 1))
    with pytest.raises(ValueError, match=f"phase must be threads x {len(names)}"):
        runner.run(rows, False)


def test_fit_uses_the_compiled_step_unless_the_optimizer_updates_in_python():
    model = fastmlp.MLP([4, 3, 2], ["relu", "softmax"], backend="cpu")
    x, y = np.zeros((8, 4), np.float32), np.eye(2, dtype=np.float32)[[0, 1] * 4]

    class Logged(optim.SGD):
        def update(self, *args, **kwargs):
            super().update(*args, **kwargs)

    assert isinstance(model.make_runner(x, y, optim.SGD(), 0.0, 4), cpu_backend.CompiledRunner)
    assert isinstance(model.make_runner(x, y, Logged(), 0.0, 4), training.BackpropRunner)


def test_hyper_parameters_are_taken_step_by_step():
    # Adam's bias corrections change every step, and a subclass may schedule lr per step.
    class Decaying(optim.Adam):
        def hyper_parameters(self, step):
            return {**super().hyper_parameters(step), "lr": self.lr / step}

    runs = [train(*NETWORKS[0], "float64", Decaying(1e-2), 0.0, compiled)[0]
            for compiled in (True, False)]
    for a, b in zip(runs[0].get_weights(), runs[1].get_weights()):
        np.testing.assert_array_equal(a, b)


class EveryThird(Callback):
    batch_every = 3

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_batch_end(self, batch, logs=None):
        self.seen.append((batch, self.model.optimizer.iterations))


def test_batch_callbacks_see_every_nth_step():
    model = fastmlp.MLP([20, 16, 4], ["relu", "softmax"], backend="cpu")
    x, y = data(100, 20, 4)
    cb = EveryThird()
    model.fit(x, y, epochs=2, batch_size=10, callbacks=[cb], verbose=0)
    # 10 steps per epoch: after steps 3, 6, 9 of each, with the weights of those steps.
    assert cb.seen == [(2, 3), (5, 6), (8, 9), (2, 13), (5, 16), (8, 19)]


def test_ctrl_c_between_compiled_steps_keeps_the_completed_ones():
    layers, acts = [64, 256, 10], ["relu", "softmax"]
    x, y = data(4096, 64, 10)
    model = fastmlp.MLP(layers, acts, backend="cpu", seed=1)
    # Python's own Ctrl-C handler, as at a terminal (a shell starting the tests in
    # the background leaves SIGINT ignored).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.warns(UserWarning, match="interrupted"):
            h = model.fit(x, y, epochs=1000, batch_size=8, optimizer="sgd", shuffle=False,
                          verbose=0)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, handler)
    assert h.interrupted and h.steps > 0
    assert model.optimizer.iterations == h.steps
    # The same steps in one go: whole epochs, then the first batches again.
    per_epoch = 4096 // 8
    reference = fastmlp.MLP(layers, acts, backend="cpu", seed=1)
    opt = optim.SGD()
    if h.steps // per_epoch:
        reference.fit(x, y, epochs=h.steps // per_epoch, batch_size=8, optimizer=opt,
                      shuffle=False, verbose=0)
    rest = h.steps % per_epoch
    if rest:
        reference.fit(x[:rest * 8], y[:rest * 8], epochs=1, batch_size=8, optimizer=opt,
                      shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def _update_backends():
    backends = [cpu_backend, numpy_backend]
    if fastmlp.backends.available_backends()["cuda"] is None:  # a GPU or the simulator
        backends.append(get_backend("cuda"))
    return backends


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_state_below_the_smallest_normal_is_stored_as_zero(dtype):
    tiny = np.finfo(dtype).tiny
    p = np.ones(40, dtype)
    g = np.zeros(40, dtype)
    g[:4] = 1e-3
    hyper = tuple(0.9 if k == "rho" else 1e-3 if k in ("lr", "eps") else 0.0
                  for k in HYPER_PARAMETERS)
    states = []
    for be in _update_backends():
        s = be.to_device(np.full(40, tiny * 1.05, dtype))  # 0.9 of it is subnormal
        out = be.empty(40, dtype)
        be.update(RMSPROP, be.to_device(p), be.to_device(g), s, None, hyper, 0.0, 40, out)
        states.append(be.to_host(s, np.empty(40, dtype)))
    for s in states:
        assert (s[4:] == 0).all() and (s[:4] > 0).all()
    np.testing.assert_allclose(states[0], states[1], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", RULES)
def test_a_gradient_below_the_floor_is_read_as_zero(rule, dtype, level):
    # Each rule from zero weights and state at lr 1, so that any gradient it reads
    # moves the weights: just below the floor it moves nothing, at the floor it
    # does, with the L2 term counted (the first 8 entries are decayed).
    floor = GRAD_FLOOR[np.dtype(dtype).name]
    assert floor ** 2 * 2.0 ** -14 >= np.finfo(dtype).tiny  # nothing in the rule subnormal
    below, at = dtype(floor * (1 - 2.0 ** -20)), dtype(floor)
    # Entries 0-7 are decayed (L2 1: the rule reads g + p), 8-15 are not.
    g = np.array([1, -1, 1, -1, 1, -1, -1, 1] * 2, dtype) * below
    g[[2, 3, 10, 11, 14, 15]] = [at, -at, at, -at, at, -at]
    g[[6, 7]] = [-below / 2, below / 2]
    p = np.zeros(16, dtype)
    p[[4, 5, 6, 7, 12, 13, 14, 15]] = np.array([1, -1, 1, -1, 1, -1, 1, -1]) * below
    hyper = tuple({"lr": 1.0, "mu": 0.5, "rho": 0.9, "eps": 1e-7, "beta1": 0.9,
                   "beta2": 0.999, "c1": 10.0, "c2": 1000.0, "wd": 0.0}[k]
                  for k in HYPER_PARAMETERS)
    moved = {}
    for be in _update_backends():
        s1, s2 = be.to_device(np.zeros(16, dtype)), be.to_device(np.zeros(16, dtype))
        out = be.empty(16, dtype)
        be.update(RULES.index(rule), be.to_device(p), be.to_device(g), s1, s2, hyper, 1.0,
                  8, out)
        new = be.to_host(out, np.empty(16, dtype))
        moved[getattr(be, "__name__", repr(be))] = new != p
    # Read: 0, 1 below; 2, 3 at; 4, 5 twice below (with L2); 6, 7 half below (with
    # L2); 8, 9 below; 10, 11 at; 12, 13 below (no L2 here); 14, 15 at.
    expect = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1], bool)
    for name, m in moved.items():
        np.testing.assert_array_equal(m, expect, err_msg=f"{rule} on {name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pair", ["softmax", "mse"])
def test_a_loss_gradient_below_the_floor_is_zero(pair, dtype):
    # One row: the second output's gradient below the floor, the third's above it.
    big = dtype == np.float64
    if pair == "softmax":  # g = p - y: e^-60 and e^-25 (float64: e^-400, e^-300)
        loss, act = fastmlp.functions.CROSS_ENTROPY, fastmlp.functions.SOFTMAX
        z = np.array([[0.0, -400.0, -300.0] if big else [0.0, -60.0, -25.0]], dtype)
        y = np.array([[1, 0, 0]], dtype)
    else:  # linear outputs under the mean squared error: g = 2 / 3 (z - y)
        loss, act = fastmlp.functions.MSE, fastmlp.functions.LINEAR
        z = np.array([[0.5, 1e-160, 1e-140] if big else [0.5, 1e-20, 1e-10]], dtype)
        y = np.zeros((1, 3), dtype)
    floor = GRAD_FLOOR[np.dtype(dtype).name]
    for be in _update_backends():
        a, g, row_loss = be.empty((1, 3), dtype), be.empty((1, 3), dtype), be.empty(1, dtype)
        be.loss_grad(loss, act, be.to_device(z), a, be.to_device(y), g, row_loss)
        got = be.to_host(g, np.empty((1, 3), dtype))[0]
        assert got[1] == 0 and floor < got[2] < 1e-9, (pair, be)


def test_same_bits_while_another_program_shares_the_cores():
    # Busy processes on every core: the compiled step notices that its threads are
    # not all running and lowers its thread count for a while, which must not change
    # the result.
    import subprocess
    import sys

    args = ([300, 256, 10], ["relu", "softmax"], "cross_entropy", "float32")
    before = fastmlp.get_num_threads()
    solo, _ = train(*args, optim.RMSprop(), 0.0, True, epochs=2, batch=32, n=2048)
    burn = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)]
    try:
        shared, _ = train(*args, optim.RMSprop(), 0.0, True, epochs=2, batch=32, n=2048)
    finally:
        for p in burn:
            p.kill()
            p.wait()
    for a, b in zip(solo.get_weights(), shared.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert fastmlp.get_num_threads() == before  # the thread count the user set is back
