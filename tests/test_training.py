"""Training: backend parity, determinism, failure handling, and that it learns."""

import re

import numpy as np
import pytest
from conftest import TESTED_BACKENDS, make_images

import fastmlp
from fastmlp import optim

OPTIMIZERS = [
    ("sgd", {"lr": 0.05}),
    ("momentum", {"lr": 0.05, "momentum": 0.9}),
    ("nesterov", {"lr": 0.05, "momentum": 0.9}),
    ("rmsprop", {"lr": 1e-3}),
    ("adam", {"lr": 1e-3}),
]


def toy(n=200, features=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(0, 2, (classes, features))
    return centers[y] + rng.normal(0, 1, (n, features)), y


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS)
@pytest.mark.parametrize("l2", [0.0, 1e-3])
def test_backends_agree_after_20_steps(name, kwargs, l2):
    x, y = toy(n=100)
    weights = []
    for backend in ("numpy", "cpu"):
        model = fastmlp.MLP([20, 16, 12, 4], ["relu", "tanh", "softmax"], backend=backend,
                            dtype="float64", seed=3)
        h = model.fit(x, y, epochs=4, batch_size=20, optimizer=optim.get(name, **kwargs),
                      l2=l2, verbose=0)
        assert h.steps == 20
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        assert np.abs(a - b).max() <= 1e-10 * max(np.abs(a).max(), 1.0)


def test_same_seed_same_weights():
    x, y = toy()
    runs = []
    for _ in range(2):
        model = fastmlp.MLP([20, 8, 4], ["relu", "softmax"], seed=11)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    other = fastmlp.MLP([20, 8, 4], ["relu", "softmax"], seed=12)
    assert not np.array_equal(other.get_weights()[0], runs[0][0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_weights_bitwise_identical_with_1_and_2_threads(dtype, threads):
    if not fastmlp.threads.openmp_enabled():
        pytest.skip("the cpu backend was built without OpenMP")
    x, y = toy(n=300, features=64, classes=10)
    runs = []
    for t in (1, 2):
        fastmlp.set_num_threads(t)
        assert fastmlp.get_num_threads() == t
        model = fastmlp.MLP([64, 50, 10], ["relu", "softmax"], dtype=dtype, seed=5)
        h = model.fit(x, y, epochs=2, batch_size=32, optimizer="adam", l2=1e-4, verbose=0)
        runs.append((model.get_weights(), h.history["loss"]))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("backend", TESTED_BACKENDS)
def test_learns_a_separable_problem(backend):
    x, y = make_images(600, seed=2)
    xs = x.reshape(600, -1) / 255
    model = fastmlp.MLP([784, 32, 10], ["relu", "softmax"], backend=backend)
    h = model.fit(xs[:500], y[:500], epochs=3, batch_size=32, validation_data=(xs[500:], y[500:]),
                  verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert h.history["val_accuracy"][-1] > 0.9
    assert model.evaluate(xs[500:], y[500:])["accuracy"] > 0.9


def test_mnist_test_images_are_learned(shared_data):
    # The real MNIST test set: train on the even images, test on the odd ones.
    (xt, yt) = [fastmlp.datasets.read_idx(shared_data / "mnist" / f)
                for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
    x = fastmlp.preprocessing.scale_unit(xt)
    model = fastmlp.MLP([784, 64, 10], ["relu", "softmax"], backend="cpu")
    model.fit(x[0::2], yt[0::2], epochs=2, batch_size=64, verbose=0)
    assert model.evaluate(x[1::2], yt[1::2])["accuracy"] > 0.88


# Every backend, the simulated GPU included (whose NumPy arithmetic warns on overflow).
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", fastmlp.BACKENDS)
def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_weights(backend):
    x, y = toy(n=16)
    kwargs = dict(layers=[20, 8, 4], activations=["relu", "linear"], loss="mse", seed=1,
                  backend=backend)
    model = fastmlp.MLP(**kwargs)
    # One step per epoch, so "n epochs" is "n steps".
    with pytest.raises(FloatingPointError) as info:
        model.fit(x, y, epochs=100, batch_size=16, optimizer="sgd", lr=50.0, shuffle=False,
                  verbose=0)
    message = str(info.value)
    epoch = int(re.search(r"epoch (\d+)", message).group(1))
    assert "step 1" in message and epoch > 1
    for w in model.get_weights():
        assert np.isfinite(w).all()
    # The kept weights are those the last finite loss was measured with: the update
    # after that measurement is what made the loss non-finite, so it is undone.
    again = fastmlp.MLP(**kwargs)
    again.fit(x, y, epochs=epoch - 2, batch_size=16, optimizer="sgd", lr=50.0, shuffle=False,
              verbose=0)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.history.steps == model.optimizer.iterations == epoch - 1


class InterruptingSGD(optim.SGD):
    """Plain SGD that raises KeyboardInterrupt inside update number `at`, after the
    kernel wrote the new parameters and before fit took them."""

    def __init__(self, lr, at):
        super().__init__(lr)
        self.at = at

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        if self.iterations == self.at:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_weights_and_history_of_completed_steps():
    x, y = toy(n=64)
    kwargs = dict(layers=[20, 8, 4], activations=["relu", "softmax"], seed=2)
    model = fastmlp.MLP(**kwargs)
    with pytest.warns(UserWarning, match="interrupted"):
        h = model.fit(x, y, epochs=5, batch_size=16, optimizer=InterruptingSGD(0.1, at=7),
                      shuffle=False, verbose=0)
    assert h.interrupted and h.steps == 6
    assert len(h.history["loss"]) == 2  # one full epoch, one partial (2 of 4 steps)
    # The same 6 steps: one epoch of 4, then the first 2 batches again.
    reference = fastmlp.MLP(**kwargs)
    opt = optim.SGD(0.1)
    reference.fit(x, y, epochs=1, batch_size=16, optimizer=opt, shuffle=False, verbose=0)
    reference.fit(x[:32], y[:32], epochs=1, batch_size=16, optimizer=opt, shuffle=False,
                  verbose=0)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_history_and_validation_split():
    x, y = toy(n=100)
    model = fastmlp.MLP([20, 8, 4], ["relu", "softmax"])
    h = model.fit(x, y, epochs=3, batch_size=10, validation_split=0.2, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in h.history.values())
    assert len(h.epoch_seconds) == 3 and all(s > 0 for s in h.epoch_seconds)
    assert h.steps == 3 * 8  # 80 training samples in batches of 10
    assert model.history is h
    # the held-out samples are the last 20, scored with the final weights
    assert h.history["val_loss"][-1] == pytest.approx(model.evaluate(x[80:], y[80:])["loss"],
                                                      rel=1e-5)


def test_zero_epochs_changes_nothing():
    x, y = toy()
    model = fastmlp.MLP([20, 8, 4], ["relu", "softmax"])
    before = model.get_weights()
    h = model.fit(x, y, epochs=0, verbose=0)
    assert h.steps == 0
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_verbose_output(capsys):
    x, y = toy(n=40)
    model = fastmlp.MLP([20, 8, 4], ["relu", "softmax"])
    model.fit(x, y, epochs=2, batch_size=10, validation_split=0.25, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("Epoch 2/2 - ")
    assert re.match(r"Epoch 1/2 - 3/3 - [\d.]+s - loss: [\d.]+ - accuracy: [\d.]+ - "
                    r"val_loss: [\d.]+ - val_accuracy: [\d.]+", out[0])
