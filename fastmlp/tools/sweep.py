"""``fastmlp bench --sweep``: training throughput (samples/s) over a sweep of network
shapes and batch sizes, fastmlp's ``cpu`` backend against each peer of
:mod:`fastmlp.tools.peers` that is installed, with each one's fraction of the
machine's FMA peak.

Every contender trains the same relu network with a softmax output and RMSprop from
the same weights on the same random data, one epoch per turn, the contenders
alternating; after a warm-up turn each, the median of ``rounds`` turns is kept.
"""

from __future__ import annotations

import statistics

import numpy as np

from ..model import MLP
from . import peers

#: (layers, batch) of the sweep.
SHAPES = (
    ((784, 512, 10), 32), ((784, 512, 10), 128), ((784, 512, 10), 1024),
    ((784, 512, 10), 8192), ((784, 30, 10), 128), ((784, 1000, 10), 128),
    ((784, 2048, 2048, 10), 256), ((784, 256, 256, 256, 10), 256),
    ((3072, 1024, 512, 100), 256),
)

RMSPROP = {"lr": 1e-3, "rho": 0.9, "eps": 1e-7}

#: Work per epoch: about this many flops, so that each turn takes a fraction of a second.
EPOCH_FLOPS = 3e10


def flops_per_sample(layers) -> int:
    """Multiply-adds of a training step per sample, as flops: 2 forward, 4 backward,
    less the first layer's input gradient (the data's), which no contender computes."""
    return 6 * sum(a * b for a, b in zip(layers[:-1], layers[1:])) - 2 * layers[0] * layers[1]


class _Fastmlp:
    def __init__(self, model, batch):
        self.model, self.batch = model, batch

    def epoch(self, x, labels, order):
        h = self.model.fit(x[order], labels[order], epochs=1, batch_size=self.batch,
                           optimizer=self.model.optimizer or "rmsprop", shuffle=False,
                           verbose=0)
        return h.epoch_seconds[0]


def sweep_shape(layers, batch, contenders, threads, rounds=3, seed=0) -> dict:
    """Samples per second of each contender on one shape."""
    per = flops_per_sample(layers)
    steps = max(4, min(60000 // batch, int(EPOCH_FLOPS / per / batch)))
    n = steps * batch
    rng = np.random.default_rng(seed)
    x = rng.random((n, layers[0]), dtype=np.float32)
    labels = rng.integers(0, layers[-1], n)
    acts = ["relu"] * (len(layers) - 2) + ["softmax"]
    model = MLP(list(layers), acts, backend="cpu", seed=seed)
    trainers = {}
    for name in contenders:
        if name in ("cpu", "cpu-bf16"):
            dtype = "mixed_bfloat16" if name == "cpu-bf16" else "float32"
            trainers[name] = _Fastmlp(MLP(list(layers), acts, backend="cpu", seed=seed,
                                          dtype=dtype), batch)
        else:
            trainers[name] = peers.make(name, model, RMSPROP, batch, threads)
    seconds = {name: [] for name in trainers}
    for turn in range(rounds + 1):
        order = rng.permutation(n)
        for name, tr in trainers.items():
            s = tr.epoch(x, labels, order)
            if turn:
                seconds[name].append(s)
    return {"layers": list(layers), "batch": batch, "samples": n,
            "flops_per_sample": per,
            "samples_per_s": {k: n / statistics.median(v) for k, v in seconds.items()}}


def run_sweep(contenders, threads, rounds=3, shapes=SHAPES) -> dict:
    """Every shape of the sweep, with the FMA peak the fractions refer to."""
    from .ceilings import cpu_ceilings

    # The peak before and after (the larger): another program on the shared cores
    # during one of the two measurements would understate it.
    before = cpu_ceilings(seconds=0.1)["gflops"]
    rows = [sweep_shape(layers, batch, contenders, threads, rounds)
            for layers, batch in shapes]
    peak = max(before, cpu_ceilings(seconds=0.1)["gflops"])
    for r in rows:
        r["peak_frac"] = {k: v * r["flops_per_sample"] / (peak * 1e9)
                          for k, v in r["samples_per_s"].items()}
    return {"fma_peak_gflops": peak, "rows": rows}


#: (fastmlp's contender, the peer it is compared with) for the ratio columns.
RATIOS = (("cpu", "torch"), ("cpu-bf16", "torch-bf16"))


def format_sweep(res) -> list:
    names = list(res["rows"][0]["samples_per_s"]) if res["rows"] else []
    ratios = [(a, b) for a, b in RATIOS if a in names and b in names]
    head = f"{'network':<22}{'batch':>6}" + "".join(f"{n + ' /s':>14}{'%pk':>5}"
                                                    for n in names)
    lines = [head + "".join(f"{a + ' time / ' + b:>28}" for a, b in ratios)]
    for r in res["rows"]:
        sps, frac = r["samples_per_s"], r["peak_frac"]
        line = f"{'-'.join(map(str, r['layers'])):<22}{r['batch']:>6}" + "".join(
            f"{sps[n]:>14,.0f}{100 * frac[n]:>5.0f}" for n in names)
        line += "".join(f"{sps[b] / sps[a]:>28.2f}" for a, b in ratios)
        lines.append(line)
    return lines
