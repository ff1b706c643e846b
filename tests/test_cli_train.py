"""``fastmlp train`` off the recipes (any network, overrides, early stopping,
checkpoints, resume, plots) and ``fastmlp evaluate --json``."""

import io
import json

import numpy as np
import pytest
from conftest import extra

import fastmlp
from fastmlp.cli import main


def run(argv):
    out = io.StringIO()
    code = main(argv, out=out)
    return code, out.getvalue()


def test_any_network_from_flags(dataset_dir, tmp_path):
    code, out = run(["train", "--data", str(dataset_dir), "--layers", "784,32,16,10",
                     "--activations", "tanh,relu,softmax", "--loss", "cross_entropy",
                     "--optimizer", "adam", "--lr", "3e-3", "--l2", "1e-4",
                     "--batch-size", "64", "--epochs", "2", "--verbose", "0",
                     "--json", str(tmp_path / "r.json"), "--save", str(tmp_path / "m.npz")])
    assert code == 0, out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["layers"] == [784, 32, 16, 10] and r["activations"] == ["tanh", "relu", "softmax"]
    assert r["optimizer"]["name"] == "adam" and r["optimizer"]["lr"] == 3e-3
    assert r["recipe"] == "custom" and r["epochs"] == 2
    assert "confusion matrix (rows: true, columns: predicted)" in out


def test_a_recipe_plus_flags_overrides_its_values(dataset_dir, tmp_path):
    code, out = run(["train", "--recipe", "dl4j", "--data", str(dataset_dir), "--layers",
                     "784,20,10", "--lr", "0.01", "--epochs", "1", "--verbose", "0",
                     "--json", "-"])
    assert code == 0
    r = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert r["recipe"] == "dl4j" and r["layers"] == [784, 20, 10]
    assert r["optimizer"] == {"name": "nesterov", "lr": 0.01, "momentum": 0.9}


def test_train_in_mixed_bfloat16(dataset_dir, tmp_path):
    code, out = run(["train", "--data", str(dataset_dir), "--dtype", "mixed_bfloat16",
                     "--epochs", "1", "--verbose", "0", "--json", str(tmp_path / "r.json"),
                     "--save", str(tmp_path / "m.npz")])
    assert code == 0, out
    assert json.loads((tmp_path / "r.json").read_text())["dtype"] == "mixed_bfloat16"
    model = fastmlp.load(tmp_path / "m.npz")
    assert model.dtype_policy == "mixed_bfloat16" and model.dtype == np.float32


def test_flag_errors_are_one_line(dataset_dir, capsys):
    assert main(["train", "--data", str(dataset_dir), "--layers", "784,30,20,10"]) == 2
    assert "pass --activations" in capsys.readouterr().err
    assert main(["train", "--data", str(dataset_dir), "--layers", "784,x"]) == 2
    assert main(["train", "--data", str(dataset_dir), "--resume", "m.npz", "--layers",
                 "784,10", "--activations", "softmax"]) == 2
    assert "drop --layers" in capsys.readouterr().err


def test_checkpoint_then_resume_is_bitwise_one_run(dataset_dir, tmp_path):
    common = ["--data", str(dataset_dir), "--batch-size", "32", "--verbose", "0",
              "--layers", "784,16,10", "--activations", "relu,softmax"]
    whole = tmp_path / "whole.npz"
    assert run(["train", *common, "--epochs", "3", "--save", str(whole)])[0] == 0
    ck = tmp_path / "ck.npz"
    assert run(["train", *common, "--epochs", "2", "--checkpoint", str(ck)])[0] == 0
    resumed = tmp_path / "resumed.npz"
    code, out = run(["train", "--data", str(dataset_dir), "--resume", str(ck), "--epochs", "1",
                     "--batch-size", "32", "--verbose", "0", "--save", str(resumed)])
    assert code == 0 and "resuming" in out and "at epoch 3" in out
    a, b = fastmlp.load(whole), fastmlp.load(resumed)
    np.testing.assert_array_equal(a.params.flat, b.params.flat)
    assert b.epochs_trained == 3


def test_early_stopping_flag(dataset_dir, tmp_path):
    code, out = run(["train", "--data", str(dataset_dir), "--layers", "784,16,10",
                     "--activations", "relu,softmax", "--lr", "10", "--optimizer", "sgd",
                     "--epochs", "20", "--early-stopping", "1", "--validation-split", "0.2",
                     "--verbose", "0", "--json", str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and r["epochs"] < 20


def test_evaluate_json_and_plots(dataset_dir, tmp_path):
    extra("matplotlib", "plot")
    m = tmp_path / "m.npz"
    code, out = run(["train", "--recipe", "keras", "--data", str(dataset_dir), "--epochs", "2",
                     "--verbose", "0", "--validation-split", "0.1", "--save", str(m),
                     "--plot", str(tmp_path / "train-plots")])
    assert code == 0
    for name in ("history.png", "confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / "train-plots" / name).read_bytes()[:4] == b"\x89PNG"
    code, out = run(["evaluate", str(m), "--data", str(dataset_dir), "--json", "-",
                     "--plot", str(tmp_path / "eval-plots")])
    assert code == 0
    r = json.loads(out[:out.rindex("}") + 1])
    cm = np.array(r["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == r["samples"] == 100
    assert r["misclassified"] == r["samples"] - np.trace(cm)
    assert r["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert sorted(p.name for p in (tmp_path / "eval-plots").iterdir()) == \
        ["confusion_matrix.png", "misclassified.png"]
