"""The numerical-derivative trainer against its NumPy reference and against backprop."""

import re

import numpy as np
import pytest

import fastmlp
from fastmlp import numerical


def lecture_net(n_in=9, n_hid=6, n_out=4, seed=0):
    return fastmlp.MLP([n_in, n_hid, n_out], ["sigmoid", "sigmoid"],
                       loss="binary_cross_entropy", init="lecture", dtype="float64", seed=seed)


def lecture_data(n, n_in, n_out, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, n_in)) / 255 * 0.99 + 0.01
    labels = rng.integers(0, n_out, n)
    t = fastmlp.preprocessing.one_hot(labels, n_out, on=0.99, off=0.01, dtype="float64")
    return x, t


def worst(fast, reference):
    """Largest difference over the blocks, relative to the largest reference entry."""
    scale = max(np.abs(r).max() for r in reference)
    return max(np.abs(f - r).max() for f, r in zip(fast, reference)) / scale


# ---------------------------------------------------------------------- gradients
@pytest.mark.parametrize("shape", [(9, 6, 4), (7, 5, 1), (13, 9, 10), (4, 3, 2), (1, 1, 1)])
@pytest.mark.parametrize("h", [1e-4, 1e-3, 0.05, 0.5])
def test_fast_differences_equal_a_full_recomputation(shape, h):
    # h = 1e-4 and 1e-3 take the series; 0.05 and 0.5 the library functions.
    n_in, n_hid, n_out = shape
    for seed in range(3):
        m = lecture_net(*shape, seed=seed)
        x, t = lecture_data(1, n_in, n_out, seed)
        fast = numerical.gradients(m, x[0], t[0], h)
        slow = numerical.naive_gradients(m, x[0], t[0], h)
        assert [f.shape for f in fast] == [w.shape for w in m.get_weights()]
        assert worst(fast, slow) < 1e-8


def test_every_simd_level(level):
    m = lecture_net(13, 9, 10, seed=2)
    x, t = lecture_data(3, 13, 10, seed=2)
    assert worst(numerical.gradients(m, x[0], t[0]),
                 numerical.naive_gradients(m, x[0], t[0])) < 1e-8
    reference = lecture_net(13, 9, 10, seed=2)
    m.fit(x, t, epochs=1, trainer="numerical", lr=0.3, shuffle=False, verbose=0)
    for xi, ti in zip(x, t):
        numerical.naive_step(reference, xi, ti, lr=0.3)
    for a, b in zip(m.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_fast_differences_on_the_lecture_network():
    m = fastmlp.recipes.get("lecture").build()
    x, t = lecture_data(1, 784, 10, seed=5)
    assert worst(numerical.gradients(m, x[0], t[0]),
                 numerical.naive_gradients(m, x[0], t[0])) < 1e-8


def test_large_changes_fall_back_to_the_library_functions():
    # Hidden unit 0 feeds the outputs through weights so large that its changes leave
    # the series' range (the whole unit falls back); unit 1's weights keep each change
    # in range but, with every output near 1, the ratio of the products leaves it for
    # 8 of the 10 inputs (those lanes fall back). Then one large input takes the
    # changes of every unit out of range.
    m = lecture_net(10, 3, 10, seed=1)
    W1, b1, W2, b2 = m.get_weights()
    W2[0] = 5000.0
    W2[1] = 35.0
    b2[:] = 8.0
    m.set_weights([W1, b1, W2, b2])
    x, t = lecture_data(1, 10, 10, seed=2)
    for big in (None, 40.0):
        if big is not None:
            x[0, 3] = big
        fast = numerical.gradients(m, x[0], t[0])
        slow = numerical.naive_gradients(m, x[0], t[0])
        assert worst(fast, slow) < 1e-8


def test_accepts_a_label_for_the_target():
    m = lecture_net()
    x, _ = lecture_data(1, 9, 4)
    by_label = numerical.gradients(m, x[0], 2)
    by_row = numerical.gradients(m, x[0], np.eye(4)[2])
    for a, b in zip(by_label, by_row):
        np.testing.assert_array_equal(a, b)


def numeric_vs_backprop(m, x, t, h):
    _, analytic = m.loss_and_gradients(x[None], t[None])
    return worst(numerical.gradients(m, x, t, h), analytic)


def test_numerical_agrees_with_backprop_to_second_order_in_h():
    m = lecture_net(12, 7, 5, seed=3)
    x, t = lecture_data(1, 12, 5, seed=3)
    errors = [numeric_vs_backprop(m, x[0], t[0], h) for h in (1e-1, 1e-2, 1e-3)]
    # Central differences are off by h^2/6 times the third derivative: a tenth of h,
    # a hundredth of the error.
    for big, small in zip(errors, errors[1:]):
        assert 50 < big / small < 200
    assert numeric_vs_backprop(m, x[0], t[0], 1e-4) < 1e-7


# ---------------------------------------------------------------------- steps
def test_step_follows_the_block_order():
    x, t = lecture_data(3, 9, 4, seed=4)
    fast, slow = lecture_net(seed=4), lecture_net(seed=4)
    for xi, ti in zip(x, t):
        loss_fast = numerical.step(fast, xi, ti, lr=0.5)
        loss_slow = numerical.naive_step(slow, xi, ti, lr=0.5)
        assert loss_fast == pytest.approx(loss_slow, rel=1e-10)
    for a, b in zip(fast.get_weights(), slow.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    # Taking every block's differences at the same point is another algorithm, and
    # the comparison above can tell them apart.
    together = lecture_net(seed=4)
    for xi, ti in zip(x, t):
        grads = numerical.gradients(together, xi, ti)
        together.set_weights([w - 0.5 * g for w, g in zip(together.get_weights(), grads)])
    assert max(np.abs(a - b).max() for a, b in
               zip(together.get_weights(), slow.get_weights())) > 1e-6


def test_fit_reproduces_the_naive_trainer():
    x, t = lecture_data(12, 9, 4, seed=6)
    m = lecture_net(seed=6)
    h = m.fit(x, t, epochs=2, trainer="numerical", lr=0.3, verbose=0)
    assert h.steps == 24 and len(h.history["loss"]) == 2
    reference = lecture_net(seed=6)
    rng = np.random.default_rng([6, 1])  # the model's shuffling stream
    losses = []
    for _ in range(2):
        order = rng.permutation(len(x))
        losses.append(np.mean([numerical.naive_step(reference, x[i], t[i], lr=0.3)
                               for i in order]))
    for a, b in zip(m.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    np.testing.assert_allclose(h.history["loss"], losses, rtol=1e-10)


def test_lecture_backprop_takes_the_same_steps():
    x, t = lecture_data(30, 9, 4, seed=7)
    a, b = lecture_net(seed=7), lecture_net(seed=7)
    ha = a.fit(x, t, epochs=1, trainer="numerical", verbose=0)
    hb = b.fit(x, t, epochs=1, trainer="lecture-backprop", verbose=0)
    assert ha.history["loss"][0] == pytest.approx(hb.history["loss"][0], rel=1e-9)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-10)


def test_same_weights_for_one_and_two_threads():
    x, t = lecture_data(40, 50, 10, seed=8)
    before = fastmlp.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            fastmlp.set_num_threads(n)
            m = lecture_net(50, 30, 10, seed=8)
            m.fit(x, t, epochs=1, trainer="numerical", verbose=0)
            results.append(m.get_weights())
    finally:
        fastmlp.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_fit_with_labels_validation_and_backend_numpy():
    x, t = lecture_data(20, 9, 4, seed=9)
    labels = t.argmax(axis=1)
    m = lecture_net(seed=9).astype(backend="numpy")
    h = m.fit(x, labels, epochs=1, trainer="numerical", validation_split=0.25, verbose=0)
    assert h.steps == 15
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


# ---------------------------------------------------------------------- failures
def test_non_finite_loss_keeps_the_weights_of_the_last_finite_loss(monkeypatch):
    # Blocks of 3 samples, so that the failure can land at the start of a block and
    # the weights must be rebuilt from the block before.
    monkeypatch.setattr(numerical.LectureRunner, "chunk", 3)
    x, t = lecture_data(40, 9, 4, seed=10)
    x *= 1e150
    m = lecture_net(seed=10)
    with pytest.raises(FloatingPointError) as info:
        m.fit(x, t, epochs=1, trainer="numerical", lr=1e150, shuffle=False, verbose=0)
    step = int(re.search(r"step (\d+)", str(info.value)).group(1))
    assert step >= 2
    for w in m.get_weights():
        assert np.isfinite(w).all()
    assert m.history.steps == step - 1
    again = lecture_net(seed=10)
    if step > 2:
        again.fit(x[:step - 2], t[:step - 2], epochs=1, trainer="numerical", lr=1e150,
                  shuffle=False, verbose=0)
    for a, b in zip(m.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunk", [1, 2, 4, 5])
def test_kept_weights_do_not_depend_on_the_block_size(monkeypatch, chunk):
    x, t = lecture_data(40, 9, 4, seed=10)
    x *= 1e150

    def kept(size):
        monkeypatch.setattr(numerical.LectureRunner, "chunk", size)
        m = lecture_net(seed=10)
        with pytest.raises(FloatingPointError):
            m.fit(x, t, epochs=1, trainer="numerical", lr=1e150, shuffle=False, verbose=0)
        return m.get_weights(), m.history.steps

    (weights, steps), (reference, reference_steps) = kept(chunk), kept(1000)
    assert steps == reference_steps
    for a, b in zip(weights, reference):
        np.testing.assert_array_equal(a, b)


def interrupt_block(monkeypatch, number, after):
    """Blocks of 4 samples; Ctrl-C on block `number`, before or after its kernel call."""
    monkeypatch.setattr(numerical.LectureRunner, "chunk", 4)
    calls = {"n": 0}
    real = numerical.LectureRunner._train

    def train(self, rows, stats=None):
        calls["n"] += 1
        if calls["n"] == number and not after:
            raise KeyboardInterrupt
        done = real(self, rows, stats)
        if calls["n"] == number:
            raise KeyboardInterrupt
        return done

    monkeypatch.setattr(numerical.LectureRunner, "_train", train)
    return lambda: monkeypatch.setattr(numerical.LectureRunner, "_train", real)


@pytest.mark.parametrize("number, after", [(3, False), (2, True)])
def test_ctrl_c_keeps_the_completed_steps(monkeypatch, number, after):
    # Between blocks, or while the kernel runs: then the interruption is raised after
    # the kernel returns, and its steps count.
    restore = interrupt_block(monkeypatch, number, after)
    x, t = lecture_data(20, 9, 4, seed=11)
    m = lecture_net(seed=11)
    with pytest.warns(UserWarning, match="interrupted"):
        h = m.fit(x, t, epochs=1, trainer="numerical", shuffle=False, verbose=0)
    assert h.interrupted and h.steps == 8
    restore()
    reference = lecture_net(seed=11)
    reference.fit(x[:8], t[:8], epochs=1, trainer="numerical", shuffle=False, verbose=0)
    for a, b in zip(m.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=2), "batch_size must be 1"),
    (dict(optimizer="rmsprop"), "plain SGD"),
    (dict(optimizer="momentum"), "plain SGD"),
    (dict(l2=1e-4), "no L2"),
    (dict(h=0.0), "h must be > 0"),
    (dict(h=2.0), "h must be <= 1"),
    (dict(trainer="finite"), "unknown trainer"),
])
def test_fit_rejects_what_the_numerical_trainer_cannot_do(kwargs, message):
    x, t = lecture_data(5, 9, 4)
    kwargs = {"trainer": "numerical", **kwargs}
    with pytest.raises(ValueError, match=message):
        lecture_net().fit(x, t, verbose=0, **kwargs)


def test_h_needs_the_numerical_trainer():
    x, t = lecture_data(5, 9, 4)
    with pytest.raises(ValueError, match="trainer='numerical'"):
        lecture_net().fit(x, t, h=1e-4, verbose=0)
    with pytest.raises(ValueError, match="trainer='numerical'"):
        lecture_net().fit(x, t, h=1e-4, trainer="lecture-backprop", verbose=0)


@pytest.mark.parametrize("make, message", [
    (lambda: fastmlp.MLP([9, 6, 4], ["sigmoid", "sigmoid"], loss="binary_cross_entropy",
                         dtype="float32"), "float64"),
    (lambda: fastmlp.MLP([9, 6, 4], ["relu", "sigmoid"], loss="binary_cross_entropy",
                         dtype="float64"), "one sigmoid hidden layer"),
    (lambda: fastmlp.MLP([9, 6, 4], ["sigmoid", "softmax"], dtype="float64"),
     "one sigmoid hidden layer"),
    (lambda: fastmlp.MLP([9, 6, 5, 4], ["sigmoid"] * 3, loss="binary_cross_entropy",
                         dtype="float64"), "one sigmoid hidden layer"),
])
def test_unsupported_models_are_named(make, message):
    x, t = lecture_data(2, 9, 4)
    with pytest.raises(ValueError, match=message):
        make().fit(x, t, trainer="numerical", verbose=0)
    with pytest.raises(ValueError, match=message):
        numerical.gradients(make(), x[0], t[0])


def test_bad_samples_and_arguments():
    m = lecture_net()
    x, t = lecture_data(2, 9, 4)
    with pytest.raises(ValueError, match="expects 9"):
        numerical.gradients(m, x[0, :5], t[0])
    with pytest.raises(ValueError, match="one sample"):
        numerical.gradients(m, x, t)
    with pytest.raises(ValueError, match="NaN or Inf"):
        numerical.gradients(m, np.full(9, np.nan), t[0])
    with pytest.raises(TypeError, match="MLP"):
        numerical.gradients("model", x[0], t[0])
    with pytest.raises(ValueError, match="lr must be finite"):
        numerical.step(m, x[0], t[0], lr=np.inf)
