"""Crash-safe saves: a process that saves a model in a loop (two weight sets in turn,
as ``MLP.save`` and a checkpoint callback do) is killed with SIGKILL at random moments;
after each kill the file must load as one complete model, the old one or the new one.

    python benches/kill_saves.py [--kills 50] [--seed 0] [--checkpoint]

With ``--checkpoint`` the process trains instead, a ``ModelCheckpoint`` saving the
model every epoch; each file must load with its training state and train on.

tests/test_crash_safe.py runs a short version (POSIX only: it needs SIGKILL).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

import fastmlp
from fastmlp._util import TEMP_SUFFIX

LAYERS = [64, 48, 10]
SEEDS = (1, 2)
#: The checkpointing process's samples and batch size, and so its steps per epoch.
SAMPLES, BATCH = 96, 32
STEPS = -(-SAMPLES // BATCH)

#: The saving process: it prints a line once the file exists, then saves forever.
SAVER = f"""
import sys, fastmlp
models = [fastmlp.MLP({LAYERS}, seed=s) for s in {SEEDS}]
path = sys.argv[1]
models[0].save(path)
print("ready", flush=True)
i = 0
while True:
    i += 1
    models[i % 2].save(path)
"""


#: The checkpointing process: it trains for ever, a ModelCheckpoint saving every epoch.
CHECKPOINTER = f"""
import sys, numpy as np, fastmlp
from fastmlp.callbacks import ModelCheckpoint
model = fastmlp.MLP({LAYERS}, seed={SEEDS[0]})
rng = np.random.default_rng(0)
x, y = rng.random(({SAMPLES}, {LAYERS[0]})), rng.integers(0, {LAYERS[-1]}, {SAMPLES})
path = sys.argv[1]
model.save(path)
print("ready", flush=True)
while True:
    model.fit(x, y, epochs=20, batch_size={BATCH}, verbose=0,
              callbacks=[ModelCheckpoint(path)])
"""


def kill_loop(folder: str, kills: int, seed: int = 0, timeout: float = 60.0,
              checkpoint: bool = False) -> dict:
    """Kill a saving (or, with ``checkpoint``, a checkpointing) process ``kills``
    times; return how many times the file loaded as each model (a file that does not
    load raises). A checkpoint holds the weights of some epoch: it must load, with
    its training state, and go on training."""
    rng = random.Random(seed)
    path = os.path.join(os.path.abspath(folder), "model.npz")
    expected = [fastmlp.MLP(LAYERS, seed=s).get_weights() for s in SEEDS]
    found = {s: 0 for s in SEEDS} if not checkpoint else {"checkpoint": 0}
    for _ in range(kills):
        # Run in the folder, so that the installed fastmlp is imported (not a source
        # tree in the current directory).
        proc = subprocess.Popen([sys.executable, "-c", CHECKPOINTER if checkpoint else SAVER,
                                 path], stdout=subprocess.PIPE, text=True, cwd=folder)
        try:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the saving process did not start")
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
            proc.stdout.close()
        model = fastmlp.load(path)
        if checkpoint:
            _check_checkpoint(model)
            found["checkpoint"] += 1
            continue
        weights = model.get_weights()
        match = [s for s, w in zip(SEEDS, expected)
                 if all(np.array_equal(a, b) for a, b in zip(weights, w))]
        if not match:
            raise AssertionError("the file loaded as neither the old model nor the new one")
        found[match[0]] += 1
    # Each saving process removes what the killed ones left before it: at most the
    # last one's temporary file remains, until the next save of the file.
    left = len(_temporaries(folder))
    fastmlp.load(path).save(path)
    return {"kills": kills, "loaded": found, "temporary files left": left,
            "left after one more save": len(_temporaries(folder))}


def _check_checkpoint(model):
    """A whole checkpoint: finite weights and, past the first epoch, the optimizer's
    state and step count, with which it trains on."""
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        raise AssertionError("the checkpoint holds non-finite weights")
    if model.epochs_trained and (model.optimizer is None or model.optimizer.state is None
                                 or model.optimizer.iterations != STEPS * model.epochs_trained):
        raise AssertionError("the checkpoint's training state is incomplete")
    x = np.random.default_rng(1).random((8, LAYERS[0]))
    model.fit(x, np.arange(8) % LAYERS[-1], epochs=1, verbose=0)


def _temporaries(folder):
    return [n for n in os.listdir(folder) if n.endswith(TEMP_SUFFIX)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", action="store_true",
                   help="kill a training process that checkpoints every epoch instead")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        res = kill_loop(folder, args.kills, args.seed, checkpoint=args.checkpoint)
    loaded = (f"as a whole checkpoint {res['loaded']['checkpoint']} times" if args.checkpoint
              else f"as model {SEEDS[0]} {res['loaded'][SEEDS[0]]} times and as model "
                   f"{SEEDS[1]} {res['loaded'][SEEDS[1]]} times")
    print(f"{res['kills']} kills in {time.perf_counter() - t:.1f} s: the file loaded every "
          f"time, {loaded}; {res['temporary files left']} "
          f"temporary file(s) left by killed writes, {res['left after one more save']} "
          f"after one more save")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
