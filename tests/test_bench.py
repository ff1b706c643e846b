"""``fastmlp bench``: the tables, the JSON, the worker processes and the optional peer."""

import json

import pytest
from conftest import write_dataset

from fastmlp import cli
from fastmlp.tools import bench, machine


def test_bench_runs_products_and_epochs(tmp_path, capsys):
    write_dataset(tmp_path / "fashion-mnist", n_train=600, n_test=100)
    out = tmp_path / "bench.json"
    code = cli.main(["bench", "--threads", "1", "--contenders", "cpu,numpy", "--epochs", "1",
                     "--blocks", "1", "--data", str(tmp_path / "fashion-mnist"),
                     "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "forward x @ W" in text and "weight grad x.T @ g" in text
    assert "fastmlp cpu" in text and "/ cpu" in text  # ratios to the first contender
    res = json.loads(out.read_text())
    run = res["runs"][0]
    assert run["threads"] == 1
    assert [r["product"] for r in run["products"]] == [p[0] for p in bench.PRODUCTS]
    for r in run["products"]:
        assert r["fastmlp_gflops"] > 0 and r["numpy_gflops"] > 0
        assert r["max_rel_diff"] < 1e-4  # the two products agree
    for name in ("cpu", "numpy"):
        e = run["epochs"][name]
        assert len(e["epochs_s"]) == 1 and e["median_s"] > 0
        assert 0 <= e["test_accuracy"] <= 1 and e["epochs_trained"] == 2


def test_worker_limits_every_library_to_its_threads():
    env = bench.thread_env(3)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        assert env[var] == "3"


def test_threads_option():
    assert bench.parse_threads("all,1") == [machine.cores(), 1]
    with pytest.raises(ValueError, match="threads must be positive"):
        bench.parse_threads("0")
    with pytest.raises(ValueError, match="threads must be positive"):
        bench.parse_threads("two")


def test_torch_missing_is_said_clearly(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench.peers, "available", lambda name: name == "jax")
    code = cli.main(["bench", "--threads", "1", "--contenders", "cpu,torch", "--no-products"])
    assert code == 2
    assert "pip install 'fastmlp[peers]'" in capsys.readouterr().err
    # Without --contenders it is left out with a note, and the rest still runs.
    code = cli.main(["bench", "--threads", "1", "--no-epochs", "--blocks", "1"])
    text = capsys.readouterr().out
    assert code == 0 and "forward x @ W" in text
    assert "torch needs torch, which is not installed" in text
    assert "torch-bf16 needs torch" in text and "jax needs" not in text


def test_unknown_contender(capsys):
    assert bench.main(["--contenders", "tensorflow", "--threads", "1"]) == 2
    assert "unknown contender tensorflow" in capsys.readouterr().err


# ------------------------------------------------------------------ peers and --sweep
def _separable(n=256, features=12, classes=3, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = (rng.normal(0, 3, (classes, features))[labels]
         + rng.normal(0, 1, (n, features))).astype(np.float32)
    return x, labels


@pytest.mark.parametrize("name", ["torch", "torch-bf16", "jax"])
def test_peer_trainers_learn_from_fastmlps_weights(name):
    import numpy as np
    from conftest import extra

    from fastmlp import MLP
    from fastmlp.tools import peers

    extra(peers.PEERS[name], "peers")
    x, labels = _separable()
    model = MLP([12, 16, 3], ["relu", "softmax"], backend="numpy", seed=1)
    tr = peers.make(name, model, {"lr": 1e-2, "rho": 0.9, "eps": 1e-7}, 20, 1)
    before = tr.accuracy(x, labels)
    assert before == pytest.approx(float((model.predict(x) == labels).mean()), abs=0.02)
    for _ in range(3):
        assert tr.epoch(x, labels, np.random.default_rng(0).permutation(len(x))) > 0
    assert tr.accuracy(x, labels) > max(0.9, before)


def test_sweep_measures_every_contender(monkeypatch):
    from fastmlp.tools import sweep

    monkeypatch.setattr(sweep, "EPOCH_FLOPS", 1e6)
    res = sweep.run_sweep(["cpu", "cpu-bf16"], 1, rounds=1,
                          shapes=(((20, 8, 3), 16), ((30, 5, 5, 2), 8)))
    assert [r["layers"] for r in res["rows"]] == [[20, 8, 3], [30, 5, 5, 2]]
    for r in res["rows"]:
        assert r["samples"] % r["batch"] == 0 and r["samples"] >= 4 * r["batch"]
        for name in ("cpu", "cpu-bf16"):
            assert r["samples_per_s"][name] > 0 and 0 < r["peak_frac"][name] < 1
    assert res["fma_peak_gflops"] > 0
    lines = sweep.format_sweep(res)
    assert lines[1].startswith("20-8-3") and "cpu /s" in lines[0] and "cpu-bf16 /s" in lines[0]
    # The ratio columns name both sides, and need the peer.
    assert "time /" not in lines[0]
    for r in res["rows"]:
        r["samples_per_s"]["torch-bf16"] = r["samples_per_s"]["cpu-bf16"] / 2
        r["peak_frac"]["torch-bf16"] = 0.1
    lines = sweep.format_sweep(res)
    assert "cpu-bf16 time / torch-bf16" in lines[0] and lines[1].rstrip().endswith("0.50")
    assert sweep.flops_per_sample([784, 512, 10]) == 4 * 784 * 512 + 6 * 512 * 10
