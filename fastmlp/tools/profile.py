"""Where a training step's time goes, kernel by kernel, on the cpu and cuda backends.

For each backend and batch size, on the keras recipe's network (784-512 relu-10
softmax, RMSprop, float32; ``--layers`` for another) and random data:

* **kernels**: the kernel calls of one real training step, taken by the same
  runner ``fit`` uses (recorded with ``fastmlp.step.Recorder``), each timed alone,
  ``--repeats`` times back to back (CUDA events on the GPU, the wall clock on the CPU), with
  its arithmetic (GFLOP/s) and memory traffic (GB/s, each operand read or
  written once) as a fraction of the machine's measured ceilings, and its
  roofline bound: the longest of its flops at the FMA peak, its bytes at the
  streaming bandwidth measured at its footprint (the bytes of the distinct arrays
  it touches) and, on the CPU, the optimizer's square roots and divisions at their
  measured rate (``%roof`` is that bound over the time taken);
* **step and epoch**: a ``fit`` epoch over ``--samples`` samples after a warm-up
  epoch, the time per step that gives, and that step against the sum of the
  kernels' bounds;
* **the compiled step in parts** (cpu): each thread's time in each part of the
  step over another epoch (:mod:`fastmlp.tools.step_parts`);
* **ceilings**, measured first: for the GPU, a kernel of independent fused
  multiply-adds and a device-to-device copy; for the CPU, a register-only loop
  of independent float32 FMA chains (the FMA peak, at the thread count in use
  and at one thread) and the streaming bandwidth (the best of a copy, a
  read-only pass and the optimizer's pattern of three arrays read and two
  written, all repetitions in one parallel region) at footprints from 32 KiB
  (the first-level cache) to 128 MiB (main memory): a kernel is held to the
  bandwidth interpolated at its own footprint; and a register-only loop of square
  roots and divisions in the update's instructions (RMSprop and Adam take one of
  each per parameter).

The report ends with the batch size from which the GPU's epoch is faster than
the CPU's. ``--json`` writes everything, ``--plot`` a PNG (needs matplotlib,
``pip install 'fastmlp[plot]'``).

    fastmlp profile --backend cpu,cuda --batch-sizes 32,128,1024,8192
"""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np

from .. import optim, threads
from .._util import atomic_write, comma_list, write_json
from .._version import __version__
from ..backends import get_backend
from ..functions import ACTIVATIONS, LOSSES, RULES
from ..model import MLP
from . import machine, step_parts
from .ceilings import bandwidth_at, cpu_ceilings, roofline_bound

KERAS_LAYERS = (784, 512, 10)
PLOT_MISSING = ("--plot needs matplotlib; install it with pip install 'fastmlp[plot]'")


# ------------------------------------------------------------------ ceilings

def cuda_ceilings(be) -> dict:
    from numba import cuda  # the cuda backend loaded, so numba-cuda is installed

    from ..backends.cuda import ops
    from . import cuda_diagnostics

    sim = be.SIMULATOR  # (the simulator's figures mean nothing; its runs test the code)
    blocks = 1 if sim else 4 * ops.sm_count()
    iters = 4 if sim else 4096
    out = cuda.device_array(blocks * 256, dtype=np.float32)
    timer = _Timer(be)
    seconds = timer(lambda: cuda_diagnostics.fma_chains[blocks, 256](
        out, np.float32(1.0001), iters), 3)
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


def _network(layers):
    return list(layers), ["relu"] * (len(layers) - 2) + ["softmax"]


def _cost(name, args, layer):
    """(label, flops, bytes, footprint) of one recorded kernel call on layer ``layer``
    (from 1): bytes with each operand read or written once, and the footprint, the
    bytes of the distinct arrays it touches, which are the bytes but for the update
    (it reads and writes its state arrays in place, and writes the new parameters
    over the old or into another array, ``out``)."""
    label, flops, nbytes = _traffic(name, args, layer)
    if name != "update":
        return label, flops, nbytes, nbytes
    p, out = args[1], args[8] if len(args) > 8 else None
    arrays = 2 + _states(args) + (out is not None and out is not p)
    return label, flops, nbytes, p.nbytes * arrays


def _states(args):
    """The optimizer state arrays a recorded update call passes."""
    return sum(s is not None for s in args[3:5])


def _traffic(name, args, layer):
    """(label, flops, bytes) of a recorded call, each operand read or written once."""
    if name == "dense_forward":
        x, W, b, out, act = args[:5]
        n, (k, m), w = out.shape[0], W.shape, out.itemsize
        return (f"forward {layer} ({k}x{m}{'' if act == 0 else ' ' + ACTIVATIONS[act]})",
                2 * n * k * m, w * (n * k + k * m + m + n * m))
    if name == "dense_backward_weight":
        g, gW = args[1], args[2]
        n, (k, m), w = g.shape[0], gW.shape, gW.itemsize
        return (f"weight grad {layer} ({k}x{m})", 2 * n * k * m,
                w * (n * k + n * m + k * m + m))
    if name == "dense_backward_input":
        g, W, act = args[0], args[1], args[3] if len(args) > 3 else 0
        (n, m), k, w = g.shape, W.shape[0], g.itemsize
        deriv = "" if act == 0 else f", {ACTIVATIONS[act]}'"
        return (f"input grad {layer} ({m}->{k}{deriv})", 2 * n * k * m,
                w * (n * m + k * m + 2 * n * k))
    if name == "loss_grad":
        loss, act, z = args[:3]
        n, m = z.shape
        return (f"{ACTIVATIONS[act]} + {LOSSES[loss]} gradient", 6 * n * m,
                z.itemsize * n * m * 4)
    if name == "update":
        # Parameters and gradient read, each state array read and written, the new
        # parameters written.
        p = args[1]
        return (f"{RULES[args[0]]} update ({p.size:,} parameters)", 7 * p.size,
                p.nbytes * (3 + 2 * _states(args)))
    if name == "take_rows":
        out = args[2]
        return f"gather ({out.shape[0]}x{out.shape[1]})", 0, 2 * out.nbytes
    a = args[1]
    return f"{name.replace('_', ' ')} ({ACTIVATIONS[args[0]]})", a.size, 2 * a.nbytes


def _roots(name, args):
    """The square roots (each with a division) a recorded call takes: one per
    parameter for the rules that divide by a root of their state, none else."""
    if name == "update" and RULES[args[0]] in ("rmsprop", "adam", "adamw"):
        return args[1].size
    return 0


def step_kernels(be, layers, batch, seed=0):
    """``[(label, call, flops, bytes, footprint, roots)]``: the kernel calls of one
    training step of the
    runner ``fit`` uses on ``be`` (relu hidden layers, a softmax output, RMSprop,
    float32, random data), recorded as the step runs."""
    rng = np.random.default_rng(seed)
    sizes, acts = _network(layers)
    model = MLP(sizes, acts, backend=be.name, seed=seed)
    x = rng.random((batch, sizes[0]), dtype=np.float32)
    y = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], batch)]
    runner = model.make_runner(x, y, optim.RMSprop(), 0.0, batch)
    calls = runner.record_step()
    # Layers are numbered from the input: forward goes up, the gradients come down.
    L, seen = len(sizes) - 1, {}
    ops = []
    for name, args, kwargs in calls:
        seen[name] = seen.get(name, 0) + 1
        layer = {"dense_forward": seen[name], "dense_backward_weight": L + 1 - seen[name],
                 "dense_backward_input": L - seen[name]}.get(name, 0)
        label, flops, nbytes, footprint = _cost(name, args, layer)
        fn = getattr(be, name)
        ops.append((label, lambda fn=fn, args=args, kwargs=kwargs: fn(*args, **kwargs), flops,
                    nbytes, footprint, _roots(name, args)))
    return ops


def epoch_time(backend, layers, batch, samples, seed=0) -> dict:
    """A fit epoch on random data after a warm-up epoch: seconds and steps."""
    rng = np.random.default_rng(seed)
    x = rng.random((samples, layers[0]), dtype=np.float32)
    y = rng.integers(0, layers[-1], samples)
    sizes, acts = _network(layers)
    model = MLP(sizes, acts, backend=backend, seed=seed)
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
            entry["device"] = {"cpu": machine.cpu_name(), "threads": threads.get_num_threads(),
                               "simd": threads.gemm_level()}
        timer = _Timer(be)
        for batch in batch_sizes:
            kernels = []
            for label, call, flops, nbytes, footprint, roots in step_kernels(be, layers,
                                                                             batch):
                sec = timer(call, repeats)
                bw = bandwidth_at(ceil, footprint)
                bound = roofline_bound(ceil, flops, nbytes, bw, roots)
                kernels.append({"kernel": label, "us": sec * 1e6,
                                "gflops": flops / sec / 1e9, "gbs": nbytes / sec / 1e9,
                                "flop_frac": flops / sec / 1e9 / ceil["gflops"],
                                "bw_frac": nbytes / sec / 1e9 / bw,
                                "roofline_us": bound * 1e6, "roofline_frac": bound / sec})
            entry["batches"][batch] = {
                "kernels": kernels, **epoch_time(name, layers, batch, samples),
                "phases": step_parts.measure(name, _network(layers), batch, samples)}
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
        if "bandwidth" in c:
            print("bandwidth by footprint: " + ", ".join(
                f"{fp >> 10} KiB {gbs:.0f}" for fp, gbs in c["bandwidth"]) + " GB/s; "
                f"FMA peak at 1 thread {c['gflops_1thread']:.0f} GFLOP/s", file=out)
        if "launches_per_step" in entry:
            print(f"kernel launches per training step: {entry['launches_per_step']}",
                  file=out)
        for batch, rec in entry["batches"].items():
            print(f"\nbatch {batch}: step {rec['step_us']:,.1f} us, epoch "
                  f"{rec['epoch_s']:.3f} s ({rec['steps']} steps)", file=out)
            print(f"  {'kernel':<40}{'us':>10}{'GFLOP/s':>10}{'%peak':>7}{'GB/s':>9}"
                  f"{'%bw':>6}{'bound us':>10}{'%roof':>7}", file=out)
            for k in rec["kernels"]:
                print(f"  {k['kernel']:<40}{k['us']:>10.1f}{k['gflops']:>10.1f}"
                      f"{100 * k['flop_frac']:>7.1f}{k['gbs']:>9.1f}"
                      f"{100 * k['bw_frac']:>6.1f}{k['roofline_us']:>10.1f}"
                      f"{100 * k['roofline_frac']:>7.1f}", file=out)
            total = sum(k["us"] for k in rec["kernels"])
            bound = sum(k["roofline_us"] for k in rec["kernels"])
            print(f"  {'sum of the kernels':<40}{total:>10.1f}{'':>32}{bound:>10.1f}"
                  f"{100 * bound / total:>7.1f}", file=out)
            print(f"  step {rec['step_us']:,.1f} us against the sum of the bounds: "
                  f"{rec['step_us'] / bound:.2f}x", file=out)
            step_parts.print_table(rec.get("phases"), out)
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


def main_args(args, out) -> dict:
    backends = comma_list(args.backend, "backend", ("cpu", "cuda"))
    sizes = comma_list(args.batch_sizes, "--batch-sizes", parse=int, minimum=1)
    layers = comma_list(args.layers, "--layers", parse=int, minimum=1)
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
        write_json(args.json, result, out)
    if args.plot:
        plot(result, args.plot)
    return result
