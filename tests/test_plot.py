"""fastmlp.plot: each figure is drawn, returned, and written as a PNG on request."""

import numpy as np
import pytest
from conftest import extra

import fastmlp

extra("matplotlib", "plot")


@pytest.fixture
def fitted():
    rng = np.random.default_rng(0)
    x = rng.random((120, 16))
    y = rng.integers(0, 3, 120)
    m = fastmlp.MLP([16, 8, 3], ["relu", "softmax"], seed=1)
    h = m.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)
    return m, h, x, y


def test_history(fitted, tmp_path):
    _, h, _, _ = fitted
    fig = fastmlp.plot.history(h, path=tmp_path / "h.png")
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["loss", "accuracy"]
    assert [line.get_label() for line in axes[0].get_lines()] == ["training", "validation"]
    np.testing.assert_array_equal(axes[0].get_lines()[0].get_xdata(), [1, 2, 3])
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="none of"):
        fastmlp.plot.history({"mae": [1.0]})


def test_confusion_matrix(fitted, tmp_path):
    m, _, x, y = fitted
    pred = m.predict(x)
    fig = fastmlp.plot.confusion_matrix(y, pred, class_names=["a", "b", "c"],
                                        path=tmp_path / "cm.png")
    ax = fig.get_axes()[0]
    counts = fastmlp.metrics.confusion_matrix(y, pred, 3)
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(counts.ravel().tolist())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert (tmp_path / "cm.png").exists()


def test_misclassified(fitted, tmp_path):
    m, _, x, y = fitted
    pred = m.predict(x)
    fig = fastmlp.plot.misclassified(x, y, pred, class_names=["a", "b", "c"], n=4,
                                     path=tmp_path / "mis.png")
    titles = [a.get_title() for a in fig.get_axes() if a.get_title()]
    rows = fastmlp.metrics.misclassified(y, pred)[:4]
    assert titles == [f"{'abc'[t]}→{'abc'[p]}" for _, t, p in rows]
    with pytest.raises(ValueError, match="image_shape"):
        fastmlp.plot.misclassified(x[:, :15], y, pred)
