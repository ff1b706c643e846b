"""One re-entrant lock per model, serialising the calls that read or change it.

The compiled kernels release the GIL, so without it two threads could train one
model at once and interleave their updates. A method wrapped by :func:`serialised`
holds its object's lock for the whole call: a second thread's call waits until the
first returns, and the same thread may call in again (a callback that evaluates or
saves the model inside ``fit``). Different objects have different locks and run in
parallel.

The lock lives in the instance's ``__dict__`` under :data:`ATTRIBUTE`, made on first
use, so that constructors stay as they are; ``__getstate__`` methods leave it out
(:func:`without_lock`), since a lock cannot be pickled or copied.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

ATTRIBUTE = "_fastmlp_call_lock"

F = TypeVar("F", bound=Callable[..., Any])


def lock_of(obj: Any) -> threading.RLock:
    """``obj``'s lock, made the first time it is asked for."""
    lock = obj.__dict__.get(ATTRIBUTE)
    if lock is None:
        # setdefault is atomic: two threads asking at once get the same lock.
        lock = obj.__dict__.setdefault(ATTRIBUTE, threading.RLock())
    return lock


def serialised(method: F) -> F:
    """``method`` run holding its instance's lock."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with lock_of(self):
            return method(self, *args, **kwargs)
    return call  # type: ignore[return-value]


def without_lock(state: dict) -> dict:
    """A copy of an instance's ``__dict__`` without its lock, for pickling."""
    return {k: v for k, v in state.items() if k != ATTRIBUTE}
