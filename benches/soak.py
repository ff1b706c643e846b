"""Soak: many cycles of fit, predict, save and load with random valid configurations,
watching the process's resident memory.

Each cycle draws (from one seeded generator) a network of 1 or 2 hidden layers, its
activations, an optimizer, a dtype, a host backend, a batch size and a small data
set; it trains one epoch, predicts, saves the model over the same file, loads it and
checks the loaded model predicts the same. Resident memory (VmRSS) is read after
every cycle. After the warm-up (the first ``warmup`` cycles, when the allocators,
the imports and the kernels' scratch reach their working size) it must not grow by
more than ``--limit`` (5%); a leak of a few hundred bytes a cycle shows as a steady
climb in the curve.

    python benches/soak.py --cycles 1000 [--json benches/results/soak.json]

tests/test_soak.py runs a short version.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def rss_bytes() -> int:
    """This process's resident memory (Linux's VmRSS), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def one_cycle(rng, path, fastmlp):
    """Train, predict, save, load and compare one random model."""
    d_in, n_out = int(rng.integers(4, 65)), int(rng.integers(2, 11))
    hidden = [int(h) for h in rng.integers(4, 65, size=int(rng.integers(1, 3)))]
    acts = [str(rng.choice(["relu", "tanh", "sigmoid", "leaky_relu"])) for _ in hidden]
    dtype = str(rng.choice(["float32", "float64", "mixed_bfloat16"]))
    model = fastmlp.MLP([d_in, *hidden, n_out], acts + ["softmax"],
                        backend=str(rng.choice(["cpu", "numpy"])), dtype=dtype,
                        seed=int(rng.integers(0, 2**31)))
    n = int(rng.integers(32, 257))
    x = rng.random((n, d_in)).astype(np.float32)
    y = rng.integers(0, n_out, n)
    model.fit(x, y, epochs=1, batch_size=int(rng.integers(1, 65)), verbose=0,
              optimizer=str(rng.choice(["sgd", "momentum", "rmsprop", "adam", "adamw"])))
    pred = model.predict_proba(x)
    model.save(path)
    back = fastmlp.load(path)
    if not np.array_equal(back.predict_proba(x), pred):
        raise AssertionError("the loaded model predicts differently")


def soak(cycles: int, warmup: int, seed: int = 0, every: int = 50, folder=None) -> dict:
    """Run ``cycles`` cycles; returns the RSS after each, the warm-up figure, the
    end figure and the growth after warm-up."""
    import fastmlp

    rng = np.random.default_rng(seed)
    rss = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = os.path.join(tmp, "soak.npz")
        for _ in range(cycles):
            one_cycle(rng, path, fastmlp)
            rss.append(rss_bytes())
    base = max(rss[:warmup]) if warmup else rss[0]
    return {"cycles": cycles, "warmup": warmup, "seed": seed,
            "seconds": time.perf_counter() - start,
            "rss_after_warmup": base, "rss_end": rss[-1], "rss_max": max(rss),
            "growth": max(rss[warmup:]) / base - 1 if cycles > warmup else 0.0,
            "curve": {i + 1: rss[i] for i in range(cycles) if (i + 1) % every == 0
                      or i + 1 in (1, warmup, cycles)}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=float, default=0.05, help="allowed growth (0.05: 5%%)")
    p.add_argument("--json", metavar="FILE", help="write the figures and the curve here")
    args = p.parse_args(argv)
    if not 0 <= args.warmup < args.cycles:
        p.error("--warmup must be >= 0 and below --cycles")
    res = soak(args.cycles, args.warmup, args.seed)
    for cycle, value in res["curve"].items():
        print(f"cycle {cycle:>5}: RSS {value / 2**20:8.1f} MiB")
    print(f"{res['cycles']} cycles in {res['seconds']:.0f} s; after warm-up "
          f"{res['rss_after_warmup'] / 2**20:.1f} MiB, end {res['rss_end'] / 2**20:.1f} MiB, "
          f"largest growth {100 * res['growth']:+.2f}% (limit {100 * args.limit:.0f}%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if res["growth"] <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
