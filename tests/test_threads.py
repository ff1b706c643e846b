"""Calls on one model from several threads are serialised (fastmlp._lock).

The compiled kernels release the GIL, so without the lock two ``fit`` calls on one
model interleave their steps. The tests check the outcome against the sequential
orders: the final weights are those of one of them, and every prediction made
meanwhile is that of a model between whole calls.
"""

import pickle
import threading

import numpy as np
import pytest

import fastmlp
from fastmlp import _lock

JOIN = 120  # seconds: a deadlock fails the test instead of hanging it


def data(seed, n=96, d=12, k=3):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype=np.float32), rng.integers(0, k, n)


def model(backend, seed=3):
    return fastmlp.MLP([12, 32, 3], ["relu", "softmax"], backend=backend, seed=seed)


FIT = dict(epochs=3, batch_size=8, verbose=0)


def run_threads(*targets):
    workers = [threading.Thread(target=t) for t in targets]
    for w in workers:
        w.start()
    for w in workers:
        w.join(JOIN)
        assert not w.is_alive(), "a thread did not finish: deadlock"


def flat(m):
    return np.concatenate([p.ravel() for p in m.get_weights()])


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_two_fits_and_predictions_equal_a_sequential_order(backend):
    (xa, ya), (xb, yb), (xp, _) = data(1), data(2), data(3, n=40)
    # The states a model can be in between whole calls: the start, after A or B
    # alone, after A then B, after B then A.
    states = {}
    for order in ("", "a", "b", "ab", "ba"):
        m = model(backend)
        for step in order:
            m.fit(*((xa, ya) if step == "a" else (xb, yb)), **FIT)
        states[order] = (flat(m), m.predict_proba(xp))
    assert not np.array_equal(states["ab"][0], states["ba"][0])

    shared = model(backend)
    seen, stop = [], threading.Event()

    def predict_loop():
        while not stop.is_set():
            seen.append(shared.predict_proba(xp))

    def fit_a():
        shared.fit(xa, ya, **FIT)

    def fit_b():
        shared.fit(xb, yb, **FIT)

    looper = threading.Thread(target=predict_loop)
    looper.start()
    try:
        run_threads(fit_a, fit_b)
    finally:
        stop.set()
        looper.join(JOIN)
    final = flat(shared)
    assert any(np.array_equal(final, states[o][0]) for o in ("ab", "ba"))
    assert seen
    for p in seen:
        assert any(np.array_equal(p, s[1]) for s in states.values())


def test_different_models_in_threads_equal_sequential():
    (xa, ya), (xb, yb) = data(4), data(5)
    alone = [model("cpu", 1), model("cpu", 2)]
    alone[0].fit(xa, ya, **FIT)
    alone[1].fit(xb, yb, **FIT)
    both = [model("cpu", 1), model("cpu", 2)]
    run_threads(lambda: both[0].fit(xa, ya, **FIT), lambda: both[1].fit(xb, yb, **FIT))
    for a, b in zip(alone, both):
        assert np.array_equal(flat(a), flat(b))


def test_another_models_lock_does_not_block():
    busy, free = model("cpu", 1), model("cpu", 2)
    x, _ = data(6)
    done = []
    with _lock.lock_of(busy):  # busy is "in use" by this thread
        run_threads(lambda: done.append(free.predict(x)))
    assert len(done) == 1


def test_a_second_thread_waits_for_the_call_in_progress():
    shared = model("cpu")
    x, y = data(7)
    inside, release = threading.Event(), threading.Event()

    class Hold(fastmlp.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            inside.set()
            release.wait(JOIN)

    fitter = threading.Thread(target=lambda: shared.fit(x, y, epochs=1, verbose=0,
                                                        callbacks=[Hold()]))
    fitter.start()
    assert inside.wait(JOIN)
    results = []
    waiter = threading.Thread(target=lambda: results.append(shared.get_weights()))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not results, "get_weights ran during another thread's fit"
    release.set()
    fitter.join(JOIN)
    waiter.join(JOIN)
    assert not fitter.is_alive() and not waiter.is_alive()
    assert len(results) == 1


def test_callbacks_may_call_the_model_inside_fit(tmp_path):
    """The lock is re-entrant: evaluate, save and set_weights inside fit, on the
    fitting thread, do not deadlock."""
    shared = model("cpu")
    x, y = data(8)
    seen = []

    class Use(fastmlp.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            m = self.model
            seen.append(m.evaluate(x, y)["accuracy"])
            m.save(tmp_path / f"e{epoch}.npz")
            m.set_weights(m.get_weights())

    run_threads(lambda: shared.fit(x, y, epochs=2, verbose=0, callbacks=[Use()]))
    assert len(seen) == 2 and (tmp_path / "e1.npz").exists()


def test_pickling_and_copies_leave_the_lock_out():
    m = model("cpu")
    x, y = data(9)
    m.fit(x, y, **FIT)  # the lock now exists
    assert _lock.ATTRIBUTE in m.__dict__
    clone = pickle.loads(pickle.dumps(m))
    assert _lock.lock_of(clone) is not _lock.lock_of(m)
    assert np.array_equal(flat(clone), flat(m))


def test_sklearn_wrapper_serialises_partial_fit():
    pytest.importorskip("sklearn")
    from sklearn.base import clone

    from fastmlp.sklearn import MLPClassifier

    (xa, ya), (xb, yb) = data(10), data(11)
    classes = np.arange(3)
    first = MLPClassifier((16,), random_state=0, batch_size=8)
    first.partial_fit(xa[:8], ya[:8], classes=classes)
    orders = []
    for pair in ((xa, ya, xb, yb), (xb, yb, xa, ya)):
        est = clone(first).partial_fit(xa[:8], ya[:8], classes=classes)
        est.partial_fit(*pair[:2]).partial_fit(*pair[2:])
        orders.append(est.coefs_)
    run_threads(lambda: first.partial_fit(xa, ya), lambda: first.partial_fit(xb, yb))
    assert first.n_iter_ == 3 and len(first.loss_curve_) == 3
    assert any(all(np.array_equal(a, b) for a, b in zip(first.coefs_, o)) for o in orders)
    copy = pickle.loads(pickle.dumps(first))
    assert np.array_equal(copy.predict(xa), first.predict(xa))


def test_thread_counts_belong_to_each_thread():
    """A count set in one thread (as the sklearn wrapper's n_threads sets it) is
    not seen by another, and is put back on leaving."""
    if not fastmlp.threads.openmp_enabled():
        pytest.skip("built without OpenMP: one thread everywhere")
    start = fastmlp.get_num_threads()
    inside, release, seen = threading.Event(), threading.Event(), []

    def hold_one():
        with fastmlp.threads.num_threads(1):
            seen.append(fastmlp.get_num_threads())
            inside.set()
            release.wait(JOIN)

    worker = threading.Thread(target=hold_one)
    worker.start()
    assert inside.wait(JOIN)
    seen.append(fastmlp.get_num_threads())
    release.set()
    worker.join(JOIN)
    assert seen == [1, start] and fastmlp.get_num_threads() == start


# The compiled step's watch on shared cores (_cpu._Sharing), fed clock readings.
def _windows(guard, uses, t=0.0, cpu=0.0, window=0.021, threads=2):
    """Feeds one window per entry of ``uses`` (the share of the threads' wall time
    the process got as CPU time) and returns the thread count after each."""
    counts = []
    for use in uses:
        t += window
        cpu += use * window * threads
        counts.append(guard.observe(t, cpu))
    return counts, t, cpu


def test_one_stalled_window_keeps_the_threads():
    cpu_mod = pytest.importorskip("fastmlp._cpu")
    guard = cpu_mod._Sharing(2)
    guard.begin(0.0, 0.0)
    counts, _, _ = _windows(guard, [1.0, 0.4, 1.0, 0.5, 0.95, 0.3, 1.0])
    assert counts == [2] * 7


def test_shared_cores_lower_the_threads_then_try_again_after_a_pause():
    cpu_mod = pytest.importorskip("fastmlp._cpu")
    guard = cpu_mod._Sharing(2)
    guard.begin(0.0, 0.0)
    counts, t, cpu = _windows(guard, [1.0, 0.5, 0.5])
    assert counts == [2, 2, 1]
    # One thread until the pause (0.25 s) is over ...
    assert guard.observe(t + 0.2, cpu + 0.2) == 1
    assert guard.observe(t + 0.26, cpu + 0.26) == 2
    # ... and, the sharing still there, one thread again after one window, for
    # twice as long.
    counts, t, cpu = _windows(guard, [0.5], t + 0.26, cpu + 0.26)
    assert counts == [1]
    assert guard.observe(t + 0.45, cpu + 0.45) == 1
    assert guard.observe(t + 0.51, cpu + 0.51) == 2
    # A window at full use ends the sharing: two low windows are needed again.
    counts, _, _ = _windows(guard, [1.0, 0.5, 1.0, 0.5, 0.5], t + 0.51, cpu + 0.51)
    assert counts == [2, 2, 2, 2, 1]


def test_a_window_is_at_least_20_ms_and_one_thread_is_never_lowered():
    cpu_mod = pytest.importorskip("fastmlp._cpu")
    guard = cpu_mod._Sharing(2)
    guard.begin(0.0, 0.0)
    # Short steps at no CPU at all: they only lengthen the window.
    counts, _, _ = _windows(guard, [0.0] * 5, window=0.003)
    assert counts == [2] * 5
    single = cpu_mod._Sharing(1)
    single.begin(0.0, 0.0)
    assert _windows(single, [0.1] * 4)[0] == [1] * 4
