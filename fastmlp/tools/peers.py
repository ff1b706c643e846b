"""Peer trainers for ``fastmlp bench``: the same network and RMSprop in PyTorch (float32,
or under ``torch.autocast("cpu", torch.bfloat16)``) and in JAX (the whole epoch one
jitted ``lax.scan``), each started from a fastmlp model's weights. Each is optional:
PyTorch with ``pip install 'fastmlp[peers]'``, JAX with ``pip install jax``.

A trainer has ``epoch(x, labels, order) -> seconds`` (one pass over ``x[order]`` in
batches, relu hidden layers, a softmax output under cross-entropy) and
``accuracy(x, labels)``.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

#: The peers, and the module each needs.
PEERS = {"torch": "torch", "torch-bf16": "torch", "jax": "jax"}


def available(name: str) -> bool:
    return importlib.util.find_spec(PEERS[name]) is not None


def missing_message(name: str) -> str:
    extra = "pip install 'fastmlp[peers]'" if PEERS[name] == "torch" else "pip install jax"
    return f"{name} needs {PEERS[name]}, which is not installed ({extra})"


def make(name, model, optimizer_args, batch, threads):
    """A trainer called ``name`` (a key of :data:`PEERS`) from ``model``'s weights."""
    if name == "jax":
        return JaxTrainer(model, optimizer_args, batch)
    return TorchTrainer(model, optimizer_args, batch, threads, bf16=name == "torch-bf16")


class TorchTrainer:
    """relu layers and RMSprop in PyTorch; ``bf16`` runs each step under CPU autocast
    (bfloat16 products, float32 weights), PyTorch's mixed precision."""

    def __init__(self, model, optimizer_args, batch, threads, bf16=False):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.bf16, self.batch = torch, bf16, batch
        layers = []
        for i, (W, b) in enumerate(zip(model.params.W, model.params.b)):
            lin = torch.nn.Linear(W.shape[0], W.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(torch.from_numpy(b.copy()))
            layers.append(lin)
            if i < len(model.params.W) - 1:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        self.opt = torch.optim.RMSprop(self.net.parameters(), lr=optimizer_args["lr"],
                                       alpha=optimizer_args["rho"], eps=optimizer_args["eps"])

    def epoch(self, x, labels, order):
        torch = self.torch
        x, labels = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
        order = torch.from_numpy(order)
        cross_entropy = torch.nn.functional.cross_entropy
        t0 = time.perf_counter()
        for start in range(0, len(order), self.batch):
            idx = order[start:start + self.batch]
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.net(x[idx])
            loss = cross_entropy(logits.float(), labels[idx])
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0

    def accuracy(self, x, labels):
        with self.torch.no_grad():
            pred = self.net(self.torch.from_numpy(x)).argmax(1).numpy()
        return float((pred == labels).mean())


class JaxTrainer:
    """relu layers and RMSprop in JAX, the epoch's full batches one jitted ``lax.scan``
    over the training set resident on the device (and a last short batch, if any, one
    more jitted step)."""

    def __init__(self, model, optimizer_args, batch):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp, self.batch = jax, jnp, batch
        self.params = [(jnp.asarray(W), jnp.asarray(b))
                       for W, b in zip(model.params.W, model.params.b)]
        self.state = [(jnp.zeros_like(W), jnp.zeros_like(b)) for W, b in self.params]
        lr, rho, eps = (optimizer_args[k] for k in ("lr", "rho", "eps"))

        def forward(params, x):
            for W, b in params[:-1]:
                x = jax.nn.relu(x @ W + b)
            W, b = params[-1]
            return x @ W + b

        def loss(params, x, y):
            logp = jax.nn.log_softmax(forward(params, x))
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

        def step(carry, idx):
            params, state, x, y = carry
            grads = jax.grad(loss)(params, x[idx], y[idx])
            state = jax.tree_util.tree_map(lambda s, g: rho * s + (1 - rho) * g * g, state,
                                           grads)
            params = jax.tree_util.tree_map(lambda p, g, s: p - lr * g / (jnp.sqrt(s) + eps),
                                            params, grads, state)
            return (params, state, x, y), None

        def epoch(params, state, x, y, batches):
            (params, state, _, _), _ = jax.lax.scan(step, (params, state, x, y), batches)
            return params, state

        self._epoch = jax.jit(epoch)
        self._step = jax.jit(lambda p, s, x, y, idx: step((p, s, x, y), idx)[0][:2])
        self._forward = jax.jit(forward)
        self._data = None

    def epoch(self, x, labels, order):
        jnp = self.jnp
        if self._data is None or self._data[0] is not x:
            self._data = (x, jnp.asarray(x), jnp.asarray(labels.astype(np.int32)))
        _, xd, yd = self._data
        full = len(order) // self.batch * self.batch
        batches = jnp.asarray(order[:full].reshape(-1, self.batch))
        rest = jnp.asarray(order[full:]) if full < len(order) else None
        t0 = time.perf_counter()
        params, state = self._epoch(self.params, self.state, xd, yd, batches)
        if rest is not None:
            params, state = self._step(params, state, xd, yd, rest)
        self.jax.block_until_ready(params)
        self.params, self.state = params, state
        return time.perf_counter() - t0

    def accuracy(self, x, labels):
        pred = np.asarray(self._forward(self.params, self.jnp.asarray(x))).argmax(1)
        return float((pred == labels).mean())
