"""Small helpers every part of fastmlp shares: named choices, number checks, comma
lists, JSON output and atomic file writes."""

from __future__ import annotations

import json
import math
import numbers
import os
import socket
import tempfile
from contextlib import contextmanager, suppress


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
    the machine the name holds the old file or the new one.

    The temporary file is ``.<name>.<host>.<pid>.<random>.fastmlp.tmp``. A process
    killed while writing leaves it behind; the next write of the same name on the
    same host removes those whose process is gone (on POSIX)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = _temporary_prefix(path)
    _remove_stale(folder, prefix)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=TEMP_SUFFIX,
                               dir=folder)
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


TEMP_SUFFIX = ".fastmlp.tmp"


def _temporary_prefix(path) -> str:
    """``.<name>.<host>.``, the start of ``path``'s temporary files' names on this host
    (the name cut to 100 characters, to stay within file-name limits)."""
    host = socket.gethostname().replace(os.sep, "_")[:60]
    return f".{os.path.basename(path)[:100]}.{host}."


def _remove_stale(folder, prefix) -> None:
    """Remove the temporary files of ``prefix`` left by processes that no longer run."""
    if os.name != "posix":  # os.kill(pid, 0) probes only on POSIX
        return
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
            continue
        with suppress(OSError):
            os.unlink(os.path.join(folder, name))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by another user
        return True
    return True


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
