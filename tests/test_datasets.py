"""Data: IDX and CSV readers, the lookup order, and the verified download."""

import gzip
import hashlib
import http.server
import os
import shutil
import threading

import numpy as np
import pytest
from conftest import make_images, peak_bytes, write_dataset, write_idx

from fastmlp import datasets
from fastmlp.datasets import DataError, DownloadError

MNIST_TEST = {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}


# --------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    x, y = make_images(7)
    write_idx(tmp_path / "i", x, gz)
    write_idx(tmp_path / "l", y, gz)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "i", datasets.IMAGE_MAGIC), x)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "l", datasets.LABEL_MAGIC), y)


def test_idx_wrong_magic(tmp_path):
    x, _ = make_images(3)
    write_idx(tmp_path / "i.gz", x)
    with pytest.raises(DataError, match="wrong magic number 0x00000803, expected 0x00000801"):
        datasets.read_idx(tmp_path / "i.gz", datasets.LABEL_MAGIC)
    (tmp_path / "j").write_bytes(b"\x12\x34\x56\x78" + bytes(20))
    with pytest.raises(DataError, match="not an IDX file"):
        datasets.read_idx(tmp_path / "j")


def test_idx_truncated_and_trailing(tmp_path):
    x, _ = make_images(3)
    write_idx(tmp_path / "i", x, gz=False)
    data = (tmp_path / "i").read_bytes()
    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(DataError, match="truncated.*2352 values.*holds 2347"):
        datasets.read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(data + b"xx")
    with pytest.raises(DataError, match="trailing bytes"):
        datasets.read_idx(tmp_path / "long")
    (tmp_path / "tiny").write_bytes(data[:2])
    with pytest.raises(DataError, match="truncated"):
        datasets.read_idx(tmp_path / "tiny")


def test_corrupt_gzip(tmp_path):
    x, _ = make_images(50)
    write_idx(tmp_path / "i.gz", x)
    data = bytearray((tmp_path / "i.gz").read_bytes())
    (tmp_path / "cut.gz").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match="corrupt gzip"):
        datasets.read_idx(tmp_path / "cut.gz")
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 1] ^= 0xFF
    (tmp_path / "flip.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt gzip"):
        datasets.read_idx(tmp_path / "flip.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_larger_than_its_header_is_refused_without_reading_it(tmp_path, gz):
    # A label file that promises 10 labels and holds 50 MB more: the gzip stream is
    # inflated only as far as the header promises (plus one byte), the raw file is
    # measured, not read.
    header = (datasets.LABEL_MAGIC.to_bytes(4, "big") + (10).to_bytes(4, "big"))
    body = header + bytes(50_000_010)
    path = tmp_path / ("big.gz" if gz else "big")
    path.write_bytes(gzip.compress(body) if gz else body)
    del body

    def read():
        with pytest.raises(DataError, match="has trailing bytes: the header promises 10 "):
            datasets.read_idx(path, datasets.LABEL_MAGIC)

    assert peak_bytes(read) < 4_000_000


@pytest.mark.parametrize("gz", [True, False])
def test_idx_promising_more_than_it_holds_allocates_what_it_holds(tmp_path, gz):
    # A header promising 2^32-1 images of 2^32-1 x 1 pixels over 100 bytes of data.
    big = (2**32 - 1).to_bytes(4, "big")
    body = (datasets.IMAGE_MAGIC.to_bytes(4, "big") + big + big + (1).to_bytes(4, "big")
            + bytes(100))
    path = tmp_path / ("huge.gz" if gz else "huge")
    path.write_bytes(gzip.compress(body) if gz else body)

    def read():
        with pytest.raises(DataError, match="truncated: .* the file holds 100"):
            datasets.read_idx(path, datasets.IMAGE_MAGIC)

    assert peak_bytes(read) < 4_000_000


def test_real_mnist_test_files(shared_data):
    folder = shared_data / "mnist"
    for name, md5 in MNIST_TEST.items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == md5
    x = datasets.read_idx(folder / "t10k-images-idx3-ubyte.gz", datasets.IMAGE_MAGIC)
    y = datasets.read_idx(folder / "t10k-labels-idx1-ubyte.gz", datasets.LABEL_MAGIC)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    assert y.shape == (10000,) and list(y[:5]) == [7, 2, 1, 0, 4]
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    ytr = datasets.read_idx(folder / "train-labels-idx1-ubyte.gz", datasets.LABEL_MAGIC)
    assert ytr.shape == (60000,)


def test_real_fashion_mnist(shared_data):
    (x, y), (xt, yt) = datasets.load_fashion_mnist(shared_data / "fashion-mnist")
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10


def test_folder_missing_files(shared_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing: train-images-idx3-ubyte"):
        datasets.load_mnist(shared_data / "mnist")
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        datasets.load_mnist(tmp_path / "nowhere")


def test_image_label_count_mismatch(tmp_path):
    write_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(99, np.uint8))
    with pytest.raises(DataError, match="100 test images but 99 test labels"):
        datasets.load_folder(tmp_path)


# --------------------------------------------------------------------------- CSV
def write_csv(path, x, y, header=False):
    rows = ["label," + ",".join(f"pixel{i}" for i in range(x.shape[1]))] if header else []
    rows += [",".join(map(str, [int(label)] + list(map(int, img)))) for img, label in zip(x, y)]
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("header", [False, True])
def test_csv_pair(tmp_path, header):
    x, y = make_images(12)
    flat = x.reshape(12, -1)
    write_csv(tmp_path / "mnist_train.csv", flat[:8], y[:8], header)
    write_csv(tmp_path / "mnist_test.csv", flat[8:], y[8:], header)
    (xtr, ytr), (xte, yte) = datasets.load_mnist(tmp_path)
    np.testing.assert_array_equal(xtr, flat[:8])
    np.testing.assert_array_equal(yte, y[8:])
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64


def test_csv_errors_name_file_and_line(tmp_path):
    good = "\n".join(["5," + ",".join(["0"] * 4)] * 3)
    p = tmp_path / "a.csv"
    p.write_text(good + "\n3,1,2,3\n")
    with pytest.raises(DataError, match=r"a.csv:4: 4 columns, expected 5"):
        datasets.read_csv(p)
    p.write_text(good + "\n3,1,x2,3,4\n")
    with pytest.raises(DataError, match=r"a.csv:4: column 3 is not a number: 'x2'"):
        datasets.read_csv(p)
    p.write_text(good + "\n3,1,2,300,4\n")
    with pytest.raises(DataError, match=r"a.csv:4: pixel 300 in column 4 is outside 0-255"):
        datasets.read_csv(p)
    p.write_text("label,p1\n")
    with pytest.raises(DataError, match="no data rows"):
        datasets.read_csv(p)


@pytest.mark.parametrize("gz", [False, True])
def test_csv_is_read_in_batches(tmp_path, monkeypatch, gz):
    """Parsed 64 rows at a time: the same arrays, errors naming the right line in a
    later batch, and a peak of about the images and one batch, not the whole text."""
    monkeypatch.setattr(datasets, "CSV_BATCH", 64)
    x, y = make_images(300, seed=4)
    flat = x.reshape(300, -1)
    p = tmp_path / "big.csv"
    write_csv(p, flat, y, header=True)
    text = p.read_bytes()
    if gz:
        p.write_bytes(gzip.compress(text))
    out = []
    peak = peak_bytes(lambda: out.extend(datasets.read_csv(p)))
    images, labels = out
    np.testing.assert_array_equal(images, flat)
    np.testing.assert_array_equal(labels, y)
    batch_table = 64 * 785 * 8
    assert peak < 3 * images.nbytes + 4 * batch_table + (1 << 20) < len(text) * 5
    # A bad row in the fourth batch (line 1 is the header).
    lines = text.decode().splitlines()
    lines[250] = lines[250].rsplit(",", 1)[0]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"big.csv:251: 784 columns, expected 785"):
        datasets.read_csv(p)


# --------------------------------------------------------------------------- lookup
def test_lookup_order_env_then_cache(tmp_path, monkeypatch):
    write_dataset(tmp_path / "env" / "mnist", n_train=20, seed=1)
    write_dataset(tmp_path / "cache" / "mnist", n_train=30, seed=2)
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    (x, _), _ = datasets.load_mnist(download=False)
    assert len(x) == 20
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "elsewhere"))
    (x, _), _ = datasets.load_mnist(download=False)
    assert len(x) == 30  # FASTMLP_CACHE is tmp_path/cache (conftest)
    write_dataset(tmp_path / "explicit", n_train=40)
    (x, _), _ = datasets.load_mnist(tmp_path / "explicit")
    assert len(x) == 40


def test_no_data_and_no_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=False"):
        datasets.load_fashion_mnist(download=False)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        datasets.load("cifar")


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTMLP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if os.name == "posix" and not datasets.sys.platform == "darwin":
        assert datasets.cache_dir() == str(tmp_path / "xdg" / "fastmlp")


# --------------------------------------------------------------------------- download
class _Handler(http.server.BaseHTTPRequestHandler):
    root = None

    failures = None  # {path: failures left} for the flaky modes

    def do_GET(self):  # noqa: N802
        mode, _, name = self.path.strip("/").partition("/")
        if mode.startswith("flaky"):  # flaky503-N, flakycut-N: N failures, then good
            left = self.failures.setdefault(self.path, int(mode.split("-")[1]))
            if left:
                self.failures[self.path] = left - 1
                mode = "truncated" if mode.startswith("flakycut") else "busy"
        if mode == "busy":
            self.send_error(503)
            return
        path = os.path.join(self.root, name)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        body = open(path, "rb").read()
        if mode == "bad":
            body = body[:-1] + bytes([body[-1] ^ 1])
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncated":
            body = body[: len(body) // 2]
        self.wfile.write(body)
        self.wfile.flush()
        if mode == "truncated":
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Handler", (_Handler,), {"root": str(root), "failures": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def served_labels(server, shared_data, tmp_path, serve=True):
    """(server URL, MNIST's test-labels file name, an empty download folder), the file
    served unless ``serve`` is false."""
    root, url = server
    name = "t10k-labels-idx1-ubyte.gz"
    if serve:
        shutil.copy(shared_data / "mnist" / name, root / name)
    cache = tmp_path / "dl"
    cache.mkdir()
    return url, name, cache


def test_fetch_good_file(server, shared_data, tmp_path):
    url, name, cache = served_labels(server, shared_data, tmp_path)
    path = datasets.fetch(name, str(cache), MNIST_TEST[name], [url + "/good"], verbose=False)
    assert os.listdir(cache) == [name]
    assert open(path, "rb").read() == (shared_data / "mnist" / name).read_bytes()


@pytest.mark.parametrize("mode,message", [("bad", "checksum mismatch"),
                                          ("truncated", "(truncated|interrupted)"),
                                          ("missing", "404")])
def test_fetch_failures_leave_nothing(server, shared_data, tmp_path, mode, message):
    url, name, cache = served_labels(server, shared_data, tmp_path, mode != "missing")
    with pytest.raises(DownloadError, match=message):
        datasets.fetch(name, str(cache), MNIST_TEST[name], [f"{url}/{mode}"], verbose=False,
                       backoff=0)
    assert os.listdir(cache) == []


@pytest.mark.parametrize("mode", ["flaky503-2", "flakycut-3"])
def test_fetch_retries_transient_errors_with_back_off(server, shared_data, tmp_path, mode,
                                                      capsys):
    url, name, cache = served_labels(server, shared_data, tmp_path)
    waits = []
    path = datasets.fetch(name, str(cache), MNIST_TEST[name], [f"{url}/{mode}"],
                          sha256=datasets.DATASETS["mnist"]["sha256"][name[:-3]],
                          backoff=0.25, sleep=waits.append)
    assert open(path, "rb").read() == (shared_data / "mnist" / name).read_bytes()
    n = int(mode[-1])
    assert waits == [0.25 * 2 ** i for i in range(n)]  # one wait per failure, doubling
    assert capsys.readouterr().err.count("trying again in") == n
    assert os.listdir(cache) == [name]


@pytest.mark.parametrize("mode,retried", [("busy", True), ("missing", False),
                                          ("bad", False)])
def test_fetch_gives_up_after_its_retries(server, shared_data, tmp_path, mode, retried):
    url, name, cache = served_labels(server, shared_data, tmp_path, mode != "missing")
    waits = []
    with pytest.raises(DownloadError, match="could not download") as info:
        datasets.fetch(name, str(cache), MNIST_TEST[name], [f"{url}/{mode}"], verbose=False,
                       retries=2, backoff=0.5, sleep=waits.append)
    # A busy server (503) is asked 3 times; a missing file or a bad checksum once.
    assert waits == ([0.5, 1.0] if retried else [])
    assert ("(3 tries)" in str(info.value)) == retried
    assert os.listdir(cache) == []


def test_fetch_checks_sha256(server, shared_data, tmp_path):
    url, name, cache = served_labels(server, shared_data, tmp_path)
    with pytest.raises(DownloadError, match="checksum mismatch: SHA-256"):
        datasets.fetch(name, str(cache), MNIST_TEST[name], [url + "/good"], verbose=False,
                       sha256="0" * 64)
    assert os.listdir(cache) == []


def test_published_checksums_match_the_shared_files(shared_data):
    """Every SHA-256 given is that of the file at hand, which matches the published MD5."""
    known = [(name, part) for name, spec in datasets.DATASETS.items()
             for part in datasets.PARTS if spec["sha256"][part] is not None]
    assert len(known) == 3  # MNIST's test images and labels, and training labels
    for name, part in known:
        data = (shared_data / name / (part + ".gz")).read_bytes()
        assert hashlib.md5(data).hexdigest() == datasets.DATASETS[name]["md5"][part]
        assert hashlib.sha256(data).hexdigest() == datasets.DATASETS[name]["sha256"][part]


def test_fetch_falls_back_to_the_next_mirror(server, shared_data, tmp_path, capsys):
    url, name, cache = served_labels(server, shared_data, tmp_path)
    datasets.fetch(name, str(cache), MNIST_TEST[name], [url + "/bad", url + "/good"])
    assert os.listdir(cache) == [name]
    err = capsys.readouterr().err
    assert "Downloading" in err and "4,542 bytes" in err


def test_load_downloads_into_the_cache_and_then_reuses_it(server, tmp_path, monkeypatch):
    root, url = server
    write_dataset(root, n_train=25)
    md5 = {p: hashlib.md5((root / (p + ".gz")).read_bytes()).hexdigest()
           for p in datasets.PARTS}
    monkeypatch.setitem(datasets.DATASETS["mnist"], "md5", md5)
    monkeypatch.setitem(datasets.DATASETS["mnist"], "sha256", dict.fromkeys(datasets.PARTS))
    (x, y), (xt, yt) = datasets.load_mnist(mirrors=[url + "/good"], verbose=False)
    assert x.shape == (25, 28, 28) and len(xt) == 100
    cached = tmp_path / "cache" / "mnist"
    assert sorted(os.listdir(cached)) == sorted(p + ".gz" for p in datasets.PARTS)
    shutil.rmtree(root)  # the server has nothing now: the cache must serve
    (x2, _), _ = datasets.load_mnist(mirrors=[url + "/good"], verbose=False)
    np.testing.assert_array_equal(x, x2)


def test_load_download_mismatch_names_the_file(server, tmp_path, monkeypatch):
    root, url = server
    write_dataset(root, n_train=5)
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "rb") as f:
        assert f.read(4) == b"\0\0\x08\x03"
    monkeypatch.setitem(datasets.DATASETS["mnist"], "md5", {p: "0" * 32 for p in datasets.PARTS})
    with pytest.raises(DownloadError, match="could not download train-images-idx3-ubyte.gz"):
        datasets.load_mnist(mirrors=[url + "/good"], verbose=False)
    assert os.listdir(tmp_path / "cache" / "mnist") == []
