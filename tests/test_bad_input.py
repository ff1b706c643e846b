"""Bad input gets a clear exception naming the problem."""

import numpy as np
import pytest

import fastmlp


@pytest.fixture
def model():
    return fastmlp.MLP([6, 5, 3], ["relu", "softmax"])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.random((10, 6)), rng.integers(0, 3, 10)


def test_wrong_feature_count_names_both_numbers(model, data):
    x, y = data
    with pytest.raises(ValueError, match="7 features.*expects 6"):
        model.fit(np.ones((10, 7)), y, verbose=0)
    with pytest.raises(ValueError, match="5 features.*expects 6"):
        model.predict(np.ones((3, 5)))


def test_length_mismatch(model, data):
    x, y = data
    with pytest.raises(ValueError, match="x has 10 samples but y has 9"):
        model.fit(x, y[:9], verbose=0)


@pytest.mark.parametrize("labels,message", [
    (np.array([0, 1, 3, 0, 1, 2, 0, 1, 2, 0]), r"label 3 at sample 2; labels must be in \[0, 2\]"),
    (np.array([0, -1, 2, 0, 1, 2, 0, 1, 2, 0]), "label -1 at sample 1"),
    (np.array([0, 1.5, 2, 0, 1, 2, 0, 1, 2, 0]), "integer labels; sample 1 has 1.5"),
    (np.array(["a"] * 10), "must hold numbers"),
    (np.ones((10, 4)), "4 columns, the model has 3 outputs"),
])
def test_bad_labels(model, data, labels, message):
    x, _ = data
    with pytest.raises((ValueError, TypeError), match=message):
        model.fit(x, labels, verbose=0)


def test_integral_float_labels_are_accepted(model, data):
    x, y = data
    model.fit(x, y.astype(float), epochs=1, verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_x(model, data, bad):
    x, y = data
    x = x.copy()
    x[4, 2] = bad
    with pytest.raises(ValueError, match="NaN or Inf.*sample 4"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.evaluate(x, y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_a_target_matrix(model, data, bad):
    x, y = data
    t = np.eye(3)[y]
    t[3, 0] = bad
    with pytest.raises(ValueError, match="y contains NaN or Inf"):
        model.fit(x, t, verbose=0)


def test_empty_x(model):
    with pytest.raises(ValueError, match="empty"):
        model.fit(np.ones((0, 6)), np.ones(0, int), verbose=0)
    with pytest.raises(ValueError, match="2-D"):
        model.predict(np.ones(6))


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"epochs": -1}, "epochs must be >= 0"),
    ({"lr": 0}, "lr must be > 0"),
    ({"lr": -0.1}, "lr must be > 0"),
    ({"lr": float("nan")}, "lr must be finite"),
    ({"l2": -1}, "l2 must be >= 0"),
    ({"validation_split": 1.0}, "validation_split must be < 1"),
    ({"validation_split": 0.01}, "leaves 10 training and 0 validation"),
    ({"optimizer": "adagrad"}, "unknown optimizer 'adagrad'; valid optimizers are: sgd, "
                               "momentum, nesterov, rmsprop, adam"),
    ({"verbose": 3}, "verbose must be 0, 1 or 2"),
    ({"validation_data": (np.ones((2, 6)),)}, "pair"),
    ({"validation_data": (np.ones((2, 5)), np.zeros(2, int))}, "validation x has 5 features"),
])
def test_bad_fit_arguments(model, data, kwargs, message):
    x, y = data
    with pytest.raises((ValueError, TypeError), match=message):
        model.fit(x, y, verbose=kwargs.pop("verbose", 0), **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"activations": ["relu", "swish"]}, "unknown activation 'swish'; valid activations are: "
                                         "linear, relu, sigmoid, tanh, softmax"),
    ({"loss": "hinge"}, "unknown loss 'hinge'; valid losses are: cross_entropy, "
                        "binary_cross_entropy, mse"),
    ({"backend": "tpu"}, "unknown backend 'tpu'; valid backends are: numpy, cpu"),
    ({"init": "ones"}, "unknown init 'ones'; valid inits are"),
    ({"dtype": "float16"}, "dtype must be one of float32, float64"),
    ({"activations": ["relu"]}, "2 weight layers need 2 activations"),
    ({"layers": [6, 0, 3]}, "layer size must be >= 1"),
    ({"layers": [6]}, "at least an input and an output"),
    ({"activations": ["relu", "relu"]}, "loss 'cross_entropy' needs an output activation"),
])
def test_bad_model_arguments(kwargs, message):
    args = {"layers": [6, 5, 3], "activations": ["relu", "softmax"]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fastmlp.MLP(**args)


def test_unknown_recipe():
    with pytest.raises(ValueError, match="unknown recipe 'mnist'; valid recipes are: keras, "
                                         "dl4j, lecture"):
        fastmlp.recipes.get("mnist")


def test_set_num_threads_rejects_zero():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        fastmlp.set_num_threads(0)
