"""Where a training step's time goes, kernel by kernel, on the cpu and cuda backends.

For each backend and batch size, on the keras recipe's network (784-512 relu-10
softmax, RMSprop, float32; ``--layers`` for another) and random data:

* **kernels**: each operation of a training step timed alone, ``--repeats``
  times back to back (CUDA events on the GPU, the wall clock on the CPU), with
  its arithmetic (GFLOP/s) and memory traffic (GB/s, each operand read or
  written once) as a fraction of the machine's measured ceilings;
* **step and epoch**: a ``fit`` epoch over ``--samples`` samples after a warm-up
  epoch, and the time per step that gives;
* **ceilings**, measured first: for the GPU, a kernel of independent fused
  multiply-adds and a device-to-device copy; for the CPU, NumPy's float32
  matrix product (its BLAS) of 2048 x 2048 matrices and a large array copy.

The report ends with the batch size from which the GPU's epoch is faster than
the CPU's. ``--json`` writes everything, ``--plot`` a PNG (needs matplotlib,
``pip install 'fastmlp[plot]'``).

    fastmlp profile --backend cpu,cuda --batch-sizes 32,128,1024,8192
"""

from __future__ import annotations

import json
import platform
import statistics
import time

import numpy as np

from ._version import __version__
from .backends import get_backend
from .functions import activation_id, loss_id

KERAS_LAYERS = (784, 512, 10)
PLOT_MISSING = ("--plot needs matplotlib; install it with pip install 'fastmlp[plot]'")


# ------------------------------------------------------------------ ceilings

def cpu_ceilings(size=2048, copy_mb=256) -> dict:
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    np.matmul(a, a)
    best = min(_wall(lambda: np.matmul(a, a)) for _ in range(3))
    src = np.ones(copy_mb * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    copy = min(_wall(lambda: np.copyto(dst, src)) for _ in range(3))
    return {"gflops": 2 * size**3 / best / 1e9, "gbs": 2 * src.nbytes / copy / 1e9,
            "how": f"numpy float32 matmul {size}^3; copy of {copy_mb} MiB"}


def cuda_ceilings(be) -> dict:
    from numba import cuda

    sim = be.SIMULATOR  # (the simulator's figures mean nothing; its runs test the code)
    blocks = 1 if sim else 4 * be._sm_count()
    iters = 4 if sim else 4096
    out = cuda.device_array(blocks * 256, dtype=np.float32)
    timer = _Timer(be)
    seconds = timer(lambda: be.K.fma_chains[blocks, 256](out, np.float32(1.0001), iters), 3)
    flops = blocks * 256 * iters * 8 * 2
    n = 2**10 if sim else 2**28  # 1 GiB of float32
    src = cuda.device_array(n, dtype=np.float32)
    dst = cuda.device_array(n, dtype=np.float32)
    copy = timer(lambda: dst.copy_to_device(src), 3)
    return {"gflops": flops / seconds / 1e9, "gbs": 2 * src.nbytes / copy / 1e9,
            "how": "float32 FMA chains (8 per thread); device-to-device copy of "
                   f"{src.nbytes / 2**20:.0f} MiB"}


# ------------------------------------------------------------------ kernels of a step

def _wall(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


class _Timer:
    """Seconds per call of ``f`` over ``repeats`` calls: CUDA events or the wall clock."""

    def __init__(self, be):
        self.be = be
        # The simulator's events do not time anything: its runs use the wall clock.
        self.events = be.device and not be.SIMULATOR
        if self.events:
            from numba import cuda

            self.cuda = cuda
            self.e0, self.e1 = cuda.event(), cuda.event()

    def __call__(self, f, repeats):
        f()  # compile, warm the caches
        if not self.events:
            return statistics.median(_wall(f) for _ in range(repeats))
        self.cuda.synchronize()
        self.e0.record()
        for _ in range(repeats):
            f()
        self.e1.record()
        self.e1.synchronize()
        return self.e0.elapsed_time(self.e1) / 1e3 / repeats


def step_kernels(be, layers, batch, seed=0):
    """``[(name, call, flops, bytes)]``: the operations of one training step of an
    MLP with relu hidden layers, a softmax output and RMSprop, on ``be``'s arrays."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    dev = be.to_device

    def arr(*shape):
        return dev(rng.random(shape, dtype=f32) - f32(0.5))

    L = len(layers) - 1
    W = [arr(a, b) for a, b in zip(layers[:-1], layers[1:])]
    b = [arr(m) for m in layers[1:]]
    x = arr(batch, layers[0])
    y = dev(np.eye(layers[-1], dtype=f32)[rng.integers(0, layers[-1], batch)])
    a = [be.empty((batch, m), f32) for m in layers[1:]]
    z = be.empty((batch, layers[-1]), f32)
    g = [arr(batch, m) for m in layers[1:]]
    gW = [be.empty(w.shape, f32) for w in W]
    gb = [be.empty(v.shape, f32) for v in b]
    row_loss = be.empty(batch, f32)
    relu, softmax, linear = activation_id("relu"), activation_id("softmax"), 0
    ce = loss_id("cross_entropy")
    ops = []
    for i in range(L):
        k, m = layers[i], layers[i + 1]
        inp = x if i == 0 else a[i - 1]
        last = i == L - 1
        out = z if last else a[i]
        ops.append((f"forward {i + 1} ({k}x{m}{'' if last else ' relu'})",
                    lambda inp=inp, i=i, out=out, act=linear if last else relu:
                    be.dense_forward(inp, W[i], b[i], out, act),
                    2 * batch * k * m, 4 * (batch * k + k * m + m + batch * m)))
    m = layers[-1]
    if be.device:
        hits = be.empty(batch, np.int32)
        acc = be.zeros((1, 2), np.float64)

        def loss():
            be._rows(ce, softmax, z, a[-1], y, g[-1], row_loss, hits, acc, 0)
    else:
        def loss():
            be.activation_forward(softmax, z, a[-1])
            be.loss_grad(ce, softmax, z, a[-1], y, g[-1], row_loss)
    ops.append(("softmax + cross-entropy gradient", loss, 6 * batch * m, 4 * batch * m * 4))
    for i in range(L - 1, -1, -1):
        k, m = layers[i], layers[i + 1]
        inp = x if i == 0 else a[i - 1]
        ops.append((f"weight grad {i + 1} ({k}x{m})",
                    lambda inp=inp, i=i: be.dense_backward_weight(inp, g[i], gW[i], gb[i]),
                    2 * batch * k * m, 4 * (batch * k + batch * m + k * m + m)))
        if i:
            ops.append((f"input grad {i} ({m}->{k}, relu')",
                        lambda i=i: be.dense_backward_input(g[i], W[i], g[i - 1], relu, a[i - 1]),
                        2 * batch * k * m, 4 * (batch * m + k * m + 2 * batch * k)))
    n = sum(w.size for w in W) + sum(v.size for v in b)
    p, grads, s, new = arr(n), arr(n), dev(np.zeros(n, f32)), be.empty(n, f32)
    ops.append((f"rmsprop update ({n:,} parameters)",
                lambda: be.rmsprop_update(p, grads, s, 1e-3, 0.9, 1e-7, 0.0, new),
                7 * n, 4 * 5 * n))
    return ops


def epoch_time(backend, layers, batch, samples, seed=0) -> dict:
    """A fit epoch on random data after a warm-up epoch: seconds and steps."""
    from .model import MLP

    rng = np.random.default_rng(seed)
    x = rng.random((samples, layers[0]), dtype=np.float32)
    y = rng.integers(0, layers[-1], samples)
    model = MLP(list(layers), ["relu"] * (len(layers) - 2) + ["softmax"], backend=backend,
                seed=seed)
    h = model.fit(x, y, epochs=2, batch_size=batch, verbose=0)
    steps = -(-samples // batch)
    return {"epoch_s": h.epoch_seconds[-1], "steps": steps,
            "step_us": h.epoch_seconds[-1] / steps * 1e6,
            "warmup_epoch_s": h.epoch_seconds[0]}


# ------------------------------------------------------------------ the run

def run(backends=("cpu", "cuda"), batch_sizes=(32, 128, 1024, 8192), layers=KERAS_LAYERS,
        samples=60000, repeats=20, out=None) -> dict:
    """Profile ``backends`` at each batch size; prints the tables to ``out``."""
    mods = {name: get_backend(name) for name in backends}
    result = {"fastmlp": __version__, "layers": list(layers), "samples": samples,
              "repeats": repeats, "platform": platform.platform(), "backends": {}}
    for name, be in mods.items():
        ceil = cuda_ceilings(be) if be.device else cpu_ceilings()
        entry = {"ceilings": ceil, "batches": {}}
        if be.device:
            entry["device"] = be.device_info()
            entry["launches_per_step"] = be.launches_per_step(len(layers) - 1)
        else:
            from . import threads

            entry["device"] = {"cpu": platform.processor() or platform.machine(),
                               "threads": threads.get_num_threads(),
                               "simd": threads.gemm_level()}
        timer = _Timer(be)
        for batch in batch_sizes:
            kernels = []
            for label, call, flops, nbytes in step_kernels(be, layers, batch):
                sec = timer(call, repeats)
                kernels.append({"kernel": label, "us": sec * 1e6,
                                "gflops": flops / sec / 1e9, "gbs": nbytes / sec / 1e9,
                                "flop_frac": flops / sec / 1e9 / ceil["gflops"],
                                "bw_frac": nbytes / sec / 1e9 / ceil["gbs"]})
            entry["batches"][batch] = {"kernels": kernels,
                                       **epoch_time(name, layers, batch, samples)}
        result["backends"][name] = entry
    result["gpu_overtakes_cpu_at"] = crossover(result)
    if out is not None:
        print_report(result, out)
    return result


def crossover(result):
    """The smallest batch size from which every larger one has the cuda epoch
    faster than the cpu epoch (None if it never is, or a backend is missing)."""
    b = result["backends"]
    if "cpu" not in b or "cuda" not in b:
        return None
    sizes = sorted(b["cpu"]["batches"])
    faster = [b["cuda"]["batches"][s]["epoch_s"] < b["cpu"]["batches"][s]["epoch_s"]
              for s in sizes]
    for i, s in enumerate(sizes):
        if all(faster[i:]):
            return s
    return None


def print_report(result, out):
    print(f"fastmlp {result['fastmlp']} profile: layers {result['layers']}, float32, "
          f"{result['samples']:,} samples per epoch, kernels timed over "
          f"{result['repeats']} calls", file=out)
    for name, entry in result["backends"].items():
        c = entry["ceilings"]
        dev = ", ".join(f"{k} {v}" for k, v in entry["device"].items())
        print(f"\n== {name}: {dev}", file=out)
        print(f"ceilings: {c['gflops']:,.0f} GFLOP/s, {c['gbs']:,.0f} GB/s ({c['how']})",
              file=out)
        if "launches_per_step" in entry:
            print(f"kernel launches per training step: {entry['launches_per_step']}",
                  file=out)
        for batch, rec in entry["batches"].items():
            print(f"\nbatch {batch}: step {rec['step_us']:,.1f} us, epoch "
                  f"{rec['epoch_s']:.3f} s ({rec['steps']} steps)", file=out)
            print(f"  {'kernel':<40}{'us':>10}{'GFLOP/s':>10}{'%peak':>7}{'GB/s':>9}"
                  f"{'%bw':>6}", file=out)
            for k in rec["kernels"]:
                print(f"  {k['kernel']:<40}{k['us']:>10.1f}{k['gflops']:>10.1f}"
                      f"{100 * k['flop_frac']:>7.1f}{k['gbs']:>9.1f}"
                      f"{100 * k['bw_frac']:>6.1f}", file=out)
            total = sum(k["us"] for k in rec["kernels"])
            print(f"  {'sum of the kernels':<40}{total:>10.1f}", file=out)
    names = list(result["backends"])
    if len(names) > 1:
        print("\nepoch seconds by batch size", file=out)
        sizes = list(result["backends"][names[0]]["batches"])
        print(f"  {'batch':>7}" + "".join(f"{n:>10}" for n in names), file=out)
        for s in sizes:
            print(f"  {s:>7}" + "".join(
                f"{result['backends'][n]['batches'][s]['epoch_s']:>10.3f}" for n in names),
                file=out)
    over = result.get("gpu_overtakes_cpu_at")
    if "cpu" in names and "cuda" in names:
        print("\nthe GPU's epoch is faster than the CPU's " + (
            f"from batch {over} up" if over is not None else "at none of these batch sizes"),
            file=out)


def plot(result, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(PLOT_MISSING) from exc
    from ._io import atomic_write

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, entry in result["backends"].items():
        sizes = list(entry["batches"])
        ax1.plot(sizes, [entry["batches"][s]["epoch_s"] for s in sizes], "o-", label=name)
    ax1.set(xscale="log", yscale="log", xlabel="batch size", ylabel="epoch (s)",
            title="epoch time")
    ax1.legend()
    labels, width = None, 0.8 / max(len(result["backends"]), 1)
    for j, (name, entry) in enumerate(result["backends"].items()):
        last = list(entry["batches"])[-1]
        ks = entry["batches"][last]["kernels"]
        labels = [k["kernel"].split(" (")[0] for k in ks]
        ax2.bar(np.arange(len(ks)) + j * width, [k["us"] for k in ks], width,
                label=f"{name}, batch {last}")
    ax2.set_xticks(np.arange(len(labels)) + width / 2, labels, rotation=30, ha="right")
    ax2.set(yscale="log", ylabel="microseconds", title="kernels of one step")
    ax2.legend()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def add_arguments(p):
    p.add_argument("--backend", default="cpu,cuda", help="comma-separated (default cpu,cuda)")
    p.add_argument("--batch-sizes", default="32,128,1024,8192", help="comma-separated")
    p.add_argument("--layers", default=",".join(map(str, KERAS_LAYERS)),
                   help="comma-separated layer sizes (default the keras recipe's)")
    p.add_argument("--samples", type=int, default=60000, help="samples per epoch")
    p.add_argument("--repeats", type=int, default=20, help="calls per kernel timing")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON ('-': stdout)")
    p.add_argument("--plot", metavar="PNG", help="write a chart (needs matplotlib)")


def positive_list(text, what):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"--{what} must be comma-separated positive integers, got {text!r}")
    return values


def main_args(args, out) -> dict:
    from .backends import BACKENDS

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS or b == "numpy":
            raise ValueError(f"--backend takes cpu and/or cuda, got {b!r}")
    if not backends:
        raise ValueError("--backend needs at least one of cpu, cuda")
    sizes = positive_list(args.batch_sizes, "batch-sizes")
    layers = positive_list(args.layers, "layers")
    if len(layers) < 2:
        raise ValueError("--layers needs at least an input and an output size")
    if args.samples < 1 or args.repeats < 1:
        raise ValueError("--samples and --repeats must be >= 1")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise RuntimeError(PLOT_MISSING) from None
    result = run(backends, sizes, layers, args.samples, args.repeats,
                 out=None if args.json == "-" else out)
    if args.json:
        text = json.dumps(result, indent=2, default=str)
        if args.json == "-":
            print(text, file=out)
        else:
            from ._io import atomic_write

            with atomic_write(args.json, "w") as f:
                f.write(text + "\n")
    if args.plot:
        plot(result, args.plot)
    return result
