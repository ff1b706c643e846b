import numpy as np
import pytest

import fastmlp
from fastmlp import metrics, preprocessing, recipes


def test_accuracy_and_confusion():
    y = np.array([0, 1, 2, 2, 1])
    p = np.array([0, 2, 2, 2, 1])
    assert metrics.accuracy(y, p) == pytest.approx(0.8)
    cm = metrics.confusion_matrix(y, p)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 2]]
    assert metrics.confusion_matrix(y, p, n_classes=4).shape == (4, 4)


def test_classification_report():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 2])
    r = metrics.classification_report(y, p, output_dict=True)
    assert r["0"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert r["1"]["precision"] == pytest.approx(2 / 3) and r["1"]["recall"] == 1.0
    assert r["2"]["precision"] == 1.0 and r["2"]["recall"] == 0.5
    assert r["macro avg"]["recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    text = metrics.classification_report(y, p, target_names=["cat", "dog", "emu"])
    assert "precision" in text and "dog" in text and "macro avg" in text and "accuracy" in text


def test_report_with_an_absent_class_counts_zero():
    r = metrics.classification_report([0, 0], [0, 0], target_names=["a", "b"], output_dict=True)
    assert r["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_misclassified_rows():
    rows = metrics.misclassified([3, 1, 4, 1, 5], [3, 7, 4, 1, 9])
    assert rows.tolist() == [[1, 1, 7], [4, 5, 9]]


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="one length"):
        metrics.accuracy([0, 1], [0])


def test_scalings_and_one_hot():
    x = np.array([0, 255], np.uint8)
    np.testing.assert_allclose(preprocessing.scale_unit(x), [0, 1])
    np.testing.assert_allclose(preprocessing.scale_lecture(x), [0.01, 1.0])
    t = preprocessing.one_hot([1, 0], 3, on=0.99, off=0.01)
    np.testing.assert_allclose(t, [[0.01, 0.99, 0.01], [0.99, 0.01, 0.01]])
    with pytest.raises(ValueError, match="label 3"):
        preprocessing.one_hot([3], 3)
    with pytest.raises(ValueError, match="unknown scaling"):
        preprocessing.scale(x, "zscore")


@pytest.mark.parametrize("name,layers,opt,lr,batch,epochs", [
    ("keras", (784, 512, 10), "rmsprop", 1e-3, 128, 5),
    ("dl4j", (784, 1000, 10), "nesterov", 0.006, 128, 15),
    ("lecture", (784, 30, 10), "sgd", 1e-2, 1, 1),
])
def test_recipes_match_their_sources(name, layers, opt, lr, batch, epochs):
    r = recipes.get(name)
    model = r.build(backend="numpy")
    assert tuple(model.layers) == layers and model.meta["recipe"] == name
    args = r.fit_args()
    assert args["optimizer"].name == opt and args["optimizer"].lr == lr
    assert args["batch_size"] == batch and args["epochs"] == epochs


def test_lecture_recipe_details():
    r = recipes.get("lecture")
    model = r.build(backend="numpy")
    W1, b1, W2, b2 = model.get_weights()
    assert 0 <= b1.min() and b1.max() <= 1  # b ~ U(0, 1)
    assert abs(W1.std() * np.sqrt(784) - 1) < 0.05  # W ~ N(0, 1) / sqrt(fan_in)
    t = r.targets(np.array([2]))
    assert t[0, 2] == pytest.approx(0.99) and t[0, 0] == pytest.approx(0.01)
    assert r.inputs(np.array([0]))[0] == pytest.approx(0.01)
    assert model.loss == "binary_cross_entropy" and model.dtype == np.float64


def test_dl4j_recipe_trains_as_nesterov_with_l2_from_seed_123():
    # The recipe's model and training equal the same network written out by hand.
    r = recipes.get("dl4j")
    model = r.build(backend="numpy", n_inputs=12)
    by_hand = fastmlp.MLP([12, 1000, 10], ["relu", "softmax"], init="xavier_normal", seed=123,
                          backend="numpy")
    for a, b in zip(model.get_weights(), by_hand.get_weights()):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    x, y = rng.random((300, 12)).astype(np.float32), rng.integers(0, 10, 300)
    model.fit(x, r.targets(y), verbose=0, **r.fit_args(epochs=2))
    by_hand.fit(x, y, epochs=2, batch_size=128, l2=1e-4, verbose=0,
                optimizer=fastmlp.optim.Nesterov(lr=0.006, momentum=0.9))
    for a, b in zip(model.get_weights(), by_hand.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_public_api_end_to_end(tmp_path):
    # What the package exports is enough to train, save, load, check and time a model.
    from importlib.metadata import version

    assert fastmlp.__version__ == version("fastmlp")
    rng = np.random.default_rng(1)
    x, y = rng.random((40, 5)), rng.integers(0, 3, 40)
    before = fastmlp.get_num_threads()
    fastmlp.set_num_threads(1)
    try:
        assert fastmlp.get_num_threads() == 1
        model = fastmlp.MLP([5, 4, 3], ["tanh", "softmax"], backend="numpy", dtype="float64")
        history = model.fit(x, y, epochs=2, batch_size=8, optimizer=fastmlp.optim.SGD(0.1),
                            verbose=0)
    finally:
        fastmlp.set_num_threads(before)
    assert isinstance(history, fastmlp.History) and history.steps == 10
    model.save(tmp_path / "m.npz")
    again = fastmlp.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.predict_proba(x), model.predict_proba(x))
    assert max(fastmlp.gradcheck(again, x[:4], y[:4]).values()) < 1e-6
    assert fastmlp.metrics.accuracy(y, again.predict(x)) == again.evaluate(x, y)["accuracy"]
