"""The cpu backend's compiled training step taken apart, for ``fastmlp profile``:
each thread times its own share of each part of every step (``Stepper.run``'s
``phase`` array), so that the step's time beyond its kernels' shows where it goes."""

from __future__ import annotations

import time

import numpy as np

from .. import optim, threads
from ..model import MLP


def measure(backend, net, batch, samples, seed=0):
    """The compiled step of ``backend`` (None but on the cpu backend, where ``fit``
    runs it) taken apart, for the network ``net`` (its widths and activations;
    RMSprop, float32, random data): each part's microseconds per step for each
    thread (``fastmlp._cpu.step_phases`` names them), by the thread's own clock,
    over an epoch of ``samples`` samples after a warm-up epoch, with the step's
    wall-clock time in the same run."""
    if backend != "cpu":
        return None
    from .. import _cpu

    rng = np.random.default_rng(seed)
    sizes, acts = net
    model = MLP(sizes, acts, backend="cpu", seed=seed)
    x = rng.random((samples, sizes[0]), dtype=np.float32)
    y = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], samples)]
    runner = model.make_runner(x, y, optim.RMSprop(), 0.0, batch)
    names = _cpu.step_phases()
    runner.run(rng.permutation(samples), False)
    seconds = np.zeros((threads.get_num_threads(), len(names)))
    runner.phase = seconds
    t0 = time.perf_counter()
    runner.run(rng.permutation(samples), False)
    wall = time.perf_counter() - t0
    runner.phase = None
    steps = -(-samples // batch)
    return {"parts": list(names), "us": (seconds / steps * 1e6).tolist(),
            "step_us": wall / steps * 1e6}


def print_table(ph, out):
    """Prints :func:`measure`'s result ``ph``, a column per thread (nothing for None)."""
    if ph is None:
        return
    us = np.array(ph["us"])
    print(f"\n  the compiled step in parts, us per step by each thread's clock "
          f"(another epoch: step {ph['step_us']:,.1f} us)", file=out)
    print(f"  {'part':<40}" + "".join(f"{f'thread {t}':>10}" for t in range(len(us))),
          file=out)
    for k, part in enumerate(ph["parts"]):
        print(f"  {part:<40}" + "".join(f"{v:>10.1f}" for v in us[:, k]), file=out)
    print(f"  {'sum of the parts':<40}" + "".join(f"{v:>10.1f}" for v in us.sum(axis=1)),
          file=out)
