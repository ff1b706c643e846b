"""Property tests (hypothesis) of everything that reads what a user hands in.

Targets: the IDX and CSV readers, the model-file loader (formats 1 and 2), the
command line, and the compiled kernels' entry points against the numpy
reference. Inputs are random bytes, truncations, bit flips, huge or negative
header fields and wrong dtypes. The outcome must be a result or one of the
documented exceptions (``DataError``, ``ValueError``), never another exception,
a crash or a hang, and never an allocation beyond what the file's size justifies
(measured with tracemalloc, which sees NumPy's allocations).

CI runs ``FUZZ_EXAMPLES`` examples per target (default 150, derandomised so a
run is repeatable); ``benches/fuzz_long.sh`` runs many more with fresh seeds.
"""

import gzip
import io
import json
import os
import warnings
import zipfile

import numpy as np
import pytest
from conftest import max_rel_err, peak_bytes, tol, write_idx
from test_resume import write_format_1

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastmlp  # noqa: E402
from fastmlp import _cpu, cli, datasets  # noqa: E402
from fastmlp import bf16 as bf16_ops  # noqa: E402
from fastmlp.backends import get_backend  # noqa: E402
from fastmlp.functions import ACTIVATIONS, activation_id  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
LONG = os.environ.get("FUZZ_LONG", "") not in ("", "0")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG,
                database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
SLACK = 3 << 20  # bytes: the readers' 1 MiB pieces, zlib's state, Python objects


def mutate(data: bytes, draw) -> bytes:
    """``data`` truncated, with bits flipped, with bytes spliced in, or as it is."""
    kind = draw(st.sampled_from(["keep", "truncate", "flip", "splice"]))
    if kind == "truncate" and data:
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "flip" and data:
        out = bytearray(data)
        for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            out[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "splice":
        pos = draw(st.integers(0, len(data)))
        return data[:pos] + draw(st.binary(max_size=64)) + data[pos:]
    return data


# --------------------------------------------------------------------------- IDX
DIM = st.one_of(st.integers(0, 40), st.sampled_from([2**31 - 1, 2**32 - 1, 10**9]))


@st.composite
def idx_files(draw):
    """(bytes of an IDX file, gz or not, possibly malformed; the payload bytes)."""
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=300))
        payload = len(raw)
    else:
        dims = draw(st.lists(DIM, min_size=0, max_size=4))
        magic = draw(st.sampled_from([b"\0\0\x08", b"\0\0\x09", b"\0\0\x0d", b"\x1f\0\x08"]))
        header = magic + bytes([len(dims) if draw(st.booleans()) else draw(st.integers(0, 255))])
        header += b"".join(d.to_bytes(4, "big") for d in dims)
        promised = int(np.prod([min(d, 10**6) for d in dims], dtype=np.float64))
        n = min(promised, 20_000) + draw(st.sampled_from([0, 0, 0, -1, 1, 7]))
        payload = max(n, 0)
        raw = mutate(header + bytes(draw(st.integers(0, 255)) for _ in range(min(payload, 8)))
                     + bytes(max(payload - 8, 0)), draw)
    if draw(st.booleans()):
        raw = mutate(gzip.compress(raw, compresslevel=1), draw)
    return raw, payload


@FUZZ
@given(idx_files(), st.sampled_from([None, datasets.IMAGE_MAGIC, datasets.LABEL_MAGIC]))
def test_fuzz_read_idx(tmp_path_factory, case, magic):
    raw, payload = case
    path = tmp_path_factory.mktemp("idx") / "f.gz"
    path.write_bytes(raw)
    out = []

    def read():
        try:
            out.append(datasets.read_idx(path, magic))
        except datasets.DataError:
            out.append(None)

    used = peak_bytes(read)
    if out[0] is not None:
        assert out[0].dtype == np.uint8 and out[0].size <= max(len(raw), payload)
    assert used <= 3 * max(len(raw), payload) + SLACK


def test_read_idx_gzip_bomb_is_refused_without_inflating(tmp_path):
    """A header promising 10 labels over 200 MB of zeros: refused, with a small peak."""
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b"\0\0\x08\x01" + (10).to_bytes(4, "big"))
        for _ in range(200):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    def read():
        with pytest.raises(datasets.DataError, match="promises"):
            datasets.read_idx(path)

    assert peak_bytes(read) < SLACK


# --------------------------------------------------------------------------- CSV
CELL = st.one_of(st.integers(-3, 300).map(str), st.sampled_from(["", " ", "x", "1.5", "nan",
                                                                   "1e3", '"7"', "label"]))


@st.composite
def csv_files(draw):
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=400))
    width = draw(st.integers(1, 6))
    rows = draw(st.lists(st.lists(CELL, min_size=max(width - 1, 0), max_size=width + 1),
                         max_size=12))
    text = "\n".join(",".join(r) for r in rows)
    if draw(st.booleans()):
        text = "label," + ",".join(f"p{i}" for i in range(width - 1)) + "\n" + text
    raw = mutate(text.encode(), draw)
    return gzip.compress(raw) if draw(st.booleans()) else raw


def _read_csv_in(path, batch):
    """read_csv's arrays, or its error's message after the file name, with batches of
    ``batch`` rows."""
    before = datasets.CSV_BATCH
    datasets.CSV_BATCH = batch
    try:
        return datasets.read_csv(path)
    except datasets.DataError as exc:
        return str(exc).split(":", 1)[1]
    finally:
        datasets.CSV_BATCH = before


@FUZZ
@given(csv_files(), st.integers(1, 5))
def test_fuzz_read_csv(tmp_path_factory, raw, batch):
    """Arrays or a DataError; in batches of a few rows, the same arrays or an error."""
    path = tmp_path_factory.mktemp("csv") / "train.csv"
    path.write_bytes(raw)
    whole, batched = _read_csv_in(path, 10**6), _read_csv_in(path, batch)
    if isinstance(whole, str):
        assert isinstance(batched, str)  # an error too (it may find another first)
        return
    images, labels = whole
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert len(images) == len(labels) > 0 and (labels >= 0).all()
    assert all(np.array_equal(a, b) for a, b in zip(whole, batched))


# --------------------------------------------------------------------------- model files
def _saved(tmp, version, dtype):
    m = fastmlp.MLP([5, 4, 3], ["relu", "softmax"], backend="numpy", seed=1, dtype=dtype)
    x = np.random.default_rng(0).random((16, 5))
    m.fit(x, np.arange(16) % 3, epochs=1, batch_size=4, verbose=0)
    path = tmp / "m.npz"
    if version == 1:  # no training state
        write_format_1(m, path)
    else:
        m.save(path)
    return path


def _contents(path):
    """(header, arrays) of a model file."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(str(arrays.pop("__header__"))), arrays


def _write(target, header, arrays):
    """A model file (to a path or a file object) of ``header`` and ``arrays``."""
    np.savez(target, __header__=np.array(json.dumps(header)), **arrays)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70)
                    | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
WRONG_ARRAYS = st.sampled_from([
    np.zeros((5, 4), np.int64), np.zeros((5, 4), np.complex64), np.zeros((5, 4), np.float16),
    np.zeros((5, 4), bool), np.array(["a", "b"]), np.zeros((4, 5), np.float32),
    np.zeros((0,), np.float32), np.full((5, 4), np.nan, np.float32), np.zeros((), np.float64),
])


@st.composite
def model_files(draw, tmp):
    """Bytes of a model file (format 1 or 2), with its header, arrays or bytes changed."""
    path = _saved(tmp, draw(st.sampled_from([1, 2])), draw(st.sampled_from(["float32",
                                                                           "float64"])))
    how = draw(st.sampled_from(["bytes", "header", "array"]))
    if how == "bytes":
        return mutate(path.read_bytes(), draw)
    header, arrays = _contents(path)
    if how == "header":
        where = draw(st.sampled_from(["config", "training", "top"]))
        target = header if where == "top" else (header.get(where) or {})
        key = draw(st.sampled_from(sorted(target) + ["layers", "epochs_trained", "x"]))
        target[key] = draw(JSON | st.sampled_from([[5, 10**6, 3], [5, 2**40, 3], [-5, 4, 3],
                                                  [5, 4, 3, 3], 2**63, -1]))
    else:
        name = draw(st.sampled_from(sorted(arrays)))
        if draw(st.booleans()):
            arrays[name] = draw(WRONG_ARRAYS)
        else:
            del arrays[name]
    buf = io.BytesIO()
    _write(buf, header, arrays)
    return buf.getvalue()


@FUZZ
@given(st.data())
def test_fuzz_model_loader(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("model")
    raw = data.draw(model_files(tmp))
    path = tmp / "fuzzed.npz"
    path.write_bytes(raw)
    out = []

    def load():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out.append(fastmlp.load(path))
            except ValueError:
                out.append(None)

    assert peak_bytes(load) <= 4 * len(raw) + SLACK
    model = out[0]
    if model is not None:
        x = np.random.default_rng(1).random((3, model.layers[0]))
        assert np.isfinite(model.predict_proba(x)).all()


def test_loader_refuses_a_huge_configuration_before_allocating(tmp_path):
    path = _saved(tmp_path, 2, "float32")
    header, arrays = _contents(path)
    header["config"]["layers"] = [5, 400_000_000, 3]  # 12 GB of float32 parameters
    _write(path, header, arrays)

    def load():
        with pytest.raises(ValueError, match="W1 has shape"):
            fastmlp.load(path)

    assert peak_bytes(load) < SLACK


def test_loader_refuses_an_array_promising_more_than_the_file_holds(tmp_path):
    path = _saved(tmp_path, 2, "float32")
    # W1's .npy header (padded with spaces) given a shape of the same length in
    # bytes, 99999 rows instead of 5, in an otherwise valid zip.
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    old, new = b"(5, 4), }    ", b"(99999, 4), }"
    assert members["W1.npy"].count(old) == 1
    members["W1.npy"] = members["W1.npy"].replace(old, new)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    def load():
        with pytest.raises(ValueError, match="W1 promises"):
            fastmlp.load(path)

    assert peak_bytes(load) < SLACK


# --------------------------------------------------------------------------- CLI
TOKENS = ["train", "evaluate", "gradcheck", "info", "bench", "profile", "compare", "--json",
          "--epochs", "--batch-size", "--layers", "--lr", "--recipe", "keras", "-x", "--",
          "--threads", "--backend", "cpu", "gpu", "--help", "--version", "-1", "0", "1e9",
          "nan", "784,10", "", "--seed", "--samples", "=", "--dtype"]


@FUZZ
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=8))
def test_fuzz_cli_parsing(argv):
    """Any argument list parses or exits through argparse (code 0 for --help and
    --version, 2 for an error); nothing else escapes."""
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code in (0, 2)


NUMBER = st.sampled_from(["-1", "0", "1", "2", "7", "1e9", "nan", "inf", "-inf", "0.5", "x",
                          "99999999999999999999", ""])


@st.composite
def train_argv(draw, folder):
    argv = ["train", "--data", str(folder), "--verbose", "0"]
    options = {
        "--recipe": st.sampled_from(["keras", "dl4j", "lecture", "mystery"]),
        "--epochs": st.sampled_from(["-1", "0", "1", "2", "x"]),
        "--batch-size": NUMBER, "--lr": NUMBER, "--l2": NUMBER, "--seed": NUMBER,
        "--threads": NUMBER, "--validation-split": NUMBER, "--diff-step": NUMBER,
        "--early-stopping": NUMBER,
        "--layers": st.sampled_from(["784,8,10", "784,10", "784,0,10", "784,-3,10", "10",
                                     "784,99999999999,10", "784,a,10", "", "784,8,8,10"]),
        "--activations": st.sampled_from(["relu,softmax", "relu", "tanh,sigmoid", "foo,bar",
                                          "", "relu,relu,softmax"]),
        "--dtype": st.sampled_from(["float32", "float64", "mixed_bfloat16", "int8"]),
        "--optimizer": st.sampled_from(["sgd", "adam", "rmsprop", "none"]),
        "--trainer": st.sampled_from(["backprop", "numerical", "lecture-backprop"]),
        "--loss": st.sampled_from(["mse", "cross_entropy", "binary_cross_entropy", "l1"]),
    }
    for key in draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=5)):
        argv += [key, draw(options[key])]
    return argv


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for part, n in (("train", 24), ("t10k", 8)):
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return folder


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 10))
@given(data=st.data())
def test_fuzz_cli_train(tiny_data, capsys, data):
    """``fastmlp train`` on tiny data with random options: it trains (exit 0), or
    gives a one-line error (exit 1), or argparse refuses the options (exit 2)."""
    argv = data.draw(train_argv(tiny_data))
    if "lecture" in argv and "numerical" in argv:
        argv += ["--epochs", "1"]  # the numerical trainer at full size takes seconds
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, cli.EXIT_ERROR, 2), err
    if code:  # fastmlp's one line, or argparse's usage and one line
        assert "Traceback" not in err
        assert err.startswith("fastmlp: error: ") or "fastmlp train: error: " in err, err


# --------------------------------------------------------------------------- kernels
REF, CPU = get_backend("numpy"), get_backend("cpu")


@FUZZ
@given(st.integers(1, 40), st.integers(1, 70), st.integers(1, 40),
       st.sampled_from(["float32", "float64", "bf16"]), st.sampled_from(ACTIVATIONS),
       st.booleans(), st.integers(0, 2**32 - 1))
@example(32, 50, 1, "float32", "linear", False, 1)  # a bias gradient that cancels
def test_fuzz_dense_kernels(n, k, m, dtype, act, gather, seed):
    """The compiled forward (with its activation and row gather) and weight-gradient
    kernels against the numpy reference, on random shapes, and bit for bit the
    portable kernels' results (the thin kernel, the transposed thin products and
    the threads' shares included); with bfloat16 operands the weight gradient also
    equals the exact reference of the compiled order."""
    bf16 = dtype == "bf16"
    dtype = "float32" if bf16 else dtype
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n + 3, k)).astype(dtype)
    W, b = rng.uniform(-1, 1, (k, m)).astype(dtype), rng.uniform(-1, 1, m).astype(dtype)
    g = rng.uniform(-1, 1, (n, m)).astype(dtype)
    idx = rng.permutation(n + 3)[:n].astype(np.int64) if gather else None
    res = {}

    def run(be):
        z, gW, gb = np.empty((n, m), dtype), np.empty((k, m), dtype), np.empty(m, dtype)
        be.dense_forward(x if gather else x[:n], W, b, z, activation_id(act), idx, bf16)
        be.dense_backward_weight(x if gather else x[:n], g, gW, gb, idx, bf16)
        return z, gW, gb

    for be in (REF, CPU):
        res[be.name] = run(be)
    best = _cpu.gemm_level()
    try:
        _cpu.set_gemm_level("scalar")
        for got, portable in zip(res["cpu"], run(CPU)):
            np.testing.assert_array_equal(got, portable)
    finally:
        _cpu.set_gemm_level(best)
    assert max_rel_err(res["cpu"][0], res["numpy"][0]) < tol(dtype, k + m)
    # The gradients are sums over the batch, which may cancel: each is held to the
    # rounding bound of its terms' magnitudes, n units of them.
    xs = np.abs(x[idx] if gather else x[:n]).astype(np.float64)
    for got, ref, bound in zip(res["cpu"][1:], res["numpy"][1:],
                               (xs.T @ np.abs(g), np.abs(g).sum(axis=0))):
        assert (np.abs(got.astype(np.float64) - ref) <= tol(dtype, n) * bound).all()
    if bf16:  # the weight gradient, bit for bit the compiled order's reference
        xr = x[idx] if gather else x[:n]
        np.testing.assert_array_equal(res["cpu"][1], bf16_ops.matmul_exact(xr.T.copy(), g))
