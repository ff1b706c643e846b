"""A model out to PyTorch and ONNX, and in from PyTorch.

* :func:`to_torch`: a ``torch.nn.Sequential`` of ``Linear`` layers and activation
  modules with the model's weights (``Linear.weight`` is ``W.T``), in its dtype.
* :func:`from_torch`: a :class:`fastmlp.MLP` from such a ``Sequential``.
* :func:`to_onnx`: an ONNX graph of ``Gemm`` and activation nodes, input
  ``input`` (batch, features), output ``output`` (batch, outputs): what
  ``predict_proba`` gives.

PyTorch (``pip install torch``) and ``onnx`` (``pip install 'fastmlp[onnx]'``) are
optional; the functions say which is missing.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

from ._util import atomic_write, integer
from .functions import LEAKY_RELU_SLOPE

#: Default loss of a model read from PyTorch, by its output activation.
LOSS_FOR_OUTPUT = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}

_ONNX_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax",
             "leaky_relu": "LeakyRelu"}


def _need(module, how):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this needs {module.split('.')[0]}: {how}") from exc


def _torch():
    return _need("torch", "pip install torch (see pytorch.org for a CPU or CUDA build)")


def _torch_activation(nn, name):
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
            "softmax": lambda: nn.Softmax(dim=1),
            "leaky_relu": lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE)}[name]()


def to_torch(model: Any) -> Any:
    """A ``torch.nn.Sequential`` computing ``model.predict_proba``.

    Examples
    --------
    >>> net = model.to_torch()                                     # doctest: +SKIP
    >>> net(torch.from_numpy(x)).detach().numpy()  # == model.predict_proba(x)
    """
    torch = _torch()
    nn = torch.nn
    dtype = getattr(torch, model.dtype.name)
    layers = []
    for W, b, act in zip(model.params.W, model.params.b, model.activations):
        lin = nn.Linear(W.shape[0], W.shape[1], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(np.array(b)))
        layers.append(lin)
        if act != "linear":
            layers.append(_torch_activation(nn, act))
    return nn.Sequential(*layers)


def _activation_of(nn, module):
    """The fastmlp name of a PyTorch activation module (ValueError for others)."""
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, nn.Tanh):
        return "tanh"
    if isinstance(module, nn.Identity):
        return "linear"
    if isinstance(module, nn.Softmax) and module.dim in (1, -1):
        return "softmax"
    if isinstance(module, nn.LeakyReLU) and module.negative_slope == LEAKY_RELU_SLOPE:
        return "leaky_relu"
    raise ValueError(f"from_torch: no fastmlp activation for {module!r} (fastmlp has "
                     f"ReLU, LeakyReLU({LEAKY_RELU_SLOPE}), Sigmoid, Tanh, Softmax(dim=1), "
                     f"Identity)")


def from_torch(cls: Any, module: Any, loss: str | None = None, backend: str = "cpu",
               seed: int = 0, **kwargs: Any) -> Any:
    """A model of class ``cls`` with the layers and weights of ``module``.

    ``module`` is a ``torch.nn.Sequential`` of ``Linear`` layers, each followed by
    at most one activation (a leading ``Flatten`` is allowed). ``loss`` defaults
    to ``cross_entropy`` after a softmax, ``binary_cross_entropy`` after a
    sigmoid, else ``mse``; the dtype is that of the weights.

    Raises
    ------
    ValueError
        A module that is not such a ``Sequential`` (the message names the part).
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"from_torch needs a torch.nn.Sequential, got {type(module).__name__}")
    parts = list(module)
    if parts and isinstance(parts[0], nn.Flatten):
        parts = parts[1:]
    linears: list = []
    acts: list[str] = []
    for part in parts:
        if isinstance(part, nn.Linear):
            if linears and len(acts) < len(linears):
                acts.append("linear")
            if linears and linears[-1].out_features != part.in_features:
                raise ValueError(f"from_torch: {part!r} follows a layer of "
                                 f"{linears[-1].out_features} outputs")
            linears.append(part)
        elif not linears or len(acts) == len(linears):
            raise ValueError(f"from_torch: {part!r} does not follow a Linear layer")
        else:
            acts.append(_activation_of(nn, part))
    if not linears:
        raise ValueError("from_torch: the Sequential has no Linear layer")
    if len(acts) < len(linears):
        acts.append("linear")
    dtype = linears[0].weight.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"from_torch: weights of dtype {dtype}; fastmlp takes float32 and "
                         f"float64")
    layers = [linears[0].in_features] + [lin.out_features for lin in linears]
    model = cls(layers, acts, loss=loss or LOSS_FOR_OUTPUT.get(acts[-1], "mse"),
                backend=backend, seed=seed, dtype=str(dtype).replace("torch.", ""), **kwargs)
    weights = []
    for lin in linears:
        weights.append(lin.weight.detach().cpu().numpy().T)
        weights.append(lin.bias.detach().cpu().numpy() if lin.bias is not None
                       else np.zeros(lin.out_features))
    model.set_weights(weights)
    return model


def to_onnx(model: Any, path: str | os.PathLike | None = None, opset: int = 17) -> Any:
    """The model as an ONNX ``ModelProto`` (``Gemm`` and activation nodes); with
    ``path``, also written there, atomically.

    Examples
    --------
    >>> model.to_onnx("mlp.onnx")                                  # doctest: +SKIP
    >>> import onnxruntime as ort
    >>> ort.InferenceSession("mlp.onnx").run(None, {"input": x})[0]  # == predict_proba(x)
    """
    onnx = _need("onnx", "pip install 'fastmlp[onnx]'")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    opset = integer("opset", opset, 13)
    elem = onnx.TensorProto.FLOAT if model.dtype == np.float32 else onnx.TensorProto.DOUBLE
    nodes, inits, prev = [], [], "input"
    last = len(model.activations) - 1
    for i, (W, b, act) in enumerate(zip(model.params.W, model.params.b, model.activations)):
        w, c = f"W{i + 1}", f"b{i + 1}"
        inits += [numpy_helper.from_array(np.array(W), w), numpy_helper.from_array(np.array(b), c)]
        z = "output" if i == last and act == "linear" else f"z{i + 1}"
        nodes.append(helper.make_node("Gemm", [prev, w, c], [z], name=f"dense{i + 1}"))
        if act != "linear":
            a = "output" if i == last else f"a{i + 1}"
            extra = {"alpha": LEAKY_RELU_SLOPE} if act == "leaky_relu" else {}
            if act == "softmax":
                extra = {"axis": 1}
            nodes.append(helper.make_node(_ONNX_OPS[act], [z], [a], name=f"{act}{i + 1}",
                                          **extra))
            z = a
        prev = z
    graph = helper.make_graph(
        nodes, "fastmlp", [helper.make_tensor_value_info("input", elem, ["batch",
                                                                        model.layers[0]])],
        [helper.make_tensor_value_info("output", elem, ["batch", model.layers[-1]])], inits)
    proto = helper.make_model(graph, producer_name="fastmlp",
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto)
    if path is not None:
        with atomic_write(path) as f:
            f.write(proto.SerializeToString())
    return proto
