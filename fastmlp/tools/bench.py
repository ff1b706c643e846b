"""Benchmarks on this machine: the ``cpu`` backend against NumPy, PyTorch and JAX.

The measurements, each run for every thread count asked for:

* **products**: GFLOP/s of the three matrix products of the keras recipe's
  784-512 layer at batch 128 (forward, input gradient, weight gradient), the
  ``cpu`` backend's kernel against NumPy's BLAS on the same operands;
* **epochs**: seconds per training epoch of the keras recipe (784-512 relu-10
  softmax, RMSprop, batch 128, float32) for the ``cpu`` backend, the same under
  ``mixed_bfloat16`` (``cpu-bf16``), the ``numpy`` backend, PyTorch (``torch``),
  PyTorch under its bfloat16 CPU autocast (``torch-bf16``) and JAX with the whole
  epoch one jitted ``lax.scan`` (``jax``), all starting from the same weights,
  epochs alternating between them after one warm-up epoch each; then each one's
  test accuracy;
* with ``--sweep``, instead of the epochs: training throughput over the network
  shapes and batch sizes of ``fastmlp.tools.sweep`` (samples/s and % of the FMA
  peak).

Each thread count runs in a fresh worker process whose environment limits every
library (OpenMP, OpenBLAS, MKL, PyTorch, XLA) to that many threads, since a BLAS
cannot be re-limited once loaded. Medians are reported, and ratios come from
the same run. The peers are optional: PyTorch with ``pip install
'fastmlp[peers]'``, JAX with ``pip install jax``; those not installed are left out.

    fastmlp bench --data ../shared/data/fashion-mnist
    fastmlp bench --sweep --threads all
    python -m fastmlp.tools.bench --threads 1 --no-epochs
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import datasets, recipes, set_num_threads
from .._util import comma_list, write_json
from . import machine, peers, sweep

CONTENDERS = ("cpu", "cpu-bf16", "numpy", "torch", "torch-bf16", "jax")
#: fastmlp's own contenders: (backend, dtype).
OWN = {"cpu": ("cpu", None), "cpu-bf16": ("cpu", "mixed_bfloat16"), "numpy": ("numpy", None)}

# (name, M, N, K, transpose first operand, transpose second) of the 784-512 layer,
# batch 128: out = x @ W, gx = g @ W.T, gW = x.T @ g.
PRODUCTS = (
    ("forward x @ W", 128, 512, 784, False, False),
    ("input grad g @ W.T", 128, 784, 512, False, True),
    ("weight grad x.T @ g", 784, 512, 128, True, False),
)

def peer_available(name: str) -> bool:
    """Whether the library a peer contender needs is installed (fastmlp's own always are)."""
    return name not in peers.PEERS or peers.available(name)


def thread_env(threads: int) -> dict:
    """The environment limiting OpenMP and the BLAS libraries to ``threads``."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    if threads == 1:  # XLA's CPU backend: no thread pool of its own
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    return env


# ------------------------------------------------------------------ worker side
def _median_block(fn, calls):
    fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_products(blocks=5, calls=20, pause=0.1, seed=0) -> list:
    """GFLOP/s of the layer's products, fastmlp's kernel against NumPy's.

    The contenders alternate in blocks of ``calls`` calls, with ``pause`` seconds
    between blocks so that one library's idle threads have stopped spinning
    before the other's run; the figure is the median over blocks of each
    block's median call.
    """
    from .. import _cpu  # the compiled kernels, only in the worker process

    rng = np.random.default_rng(seed)
    rows = []
    for name, M, N, K, ta, tb in PRODUCTS:
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        a, b = (a.T if ta else a), (b.T if tb else b)
        out_f = np.empty((M, N), np.float32)
        out_n = np.empty((M, N), np.float32)
        runs = {"fastmlp": lambda a=a, b=b, o=out_f: _cpu.matmul(a, b, o),
                "numpy": lambda a=a, b=b, o=out_n: np.matmul(a, b, out=o)}
        medians = {k: [] for k in runs}
        for _ in range(blocks):
            for key, fn in runs.items():
                time.sleep(pause)
                medians[key].append(_median_block(fn, calls))
        err = float(np.abs(out_f - out_n).max() / np.abs(out_n).max())
        flop = 2.0 * M * N * K
        gf = {k: flop / statistics.median(v) / 1e9 for k, v in medians.items()}
        rows.append({"product": name, "M": M, "N": N, "K": K,
                     "fastmlp_gflops": gf["fastmlp"], "numpy_gflops": gf["numpy"],
                     "ratio": gf["fastmlp"] / gf["numpy"], "max_rel_diff": err})
    return rows


def bench_epochs(contenders, threads, epochs=3, data=None, dataset="fashion-mnist",
                 samples=None, seed=0) -> dict:
    """Epoch seconds (after one warm-up epoch) and test accuracy per contender."""
    set_num_threads(threads)
    recipe = recipes.get("keras")
    (x, y), (xt, yt) = datasets.load(dataset, data)
    if samples:
        x, y = x[:samples], y[:samples]
    # Images as rows of 784 features, scaled as the recipe does.
    x = recipe.inputs(x.reshape(len(x), -1))
    xt_s = recipe.inputs(xt.reshape(len(xt), -1))
    t = recipe.targets(y)
    runners = {}
    for name in contenders:
        if name in OWN:
            backend, dtype = OWN[name]
            model, opt = recipe.build(backend=backend, dtype=dtype), recipe.make_optimizer()

            def run(model=model, opt=opt):
                return model.fit(x, t, epochs=1, batch_size=recipe.batch_size, optimizer=opt,
                                 verbose=0).epoch_seconds[0]

            def acc(model=model):
                return model.evaluate(xt_s, yt)["accuracy"]
        else:
            tr = peers.make(name, recipe.build(backend="numpy"), recipe.optimizer_args,
                            recipe.batch_size, threads)
            labels, rng = y.astype(np.int64), np.random.default_rng(seed)

            def run(tr=tr, labels=labels, rng=rng):
                return tr.epoch(x, labels, rng.permutation(len(x)))

            def acc(tr=tr):
                return tr.accuracy(xt_s, yt)
        runners[name] = (run, acc)
    seconds = {name: [] for name in contenders}
    for rnd in range(epochs + 1):
        for name, (run, _) in runners.items():
            s = run()
            if rnd:  # round 0 is the warm-up
                seconds[name].append(s)
    return {name: {"epochs_s": seconds[name], "median_s": statistics.median(seconds[name]),
                   "test_accuracy": runners[name][1](), "epochs_trained": epochs + 1}
            for name in contenders}


def _worker(payload: str) -> None:
    opts = json.loads(payload)
    if hasattr(os, "sched_setaffinity") and opts["threads"] < len(os.sched_getaffinity(0)):
        # Also bounds the libraries no variable limits (XLA's thread pool).
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:opts["threads"]])
    result = {"threads": opts["threads"]}
    if opts.get("products"):
        result["products"] = bench_products(blocks=opts.get("blocks", 5))
    if opts.get("sweep"):
        result["sweep"] = sweep.run_sweep([c for c in opts["sweep"] if c != "numpy"],
                                          opts["threads"], opts["epochs"])
    if opts.get("contenders"):
        result["epochs"] = bench_epochs(opts["contenders"], opts["threads"], opts["epochs"],
                                        opts.get("data"), opts["dataset"], opts.get("samples"))
    print(json.dumps(result))


# ------------------------------------------------------------------ parent side
def run_worker(opts: dict) -> dict:
    """Run one thread count's measurements in a fresh process limited to its threads."""
    cmd = [sys.executable, "-m", "fastmlp.tools.bench", "--worker", json.dumps(opts)]
    # Away from any source tree, so the worker imports the installed package.
    proc = subprocess.run(cmd, env=thread_env(opts["threads"]), cwd=tempfile.gettempdir(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the benchmark worker for {opts['threads']} thread(s) failed:\n"
                           f"{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_products(rows) -> list:
    lines = [f"{'product':<22}{'M x K @ K x N':>20}{'fastmlp GFLOP/s':>17}"
             f"{'numpy GFLOP/s':>15}{'ratio':>8}"]
    for r in rows:
        shape = f"{r['M']}x{r['K']} @ {r['K']}x{r['N']}"
        lines.append(f"{r['product']:<22}{shape:>20}{r['fastmlp_gflops']:>17.1f}"
                     f"{r['numpy_gflops']:>15.1f}{r['ratio']:>8.2f}")
    return lines


def format_epochs(res) -> list:
    base = "torch" if "torch" in res else next(iter(res))
    lines = [f"{'contender':<12}{'median s':>10}{'min s':>9}{'/ ' + base:>10}"
             f"{'test acc':>10}   epochs (s)"]
    label = {"cpu": "fastmlp cpu", "cpu-bf16": "fastmlp bf16"}
    for name, r in res.items():
        ratio = r["median_s"] / res[base]["median_s"]
        lines.append(f"{label.get(name, name):<12}{r['median_s']:>10.3f}{min(r['epochs_s']):>9.3f}"
                     f"{ratio:>10.2f}{r['test_accuracy']:>10.4f}   "
                     + " ".join(f"{s:.3f}" for s in r["epochs_s"]))
    return lines


def run(threads_list, contenders, epochs=3, products=True, data=None,
        dataset="fashion-mnist", samples=None, blocks=5, out=None, sweep_over=None) -> dict:
    """Measure every thread count, print the tables, and return all results."""
    out = out or sys.stdout
    info = machine.describe()
    print(f"{info['cpu']}, {info['cores']} cores, SIMD {info['cpu_simd']} (GEMM kernels "
          f"{info['gemm_kernels']}); fastmlp {info['fastmlp']}, numpy {info['numpy']}"
          + (f", torch {info['torch']}" if "torch" in info else ""), file=out)
    results = {"machine": info, "runs": []}
    for threads in threads_list:
        opts = {"threads": threads, "products": products, "contenders": list(contenders),
                "epochs": epochs, "data": data, "dataset": dataset, "samples": samples,
                "blocks": blocks, "sweep": sweep_over}
        res = run_worker(opts)
        results["runs"].append(res)
        if products:
            print(f"\nmatrix products of the 784-512 layer at batch 128, float32, "
                  f"{threads} thread(s) (median of {blocks} alternating blocks)", file=out)
            for line in format_products(res["products"]):
                print(line, file=out)
        if sweep_over:
            print(f"\ntraining throughput, float32 (cpu-bf16: fastmlp's mixed_bfloat16; "
                  f"torch-bf16: PyTorch's bfloat16 autocast), {threads} thread(s), "
                  f"samples/s and % of the FMA peak "
                  f"({res['sweep']['fma_peak_gflops']:.0f} GFLOP/s), median of {epochs} "
                  f"alternating epochs after a warm-up", file=out)
            for line in sweep.format_sweep(res["sweep"]):
                print(line, file=out)
        if contenders:
            print(f"\nkeras recipe epoch, {samples or 'all'} samples, batch 128, float32, "
                  f"{threads} thread(s) (median of {epochs} alternating epochs after a "
                  f"warm-up; test accuracy after {epochs + 1} epochs)", file=out)
            for line in format_epochs(res["epochs"]):
                print(line, file=out)
    return results


def parse_threads(value: str) -> list:
    """'all,1' -> [cores, 1]."""
    items = []
    for item in value.split(","):
        item = item.strip()
        n = machine.cores() if item == "all" else int(item) if item.isdigit() else 0
        if n < 1:
            raise ValueError(f"threads must be positive integers or 'all', got {item!r}")
        items.append(n)
    return items


def add_arguments(p) -> None:
    """The options of ``fastmlp bench`` and ``python -m fastmlp.tools.bench``."""
    p.add_argument("--threads", default="all,1",
                   help="thread counts to measure, comma-separated ('all' = every core)")
    p.add_argument("--contenders", default=None,
                   help=f"comma-separated, from {', '.join(CONTENDERS)} (default: all "
                        f"installed)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per contender")
    p.add_argument("--no-epochs", action="store_true", help="only the matrix products")
    p.add_argument("--no-products", action="store_true", help="only the training epochs")
    p.add_argument("--blocks", type=int, default=5, help="alternating blocks per product")
    p.add_argument("--data", metavar="DIR", help="folder with the data set")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--samples", type=int, help="train on the first N samples only")
    p.add_argument("--sweep", action="store_true",
                   help="instead of the keras epoch: throughput over the shapes of "
                        "fastmlp.tools.sweep.SHAPES for each contender")
    p.add_argument("--json", metavar="FILE", help="write every figure here")


def main_args(args, out=None) -> dict:
    """Run ``fastmlp bench`` from parsed arguments."""
    out = out or sys.stdout
    threads_list = parse_threads(args.threads)
    if args.epochs < 1 or args.blocks < 1:
        raise ValueError("--epochs and --blocks must be at least 1")
    if args.contenders is None:
        contenders = [c for c in CONTENDERS if peer_available(c)]
        for name in sorted(set(CONTENDERS) - set(contenders)):
            print(f"note: {peers.missing_message(name)}, so it is left out", file=out)
    else:
        contenders = comma_list(args.contenders, "contender", CONTENDERS)
        for name in contenders:
            if not peer_available(name):
                raise RuntimeError(peers.missing_message(name))
    sweep_over = None
    if args.sweep:
        sweep_over, contenders = [c for c in contenders if c != "numpy"], []
    if args.no_epochs:
        contenders = []
    data = os.path.abspath(args.data) if args.data else None
    results = run(threads_list, contenders, epochs=args.epochs,
                  products=not args.no_products, data=data, dataset=args.dataset,
                  samples=args.samples, blocks=args.blocks, out=out, sweep_over=sweep_over)
    if args.json:
        write_json(args.json, results, out)
    return results


def main(argv=None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1])
        return 0
    p = argparse.ArgumentParser(prog="python -m fastmlp.tools.bench", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        main_args(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"fastmlp bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
