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
    monkeypatch.setattr(bench, "torch_available", lambda: False)
    code = cli.main(["bench", "--threads", "1", "--contenders", "cpu,torch", "--no-products"])
    assert code == 2
    assert "pip install 'fastmlp[peers]'" in capsys.readouterr().err
    # Without --contenders it is left out with a note, and the rest still runs.
    code = cli.main(["bench", "--threads", "1", "--no-epochs", "--blocks", "1"])
    text = capsys.readouterr().out
    assert code == 0 and "PyTorch is not installed" in text and "forward x @ W" in text


def test_unknown_contender(capsys):
    assert bench.main(["--contenders", "tensorflow", "--threads", "1"]) == 2
    assert "unknown contender tensorflow" in capsys.readouterr().err
