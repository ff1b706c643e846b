import ctypes
import gzip
import os
import pathlib

import numpy as np
import pytest


def _cuda_driver():
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


# Without an NVIDIA driver the cuda backend's tests run in Numba's CUDA simulator;
# with one, the same tests run on the GPU. This must be decided before numba loads.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _cuda_driver():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
CUDA_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

import fastmlp  # noqa: E402

#: The backends the generic tests run on: in the simulator, which takes seconds per
#: launch on full-size layers, the cuda backend has its own small tests (test_cuda.py).
TESTED_BACKENDS = tuple(b for b in fastmlp.BACKENDS if not (b == "cuda" and CUDA_SIMULATOR))

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(params=fastmlp.threads.SIMD_LEVELS)
def level(request):
    """Run the test with the compiled kernels of each SIMD level, restoring the level after."""
    from fastmlp import _cpu

    name = request.param
    levels = fastmlp.threads.SIMD_LEVELS
    if levels.index(name) > levels.index(_cpu.gemm_best_level()):
        pytest.skip(f"this CPU does not support {name}")
    before = _cpu.gemm_level()
    _cpu.set_gemm_level(name)
    yield name
    _cpu.set_gemm_level(before)


def max_rel_err(a, b):
    """Largest difference relative to the largest magnitude of the reference b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(initial=0.0), 1e-30)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def tol(dtype, k=1, steps=1):
    """How far apart, relative to the largest magnitude (as ``max_rel_err`` measures),
    two correct computations may be that differ only in rounding.

    Each of ``steps`` chained steps sums up to ``k`` rounded terms: recursive
    summation of k terms is within k unit roundoffs of the exact sum, whatever
    the order (the classic a-priori bound; a BLAS or a SIMD level only picks
    another order), and the elementwise functions (exp, log, tanh) add a few
    roundoffs more. The factor 8 covers those few. This depends on the dtype and
    the sizes only, not on what one machine happened to give."""
    return 8 * steps * max(k, 1) * float(np.finfo(dtype).eps)


def update_cases():
    """``(name, rule, n_slots, hyper)`` of every optimizer rule, with each optimizer's
    default hyper-parameters at step 3."""
    for name, cls in fastmlp.optim.OPTIMIZERS.items():
        opt = cls()
        yield name, opt.rule, opt.n_slots, opt.kernel_hyper(3)


def write_idx(path, array, gz=True):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def make_images(n, seed=0, classes=10):
    """Learnable 28x28 images: class c lights up row block c, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, 28, 28))
    for i, c in enumerate(y):
        x[i, 2 * c + 4:2 * c + 6, 4:24] += 180
    return x.clip(0, 255).astype(np.uint8), y


def write_dataset(folder, n_train=300, n_test=100, gz=True, seed=0):
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    xtr, ytr = make_images(n_train, seed)
    xte, yte = make_images(n_test, seed + 1)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", xtr, gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", ytr, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", xte, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", yte, gz)
    return (xtr, ytr), (xte, yte)


@pytest.fixture
def dataset_dir(tmp_path):
    write_dataset(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        message = f"the shared data folder {SHARED_DATA} is missing"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has it
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    # No test may read the user's cache or data folders, or download from the internet.
    monkeypatch.setenv("FASTMLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    yield


@pytest.fixture
def threads():
    """Restore the cpu backend's thread count after a test changes it."""
    before = fastmlp.get_num_threads()
    yield
    fastmlp.set_num_threads(before)


def relu_outputs(rng, n, m):
    """A layer's relu outputs for the input gradient's strip tests: at zero and above,
    with some negative, subnormal, infinite and not-a-number values among them."""
    a = np.maximum(rng.standard_normal((n, m)), 0).astype(np.float32)
    a.flat[1::11] = -1.0
    a.flat[2::13] = np.float32(1e-40)
    a.flat[3::17] = np.nan
    a.flat[4::19] = np.inf
    return a


def _restored(switch, value):
    """Yield, then set ``fastmlp._cpu``'s test switch ``switch`` back to ``value``."""
    from fastmlp import _cpu

    yield
    getattr(_cpu, switch)(value)


@pytest.fixture
def a_in_place():
    """Restore the matrix products' own rule for reading A in place after a test
    forces it (``fastmlp._cpu._set_a_in_place``)."""
    yield from _restored("_set_a_in_place", 0)


@pytest.fixture
def weight_panels():
    """Restore the compiled step's first-layer panels after a test switches them
    (``fastmlp._cpu._set_weight_panels``)."""
    yield from _restored("_set_weight_panels", True)


@pytest.fixture
def bias_sums():
    """Restore the summing of bias gradients in the weight gradients' packing after a
    test switches it (``fastmlp._cpu._set_bias_sums``)."""
    yield from _restored("_set_bias_sums", True)


@pytest.fixture
def all_k():
    """Restore the matrix products' packing of B for all of K first after a test
    switches it (``fastmlp._cpu._set_all_k``)."""
    yield from _restored("_set_all_k", True)


@pytest.fixture
def shallow():
    """Restore the shallow products' strip kernel after a test switches it
    (``fastmlp._cpu._set_shallow``)."""
    yield from _restored("_set_shallow", True)


@pytest.fixture
def stream():
    """Restore the strip kernel's rule for non-temporal stores after a test forces
    them on or off (``fastmlp._cpu._set_stream``)."""
    yield from _restored("_set_stream", 0)


def pytest_sessionstart(session):
    # In CI every backend this machine can build must be there: a missing compiled
    # extension (say, tests importing the source folder) is a failure, not a skip.
    if os.environ.get("CI"):
        missing = {k: v for k, v in fastmlp.available_backends().items() if v}
        if missing:
            raise pytest.UsageError(f"backends unavailable in CI: {missing}")


def extra(module, extra_name):
    """Import ``module`` of an optional extra, or skip the test module where it is not
    installed; in CI (``CI`` set), where .ci/run installs every extra, a missing one
    fails instead, so that no test of a feature hides behind a skip."""
    if os.environ.get("CI"):
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"needs the '{extra_name}' extra")


def bench_script(name):
    """The module of the script ``benches/<name>.py`` (the tests run short versions of
    the long runs there)."""
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[1] / "benches" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def peak_bytes(fn):
    """The peak of Python's traced allocations (NumPy's arrays included) while fn runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak
