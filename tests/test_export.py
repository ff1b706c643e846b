"""Export to PyTorch and ONNX, import from PyTorch: the same outputs as predict_proba."""

import numpy as np
import pytest
from conftest import extra

import fastmlp

CASES = [([7, 9, 4], ["relu", "softmax"], "float32"),
         ([7, 6, 5, 3], ["leaky_relu", "tanh", "sigmoid"], "float64"),
         ([7, 5, 2], ["sigmoid", "linear"], "float32")]


def fitted(layers, acts, dtype):
    loss = fastmlp.export.LOSS_FOR_OUTPUT.get(acts[-1], "mse")
    m = fastmlp.MLP(layers, acts, loss=loss, dtype=dtype, seed=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, layers[0]))
    m.fit(x, rng.integers(0, layers[-1], 64), epochs=2, batch_size=16, verbose=0)
    return m, x.astype(dtype)


@pytest.mark.parametrize("layers, acts, dtype", CASES)
def test_onnxruntime_gives_predict_proba(layers, acts, dtype, tmp_path):
    extra("onnx", "onnx")
    ort = extra("onnxruntime", "onnx")
    m, x = fitted(layers, acts, dtype)
    m.to_onnx(tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    assert got.dtype == m.dtype
    np.testing.assert_allclose(got, m.predict_proba(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers, acts, dtype", CASES)
def test_torch_round_trip(layers, acts, dtype):
    torch = extra("torch", "peers")
    m, x = fitted(layers, acts, dtype)
    net = m.to_torch()
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, m.predict_proba(x), rtol=1e-5, atol=1e-6)
    back = fastmlp.MLP.from_torch(net)
    assert back.activations == m.activations and back.loss == m.loss
    assert back.dtype == m.dtype
    for a, b in zip(back.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_from_torch_names_what_it_cannot_take():
    torch = extra("torch", "peers")
    nn = torch.nn
    with pytest.raises(ValueError, match="Sequential"):
        fastmlp.MLP.from_torch(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="no fastmlp activation"):
        fastmlp.MLP.from_torch(nn.Sequential(nn.Linear(3, 2), nn.GELU()))
    with pytest.raises(ValueError, match="does not follow a Linear"):
        fastmlp.MLP.from_torch(nn.Sequential(nn.ReLU(), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="follows a layer of 4 outputs"):
        fastmlp.MLP.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)))
    m = fastmlp.MLP.from_torch(nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.Linear(4, 2)))
    assert m.activations == ["linear", "linear"] and m.loss == "mse"
