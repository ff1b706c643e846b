"""Small helpers every part of fastmlp shares: named choices, number checks, comma
lists, JSON output and atomic file writes."""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from contextlib import contextmanager


def choose(kind: str, name, valid, plural=None):
    """``name`` if it is one of ``valid``, else ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in valid:
        raise ValueError(f"unknown {kind} {name!r}; valid {plural or kind + 's'} are: "
                         f"{', '.join(valid)}")
    return name


def integer(name, value, minimum, maximum=None) -> int:
    """``value`` as an int >= ``minimum`` (and <= ``maximum`` when given; TypeError for
    a non-integer, bool included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def real(name, value, low=None, high=None, low_open=False, high_open=False) -> float:
    """``value`` as a finite float in the given range (TypeError for a non-number)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def comma_list(text, what, valid=None, parse=str, minimum=None) -> list:
    """The items of a comma-separated option: each one of ``valid`` (when given), or
    parsed by ``parse`` and at least ``minimum``; ValueError naming the option."""
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if valid is not None:
        bad = [v for v in items if v not in valid]
        if bad or not items:
            raise ValueError(f"unknown {what} {', '.join(bad) or repr(text)}; valid {what}s "
                             f"are: {', '.join(valid)}")
        return items
    try:
        values = [parse(v) for v in items]
    except ValueError:
        values = []
    if not values or (minimum is not None and min(values) < minimum):
        raise ValueError(f"{what} must be comma-separated values of at least {minimum}, "
                         f"got {text!r}")
    return values


@contextmanager
def atomic_write(path, mode="wb"):
    """Yield a file object writing beside ``path``; rename it into place once complete,
    so the file appears whole or not at all, even if the process is killed. The file
    is synced before the rename and its folder after it, so that after a crash of
    the machine the name holds the old file or the new one. (A process killed while
    writing leaves its ``.fastmlp-*.tmp`` beside the file.)"""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastmlp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
            dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def bar(done, total, width=30) -> str:
    """A text progress bar: ``=`` for what is done, ``>`` at its head, ``.`` for the rest."""
    filled = width * done // total if total else 0
    return "=" * max(filled - 1, 0) + (">" if filled < width else "=") + "." * (width - filled)


def write_json(path, obj, out=None) -> None:
    """``obj`` as indented JSON (what JSON lacks as text), atomically to ``path``, or to
    ``out`` when path is '-'."""
    if path == "-":
        print(json.dumps(obj, indent=2, default=str), file=out)
        return
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
