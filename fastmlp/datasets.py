"""MNIST and Fashion-MNIST: reading IDX and CSV files, finding them, downloading them.

Where the files are looked for, in order:

1. the ``path`` argument: a folder holding the four IDX files (``.gz`` or raw)
   or a CSV pair (``*train*.csv`` and ``*test*.csv``, one row per image: label
   then 784 pixels, as the lecture's ``mnist_train.csv``);
2. ``$FASTMLP_DATA/<name>`` (``mnist`` or ``fashion-mnist``);
3. the cache, ``$FASTMLP_CACHE`` or ``<user cache dir>/fastmlp``, then ``<name>``;
4. a download from the published mirrors into the cache, verified against the
   published MD5 checksums, and against SHA-256 where it is known, and written
   atomically: a file is renamed into the cache only once complete and verified.
   A mirror that fails with a transient error (a dropped connection, a timeout,
   HTTP 429 or 5xx) is asked again, up to 3 times, after 1, 2 and 4 seconds.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import sys
import zlib

import numpy as np

from ._download import DownloadError, fetch  # noqa: F401  (part of this module's API)
from ._util import choose

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

PARTS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

#: Published files and checksums (MD5 of the .gz files), and their mirrors. The SHA-256
#: are of files that matched the published MD5; None where no such file was at hand
#: to compute it from (the MD5 alone is checked then).
DATASETS = {
    "mnist": {
        "md5": {
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "sha256": {
            "train-images-idx3-ubyte": None,
            "train-labels-idx1-ubyte":
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte":
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte":
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    },
    "fashion-mnist": {
        "md5": {
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "sha256": dict.fromkeys(PARTS),
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    },
}

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"],
}


class DataError(ValueError):
    """A data file is missing, malformed or fails its checksum."""


# --------------------------------------------------------------------------- files
class _Reader:
    """A data file read piece by piece, gunzipped on the fly when it starts with the
    gzip magic, so that no more is ever inflated than asked for; a corrupt gzip
    stream is a :class:`DataError`."""

    def __init__(self, path):
        self.path, self.file = path, open(path, "rb")
        self.gz = self.file.read(2) == b"\x1f\x8b"
        self.file.seek(0)
        self.stream = gzip.GzipFile(fileobj=self.file) if self.gz else self.file
        # The bytes of an uncompressed file (a gzip one's are known only by inflating).
        self.size = None if self.gz else os.fstat(self.file.fileno()).st_size

    def read(self, n: int) -> bytes:
        """At most ``n`` bytes (fewer at the end of the data), read a mebibyte at a
        time: a huge ``n`` allocates only what the data holds."""
        parts, left = [], n
        try:
            while left > 0:
                part = self.stream.read(min(left, 1 << 20))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{self.path}: corrupt gzip file ({exc})") from exc
        return b"".join(parts)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()
        self.file.close()


def read_idx(path, magic=None) -> np.ndarray:
    """An IDX file of unsigned bytes (``.gz`` or raw) as a uint8 array.

    The header is checked first, and a gzip file is inflated only as far as the
    header promises (and one byte more, to tell trailing bytes), so a file that
    promises little but holds much is refused without inflating it.

    Parameters
    ----------
    path : str or path-like
    magic : int, optional
        The expected magic number (``IMAGE_MAGIC`` or ``LABEL_MAGIC``).

    Raises
    ------
    DataError
        Wrong magic number, a corrupt gzip stream, or a size that does not match
        the header (truncated or with trailing bytes).
    """
    with _Reader(path) as f:
        first = f.read(4)
        if len(first) < 4:
            raise DataError(f"{path}: truncated IDX file ({len(first)} bytes, no header)")
        found = int.from_bytes(first, "big")
        ndim = first[3]
        if first[:2] != b"\0\0" or first[2] != 0x08:
            raise DataError(f"{path}: not an IDX file of unsigned bytes (magic number "
                            f"0x{found:08x})")
        if magic is not None and found != magic:
            raise DataError(f"{path}: wrong magic number 0x{found:08x}, expected "
                            f"0x{magic:08x}")
        dims = f.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise DataError(f"{path}: truncated IDX header")
        shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
        size = math.prod(shape)
        # An uncompressed file is measured, a gzip one inflated one byte past the header.
        held = None if f.size is None else f.size - 4 - 4 * ndim
        data = f.read(size + 1) if held in (None, size) else b""
        held = len(data) if held is None else held
        if held != size:
            what = "truncated" if held < size else "has trailing bytes"
            holds = f"more than {size}" if f.gz and held > size else held
            raise DataError(f"{path}: {what}: the header promises {size} values of shape "
                            f"{shape}, the file holds {holds}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()


#: Rows of a CSV parsed at a time: memory is the images' uint8 array plus one batch.
CSV_BATCH = 4096


def read_csv(path):
    """A CSV of images, one per row: label, then the pixels (0-255).

    A first row starting with ``label`` is taken as a header. The file (gzip or
    not) is read and parsed ``CSV_BATCH`` rows at a time, so that memory holds
    the images as bytes and one batch of text, not the whole text.

    Returns
    -------
    images : uint8 array (N, pixels)
    labels : int64 array (N,)

    Raises
    ------
    DataError
        A row with another number of columns, a value that is not a number,
        or a value out of range; the message gives the file and line.
    """
    images, labels, width = [], [], None
    with _Reader(path) as f:
        for rows in _csv_batches(f):
            table = _csv_table(path, rows, width)
            width = table.shape[1]
            images.append(table[:, 1:].astype(np.uint8))
            labels.append(table[:, 0].copy())
    if not images:
        raise DataError(f"{path}: no data rows")
    return np.concatenate(images), np.concatenate(labels)


def _csv_batches(f):
    """Lists of at most ``CSV_BATCH`` ``(line number, text)`` of the non-blank lines,
    without a first line that is a header."""
    batch, rest, lineno = [], b"", 0
    while True:
        chunk = f.read(1 << 20)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop() if chunk else b""
        for raw in lines:
            lineno += 1
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            if lineno == 1 and line.split(",")[0].strip().strip('"').lower() == "label":
                continue
            if line.strip():
                batch.append((lineno, line))
            if len(batch) == CSV_BATCH:
                yield batch
                batch = []
        if not chunk:
            break
    if batch:
        yield batch


def _csv_table(path, rows, width):
    """The int64 table of one batch of rows, checked; ``width`` is the first row's
    number of columns, None for the first batch."""
    try:
        table = np.loadtxt(io.StringIO("\n".join(line for _, line in rows)), delimiter=",",
                           dtype=np.int64, ndmin=2)
    except ValueError:
        table = None
    if table is None or table.shape[0] != len(rows):
        _raise_csv_error(path, rows, width)
    if width is not None and table.shape[1] != width:
        raise DataError(f"{path}:{rows[0][0]}: {table.shape[1]} columns, expected "
                        f"{width} (as on the first row)")
    if table.shape[1] < 2:
        raise DataError(f"{path}: rows need a label and pixels, found {table.shape[1]} column")
    bad = np.argwhere((table[:, 1:] < 0) | (table[:, 1:] > 255))
    if bad.size:
        r, c = bad[0]
        raise DataError(f"{path}:{rows[r][0]}: pixel {table[r, c + 1]} in column {c + 2} "
                        f"is outside 0-255")
    if (table[:, 0] < 0).any():
        r = int(np.argmax(table[:, 0] < 0))
        raise DataError(f"{path}:{rows[r][0]}: negative label {table[r, 0]}")
    return table


def _raise_csv_error(path, rows, width=None):
    # Slow path, run only on failure: find the first bad line and say what is wrong.
    for lineno, line in rows:
        fields = line.split(",")
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            raise DataError(f"{path}:{lineno}: {len(fields)} columns, expected {width} "
                            f"(as on the first row)")
        for col, field in enumerate(fields, start=1):
            try:
                value = float(field)
            except ValueError:
                raise DataError(f"{path}:{lineno}: column {col} is not a number: "
                                f"{field.strip()[:20]!r}") from None
            if not math.isfinite(value) or value != int(value):
                raise DataError(f"{path}:{lineno}: column {col} is not an integer: "
                                f"{field.strip()[:20]!r}")
    raise DataError(f"{path}: could not be read as CSV")


def _idx_paths(folder):
    """{part: file} for the IDX parts present in ``folder`` (``.gz`` or raw)."""
    found = {}
    for part in PARTS:
        for name in (part + ".gz", part, part.replace("-idx", ".idx")):
            if os.path.isfile(os.path.join(folder, name)):
                found[part] = os.path.join(folder, name)
                break
    return found


def _csv_pair(folder):
    names = [n for n in os.listdir(folder) if n.lower().endswith((".csv", ".csv.gz"))]
    train = [n for n in names if "train" in n.lower()]
    test = [n for n in names if "test" in n.lower()]
    if len(train) > 1 or len(test) > 1:
        raise DataError(f"{folder}: several CSV files match *train*/*test*: "
                        f"{sorted(train + test)}")
    if train and test:
        return os.path.join(folder, train[0]), os.path.join(folder, test[0])
    return None


def load_folder(folder):
    """``(x_train, y_train), (x_test, y_test)`` from the IDX files or CSV pair in ``folder``.

    Images come as uint8 (N, 28, 28) from IDX files, (N, pixels) from CSV; labels
    as int64.

    Raises
    ------
    FileNotFoundError
        The folder holds neither the four IDX files nor a CSV pair.
    DataError
        A file is malformed, or image and label counts differ.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no such data folder: {folder}")
    idx = _idx_paths(folder)
    if len(idx) == len(PARTS):
        arrays = []
        for part in PARTS:
            magic = IMAGE_MAGIC if "images" in part else LABEL_MAGIC
            arrays.append(read_idx(idx[part], magic))
        xtr, ytr, xte, yte = arrays
        for x, y, which in ((xtr, ytr, "train"), (xte, yte, "test")):
            if len(x) != len(y):
                raise DataError(f"{folder}: {len(x)} {which} images but {len(y)} {which} labels")
        return (xtr, ytr.astype(np.int64)), (xte, yte.astype(np.int64))
    pair = _csv_pair(folder)
    if pair:
        return read_csv(pair[0]), read_csv(pair[1])
    missing = [p for p in PARTS if p not in idx]
    raise FileNotFoundError(f"{folder} holds neither the four IDX files (missing: "
                            f"{', '.join(missing)}) nor a *train*.csv/*test*.csv pair")


# --------------------------------------------------------------------------- lookup
def cache_dir() -> str:
    """Where downloads are kept: ``$FASTMLP_CACHE``, else the user's cache folder."""
    if os.environ.get("FASTMLP_CACHE"):
        return os.environ["FASTMLP_CACHE"]
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "fastmlp")


def load(name, path=None, download=True, mirrors=None, verbose=True):
    """Load the data set ``name`` (``mnist`` or ``fashion-mnist``); see the module docstring.

    Parameters
    ----------
    name : str
    path : str or path-like, optional
        A folder with the data; when given, nothing else is tried.
    download : bool
        Download what the cache lacks (default True).
    mirrors : sequence of str, optional
        Base URLs to download from instead of the published mirrors.
    verbose : bool
        Show download progress on stderr.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)

    Raises
    ------
    ValueError
        Unknown data set name.
    FileNotFoundError
        Nothing found and downloading is off.
    DownloadError
        Every mirror failed for a file (nothing is left in the cache).
    DataError
        A file is malformed.
    """
    choose("dataset", name, tuple(DATASETS))
    if path is not None:
        return load_folder(path)
    env = os.environ.get("FASTMLP_DATA")
    if env:
        folder = os.path.join(env, name)
        if os.path.isdir(folder) and (len(_idx_paths(folder)) == len(PARTS) or
                                      _csv_pair(folder)):
            return load_folder(folder)
    folder = os.path.join(cache_dir(), name)
    found = _idx_paths(folder) if os.path.isdir(folder) else {}
    missing = [p for p in PARTS if p not in found]
    if missing:
        if not download:
            raise FileNotFoundError(f"{name} is not in {folder} (missing: {', '.join(missing)}) "
                                    f"and download=False; pass path= or set FASTMLP_DATA")
        spec = DATASETS[name]
        os.makedirs(folder, exist_ok=True)
        for part in missing:
            fetch(part + ".gz", folder, spec["md5"][part], mirrors or spec["mirrors"], verbose,
                  sha256=spec["sha256"].get(part))
    return load_folder(folder)


def load_mnist(path=None, **kwargs):
    """MNIST: ``(x_train, y_train), (x_test, y_test)``, uint8 images and int64 labels.

    See ``load`` for ``path``, ``download``, ``mirrors`` and ``verbose``.

    Examples
    --------
    >>> (x, y), (xt, yt) = fastmlp.datasets.load_mnist("data/mnist")  # doctest: +SKIP
    """
    return load("mnist", path, **kwargs)


def load_fashion_mnist(path=None, **kwargs):
    """Fashion-MNIST, in MNIST's format and shapes. See ``load``."""
    return load("fashion-mnist", path, **kwargs)
