"""GridSearchCV of fastmlp's MLPClassifier: one process (fastmlp's OpenMP threads)
against a Dask LocalCluster through joblib, alternating, medians of wall times.

    python benches/gridsearch_dask.py [--repeats 3] [--workers 2] [--json FILE]

Needs the sklearn and dask extras. Fashion-MNIST from ../shared/data when present
(else random data of the same shape); prints one line per contender and the
threads each Dask worker gives fastmlp.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import numpy as np

import fastmlp
from fastmlp.sklearn import MLPClassifier

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def load(n):
    try:
        (x, y), _ = fastmlp.datasets.load("fashion-mnist", str(DATA))
        return (x[:n].reshape(n, -1) / 255.0).astype(np.float32), y[:n]
    except (OSError, ValueError):
        rng = np.random.default_rng(0)
        return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def main():
    from distributed import Client, LocalCluster
    from joblib import parallel_backend
    from sklearn.model_selection import GridSearchCV

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=6000)
    ap.add_argument("--json")
    args = ap.parse_args()
    x, y = load(args.samples)
    grid = {"hidden_layer_sizes": [(64,), (128,)], "learning_rate_init": [1e-3, 3e-3]}
    est = MLPClassifier(max_iter=5, tol=-1.0, random_state=0)

    def search(n_jobs):
        t = time.perf_counter()
        g = GridSearchCV(est, grid, cv=3, n_jobs=n_jobs).fit(x, y)
        return time.perf_counter() - t, g.cv_results_["mean_test_score"]

    dask = f"dask {args.workers} workers"
    times = {"n_jobs=1": [], "n_jobs=1, 1 thread": [], dask: []}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        worker_threads = client.run(fastmlp.get_num_threads)
        search(1)  # warm up both (imports, first compilations)
        with parallel_backend("dask"):
            search(-1)
        for _ in range(args.repeats):
            t1, s1 = search(1)
            with fastmlp.threads.num_threads(1):
                t0, s0 = search(1)
            with parallel_backend("dask"):
                t2, s2 = search(-1)
            times["n_jobs=1"].append(t1)
            times["n_jobs=1, 1 thread"].append(t0)
            times[dask].append(t2)
            assert np.array_equal(s1, s2) and np.array_equal(s0, s1), "scores differ"
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["n_jobs=1"]
    print(f"GridSearchCV of MLPClassifier, {len(x)} samples, 4 candidates x 3 folds, "
          f"5 epochs each; "
          f"main process {fastmlp.get_num_threads()} threads; Dask worker threads "
          f"{sorted(worker_threads.values())}; scores equal: yes")
    for k, v in med.items():
        print(f"{k:<20} median {v:7.2f} s  ({base / v:.2f}x of n_jobs=1)  runs "
              f"{', '.join(f'{t:.2f}' for t in times[k])}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"times": times, "median": med, "worker_threads": list(worker_threads.values()),
             "main_threads": fastmlp.get_num_threads(), "samples": len(x)}, indent=2))


if __name__ == "__main__":
    main()
