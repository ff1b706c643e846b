"""The Keras-like API: weights, files, inference, input layouts."""

import os
import zipfile

import numpy as np
import pytest
from conftest import TESTED_BACKENDS

import fastmlp


@pytest.fixture
def trained():
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 12)), rng.integers(0, 3, 60)
    model = fastmlp.MLP([12, 7, 3], ["tanh", "softmax"], seed=4)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model, x, y


def test_weights_round_trip(trained):
    model, x, _ = trained
    w = model.get_weights()
    assert [a.shape for a in w] == [(12, 7), (7,), (7, 3), (3,)]
    fresh = fastmlp.MLP([12, 7, 3], ["tanh", "softmax"], seed=99)
    fresh.set_weights(w)
    np.testing.assert_array_equal(fresh.predict_proba(x), model.predict_proba(x))
    w[0][...] = 0  # copies: changing them does not touch the model
    assert np.abs(model.get_weights()[0]).max() > 0


def test_set_weights_rejects_bad_lists(trained):
    model, _, _ = trained
    w = model.get_weights()
    with pytest.raises(ValueError, match="expected 4 arrays"):
        model.set_weights(w[:3])
    with pytest.raises(ValueError, match=r"W2 must have shape \(7, 3\)"):
        model.set_weights([w[0], w[1], w[2].T, w[3]])
    w[1][0] = np.nan
    with pytest.raises(ValueError, match="b1 must hold finite"):
        model.set_weights(w)


@pytest.mark.parametrize("backend", TESTED_BACKENDS)
def test_save_and_load(trained, tmp_path, backend):
    model, x, y = trained
    model.meta["note"] = "hello"
    path = tmp_path / "m.npz"
    model.save(path)
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary left behind
    loaded = fastmlp.load(path, backend=backend)
    assert loaded.get_config()["layers"] == [12, 7, 3] and loaded.backend == backend
    assert loaded.meta == {"note": "hello"}
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), rtol=1e-5)
    assert loaded.evaluate(x, y)["accuracy"] == model.evaluate(x, y)["accuracy"]


def test_save_is_atomic(trained, tmp_path, monkeypatch):
    model, _, _ = trained
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]


def test_load_rejects_truncated_and_foreign_files(trained, tmp_path):
    model, _, _ = trained
    good = tmp_path / "m.npz"
    model.save(good)
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="not a readable fastmlp model"):
        fastmlp.load(truncated)
    foreign = tmp_path / "f.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match="not a readable fastmlp model"):
        fastmlp.load(foreign)
    text = tmp_path / "x.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable fastmlp model"):
        fastmlp.load(text)
    with pytest.raises(FileNotFoundError):
        fastmlp.load(tmp_path / "missing.npz")


def test_load_rejects_newer_format(trained, tmp_path):
    import json

    model, _, _ = trained
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays["__header__"]))
    header["format_version"] = 99
    arrays["__header__"] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="format 99"):
        fastmlp.load(path)
    assert zipfile.is_zipfile(path)


def test_predict_and_evaluate(trained):
    model, x, y = trained
    p = model.predict_proba(x, batch_size=7)
    assert p.shape == (60, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(x), p.argmax(axis=1))
    scores = model.evaluate(x, y, batch_size=13)
    assert scores["accuracy"] == pytest.approx(np.mean(model.predict(x) == y))
    one_hot = np.eye(3)[y]
    assert model.evaluate(x, one_hot)["loss"] == pytest.approx(scores["loss"], rel=1e-6)


def test_one_output_binary_model():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (200, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = fastmlp.MLP([3, 8, 1], ["tanh", "sigmoid"], loss="binary_cross_entropy")
    model.fit(x, y, epochs=20, batch_size=20, optimizer="adam", lr=0.01, verbose=0)
    assert set(np.unique(model.predict(x))) <= {0, 1}
    assert model.evaluate(x, y)["accuracy"] > 0.9


@pytest.mark.parametrize("backend", TESTED_BACKENDS)
def test_layouts_give_the_same_result(backend):
    rng = np.random.default_rng(2)
    images = (rng.random((20, 28, 28)) * 255).astype(np.uint8)
    y = rng.integers(0, 10, 20)
    base = images.reshape(20, 784).astype(np.float32)
    variants = [
        images,                                   # (N, 28, 28) uint8
        np.asfortranarray(base),                  # Fortran order
        np.repeat(base, 2, axis=1)[:, ::2],       # non-contiguous view
        base.astype(np.int64),                    # another numeric dtype
    ]
    results = []
    for xv in [base] + variants:
        m = fastmlp.MLP([784, 16, 10], ["relu", "softmax"], backend=backend, seed=3)
        m.fit(xv, y, epochs=1, batch_size=8, verbose=0)
        results.append((m.get_weights()[0], m.predict_proba(xv)))
    for w, p in results[1:]:
        np.testing.assert_array_equal(w, results[0][0])
        np.testing.assert_array_equal(p, results[0][1])


def test_astype_and_summary(trained):
    model, x, _ = trained
    m64 = model.astype("float64", backend="numpy")
    assert m64.dtype == np.float64 and m64.backend == "numpy"
    np.testing.assert_allclose(m64.predict_proba(x), model.predict_proba(x), rtol=1e-5)
    text = model.summary()
    assert "dense1" in text and f"{model.n_params:,}" in text
    assert model.param_names == ["W1", "b1", "W2", "b2"]
    assert "MLP(" in repr(model)


def test_optimizer_objects_and_names():
    opt = fastmlp.optim.RMSprop(lr=1e-3, rho=0.9, eps=1e-7)
    assert opt.get_config() == {"name": "rmsprop", "lr": 1e-3, "rho": 0.9, "eps": 1e-7}
    assert isinstance(fastmlp.optim.get("adam", lr=0.1), fastmlp.optim.Adam)
    assert fastmlp.optim.get("sgd").lr == 0.01
    with pytest.raises(ValueError, match="not both"):
        fastmlp.optim.get(opt, lr=0.1)
    with pytest.raises(ValueError, match="rho"):
        fastmlp.optim.RMSprop(rho=1.5)


def test_optimizer_state_persists_across_fit_calls():
    # Two fits of 2 epochs with one Adam object equal one fit of 4 epochs.
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 5)), rng.integers(0, 2, 32)
    a, b = (fastmlp.MLP([5, 4, 2], ["relu", "softmax"], seed=1) for _ in range(2))
    opt = fastmlp.optim.Adam(lr=0.01)
    a.fit(x, y, epochs=2, batch_size=32, optimizer=opt, shuffle=False, verbose=0)
    a.fit(x, y, epochs=2, batch_size=32, optimizer=opt, shuffle=False, verbose=0)
    b.fit(x, y, epochs=4, batch_size=32, optimizer=fastmlp.optim.Adam(lr=0.01), shuffle=False,
          verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert opt.iterations == 4
