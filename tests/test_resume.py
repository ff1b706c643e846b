"""Resumable, exact training: fit in pieces, through a file, through pickle, copy and
joblib, gives bitwise the weights of one fit; format 1 files still load."""

import copy
import json
import pickle

import numpy as np
import pytest

import fastmlp
from fastmlp import optim, serialization

LAYERS, ACTS = [12, 10, 4], ["tanh", "softmax"]
FIT = dict(batch_size=16, verbose=0, validation_split=0.2, l2=1e-4)


def data(n=150, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, LAYERS[0])), rng.integers(0, LAYERS[-1], n)


def model(backend, **kw):
    return fastmlp.MLP(LAYERS, ACTS, backend=backend, seed=5, **kw)


def fitted(backend, epochs, opt="adam"):
    m = model(backend)
    m.fit(*data(), epochs=epochs, optimizer=opt, **FIT)
    return m


def pickle_round_trip(m, tmp_path):
    return pickle.loads(pickle.dumps(m))


def file_round_trip(m, tmp_path):
    m.save(tmp_path / "m.npz")
    return fastmlp.load(tmp_path / "m.npz")


def joblib_round_trip(m, tmp_path):
    joblib = pytest.importorskip("joblib")
    joblib.dump(m, tmp_path / "m.joblib")
    return joblib.load(tmp_path / "m.joblib")


ROUND_TRIPS = {"in memory": lambda m, p: m, "save/load": file_round_trip,
               "pickle": pickle_round_trip, "deepcopy": lambda m, p: copy.deepcopy(m),
               "joblib": joblib_round_trip}


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("opt", sorted(optim.OPTIMIZERS))
@pytest.mark.parametrize("how", list(ROUND_TRIPS))
def test_two_fits_equal_one_bitwise(backend, opt, how, tmp_path):
    whole = fitted(backend, 5, opt)
    part = ROUND_TRIPS[how](fitted(backend, 2, opt), tmp_path)
    history = part.fit(*data(), epochs=3, **FIT)  # no optimizer: the model's goes on
    assert history.epoch == [2, 3, 4]
    assert part.epochs_trained == whole.epochs_trained == 5
    assert part.optimizer.iterations == whole.optimizer.iterations
    np.testing.assert_array_equal(part.params.flat, whole.params.flat)
    np.testing.assert_array_equal(part.optimizer.state, whole.optimizer.state)
    assert history.history["val_loss"] == whole.history.history["val_loss"][2:]


def test_resume_without_shuffle_and_with_sgd_state_free(tmp_path):
    whole = model("cpu")
    whole.fit(*data(), epochs=4, optimizer="sgd", shuffle=False, **FIT)
    part = model("cpu")
    part.fit(*data(), epochs=1, optimizer="sgd", shuffle=False, **FIT)
    part = file_round_trip(part, tmp_path)
    part.fit(*data(), epochs=3, shuffle=False, **FIT)
    np.testing.assert_array_equal(part.params.flat, whole.params.flat)


def test_a_named_optimizer_starts_anew_and_lr_alone_keeps_the_state():
    m = fitted("numpy", 1)
    kept = m.optimizer
    m.fit(*data(), epochs=1, lr=5e-4, **FIT)
    assert m.optimizer is kept and kept.lr == 5e-4 and kept.iterations == 16
    m.fit(*data(), epochs=1, optimizer="adam", **FIT)
    assert m.optimizer is not kept and m.optimizer.iterations == 8


def test_a_fit_refused_for_its_data_leaves_the_kept_optimizer_alone():
    m = fitted("numpy", 1)
    x, y = data()
    with pytest.raises(ValueError):
        m.fit(x[:, :-1], y, epochs=1, lr=0.5, **FIT)
    assert m.optimizer.lr == 1e-3 and m.optimizer.iterations == 8


def test_initial_epoch_reads_epochs_as_keras_does():
    m = model("numpy")
    h = m.fit(*data(), epochs=5, initial_epoch=3, **FIT)
    assert h.epoch == [3, 4] and m.epochs_trained == 5
    assert m.fit(*data(), epochs=2, initial_epoch=4, **FIT).epoch == []


def test_save_without_optimizer(tmp_path):
    m = fitted("cpu", 1)
    m.save(tmp_path / "w.npz", include_optimizer=False)
    back = fastmlp.load(tmp_path / "w.npz")
    assert back.optimizer is None and back.epochs_trained == 1
    assert m.optimizer is not None  # the model itself keeps it


def write_format_1(m, path):
    header = {"format": serialization.FORMAT_NAME, "format_version": 1,
              "fastmlp_version": "0.1.0", "config": m.get_config(), "meta": {"x": 1}}
    np.savez(path, __header__=np.array(json.dumps(header)),
             **dict(zip(m.param_names, m.get_weights())))


def test_format_1_files_load_without_optimizer_state(tmp_path):
    m = fitted("cpu", 2)
    write_format_1(m, tmp_path / "v1.npz")
    back = fastmlp.load(tmp_path / "v1.npz")
    np.testing.assert_array_equal(back.params.flat, m.params.flat)
    assert back.optimizer is None and back.epochs_trained == 0 and back.meta == {"x": 1}
    back.fit(*data(), epochs=1, **FIT)  # trains with a new default optimizer
    assert back.optimizer.name == "rmsprop"


def test_a_users_optimizer_class_saves_weights_and_warns_on_load(tmp_path):
    class Halved(optim.SGD):
        name = "halved"

    m = model("numpy")
    m.fit(*data(), epochs=1, optimizer=Halved(lr=0.05), **FIT)
    m.save(tmp_path / "h.npz")
    with pytest.warns(UserWarning, match="without its optimizer"):
        back = fastmlp.load(tmp_path / "h.npz")
    assert back.optimizer is None
    np.testing.assert_array_equal(back.params.flat, m.params.flat)


def test_a_bad_optimizer_state_is_an_unreadable_file(tmp_path):
    m = fitted("numpy", 1)
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["optimizer_state"] = arrays["optimizer_state"][:, :-1]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="optimizer_state"):
        fastmlp.load(tmp_path / "bad.npz")


def test_optimizer_set_state_checks_its_input():
    opt = optim.Adam()
    with pytest.raises(ValueError, match="shape"):
        opt.set_state(np.zeros((1, 5)), 3)
    with pytest.raises(ValueError, match="finite"):
        opt.set_state(np.full((2, 5), np.nan), 3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.from_config({"name": "adagrad"})
    with pytest.raises(ValueError, match="bad adam"):
        optim.from_config({"name": "adam", "rho": 0.9})


def test_copies_are_independent():
    m = fitted("cpu", 1)
    c = copy.deepcopy(m)
    c.fit(*data(), epochs=1, **FIT)
    assert not np.array_equal(c.params.flat, m.params.flat)
    assert m.optimizer.iterations == 8 and c.optimizer.iterations == 16
    assert repr(c) == repr(m) and c.history is not m.history


def test_summary_prints_through_print_fn_and_returns_the_table():
    lines = []
    text = model("numpy").summary(print_fn=lines.append)
    assert lines == [text] and "total params: 174" in text
    assert model("numpy").summary(print_fn=None) == text


def test_cuda_resumes_bitwise_and_calls_callbacks_per_epoch():
    pytest.importorskip("fastmlp.backends.cuda.backend",
                        reason="numba-cuda is missing (it comes with the test extra)")
    from fastmlp.callbacks import Callback

    class Batches(Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_batch_end(self, batch, logs=None):
            self.seen.append(batch)

    rng = np.random.default_rng(1)
    x, y = rng.random((40, 6)), rng.integers(0, 3, 40)
    fit = dict(batch_size=8, verbose=0, validation_split=0.2)

    def new():
        return fastmlp.MLP([6, 5, 3], ["relu", "softmax"], backend="cuda", seed=4)

    whole, part = new(), new()
    rec = Batches()
    whole.fit(x, y, epochs=2, optimizer="adam", callbacks=[rec], **fit)
    assert rec.seen == [3, 3]  # one call per epoch, after its 4 steps
    part.fit(x, y, epochs=1, optimizer="adam", **fit)
    part = pickle.loads(pickle.dumps(part))
    assert part.fit(x, y, epochs=1, **fit).epoch == [1]
    np.testing.assert_array_equal(part.params.flat, whole.params.flat)
    np.testing.assert_array_equal(part.optimizer.state, whole.optimizer.state)
