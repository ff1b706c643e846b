"""pytest-benchmark suite: kernels, one training step and one epoch per host backend, at
1 thread and at every core, and on the GPU where there is one; the lecture recipe's
trainers (numerical derivative, compiled and naive, and backprop).

    pytest benches/ --benchmark-only

Timings are reported, never asserted. NumPy's BLAS is limited to one thread with
threadpoolctl (in the ``peers`` extra); without it, the one-thread NumPy cases are
skipped and say why. Epochs use Fashion-MNIST from ../shared/data or $FASTMLP_DATA
when present, else random images of the same size.
"""

import contextlib
import os
import pathlib

import numpy as np
import pytest

import fastmlp
from fastmlp import _cpu
from fastmlp.tools.bench import PRODUCTS
from fastmlp.tools.machine import cores

THREADS = [1, cores()]
HOST_BACKENDS = ("numpy", "cpu")
ROOT = pathlib.Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def limited(threads, numpy_too):
    """fastmlp (and, if asked, NumPy's BLAS) on `threads` threads for the block."""
    before = fastmlp.get_num_threads()
    fastmlp.set_num_threads(threads)
    try:
        if numpy_too and threads != cores():
            tpc = pytest.importorskip("threadpoolctl", reason="limiting NumPy's BLAS to "
                                      "one thread needs threadpoolctl (fastmlp[peers])")
            with tpc.threadpool_limits(threads, user_api="blas"):
                yield
        else:
            yield
    finally:
        fastmlp.set_num_threads(before)


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("impl", ["fastmlp", "numpy"])
@pytest.mark.parametrize("product", PRODUCTS, ids=lambda p: p[0].split()[0])
def test_product(benchmark, product, impl, threads):
    name, M, N, K, ta, tb = product
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
    a, b = (a.T if ta else a), (b.T if tb else b)
    out = np.empty((M, N), np.float32)
    fn = (lambda: _cpu.matmul(a, b, out)) if impl == "fastmlp" else (
        lambda: np.matmul(a, b, out=out))
    benchmark.group = f"product {name} ({threads} thread(s))"
    benchmark.extra_info["gflop"] = 2 * M * N * K / 1e9
    with limited(threads, impl == "numpy"):
        benchmark(fn)
    benchmark.extra_info["gflops"] = 2 * M * N * K / benchmark.stats.stats.median / 1e9


def training_data(n=60000):
    """Fashion-MNIST training images if present, else random ones (same shapes)."""
    recipe = fastmlp.recipes.get("keras")
    for folder in (os.environ.get("FASTMLP_DATA"), ROOT.parent / "shared" / "data"):
        if folder and (pathlib.Path(folder) / "fashion-mnist").is_dir():
            (x, y), _ = fastmlp.datasets.load("fashion-mnist",
                                              pathlib.Path(folder) / "fashion-mnist")
            return recipe.inputs(x.reshape(len(x), -1))[:n], recipe.targets(y)[:n]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 784)).astype(np.float32) / 255
    return x, recipe.targets(rng.integers(0, 10, n))


@pytest.fixture(scope="module")
def data():
    return training_data()


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_training_step(benchmark, data, backend, threads):
    # One step of fit's own runner on a shuffled batch of 128: gather, forward,
    # backward and update.
    x, y = data
    recipe = fastmlp.recipes.get("keras")
    model = recipe.build(backend=backend)
    runner = model.make_runner(x, y, recipe.make_optimizer(), 0.0, 128)
    rows = runner.new_order(True)[:128]

    def step():
        runner.run(rows, contiguous=False)

    benchmark.group = f"training step, batch 128 ({threads} thread(s))"
    with limited(threads, backend == "numpy"):
        benchmark(step)


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_epoch(benchmark, data, backend, threads):
    x, y = data
    recipe = fastmlp.recipes.get("keras")
    model, opt = recipe.build(backend=backend), recipe.make_optimizer()
    benchmark.group = f"keras epoch, {len(x)} samples ({threads} thread(s))"
    with limited(threads, backend == "numpy"):
        model.fit(x, y, epochs=1, optimizer=opt, verbose=0)  # warm-up
        benchmark.pedantic(model.fit, args=(x, y), kwargs=dict(epochs=1, optimizer=opt,
                                                               verbose=0), rounds=2)


@pytest.fixture(scope="module")
def lecture_data(data):
    x, y = data
    recipe = fastmlp.recipes.get("lecture")
    # The keras scaling x/255 to the lecture's x/255*0.99+0.01, targets 0.01/0.99.
    return (x[:200].astype(np.float64) * 0.99 + 0.01,
            recipe.targets(y[:200].argmax(axis=1), "float64"))


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("trainer", ["numerical", "lecture-backprop", "backprop"])
def test_lecture_samples(benchmark, lecture_data, trainer, threads):
    # One step per sample on 200 samples, as fit runs the lecture recipe.
    x, t = lecture_data
    recipe = fastmlp.recipes.get("lecture")
    model = recipe.build()
    benchmark.group = f"lecture recipe, 200 one-sample steps ({threads} thread(s))"
    with limited(threads, False):
        benchmark.pedantic(lambda: model.fit(x, t, verbose=0, **recipe.fit_args(
            trainer=trainer)), rounds=5, warmup_rounds=1)
    benchmark.extra_info["seconds_per_sample"] = benchmark.stats.stats.median / len(x)


def test_lecture_naive_step(benchmark, lecture_data):
    # The lecture's NumPy numerical derivative, one sample (about a second).
    x, t = lecture_data
    model = fastmlp.recipes.get("lecture").build()
    benchmark.group = "lecture recipe, naive NumPy numerical derivative, one sample"
    benchmark.pedantic(fastmlp.numerical.naive_step, args=(model, x[0], t[0]), rounds=2)
    benchmark.extra_info["seconds_per_sample"] = benchmark.stats.stats.median


def gpu_backend():
    """The cuda backend on a GPU, or skip (simulator timings mean nothing)."""
    reason = fastmlp.available_backends()["cuda"]
    if reason:
        pytest.skip(reason)
    be = fastmlp.backends.get_backend("cuda")
    if be.SIMULATOR:
        pytest.skip("the CUDA simulator's timings mean nothing")
    return be


def test_cuda_training_step(benchmark, data):
    # The queued launches of one step, then a wait for the GPU to finish them.
    gpu_backend()
    x, y = data
    recipe = fastmlp.recipes.get("keras")
    model = recipe.build(backend="cuda")
    xs, ys = model.check_xy(x, y)
    trainer = model.make_runner(xs, ys, recipe.make_optimizer(), 0.0, 128)
    trainer.new_order(True)
    from numba import cuda

    def step():
        trainer.queue_step(0)
        cuda.synchronize()

    benchmark.group = "training step, batch 128 (GPU)"
    benchmark(step)


def test_cuda_epoch(benchmark, data):
    gpu_backend()
    x, y = data
    recipe = fastmlp.recipes.get("keras")
    model, opt = recipe.build(backend="cuda"), recipe.make_optimizer()
    benchmark.group = f"keras epoch, {len(x)} samples (GPU)"
    model.fit(x, y, epochs=1, optimizer=opt, verbose=0)  # warm-up, compiles the kernels
    benchmark.pedantic(model.fit, args=(x, y), kwargs=dict(epochs=1, optimizer=opt,
                                                           verbose=0), rounds=5)
