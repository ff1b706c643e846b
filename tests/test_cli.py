"""The fastmlp command."""

import io
import json
import os
import shutil
import subprocess
import sys

import pytest

import fastmlp
from fastmlp.cli import main
from fastmlp.functions import ACTIVATIONS, LOSS_OUTPUTS


def run(argv):
    out = io.StringIO()
    code = main(argv, out=out)
    return code, out.getvalue()


@pytest.fixture
def run_stdout(capsys):
    """Run the command with everything on the real stdout (fit's progress included)."""

    def go(argv):
        code = main(argv)
        return code, capsys.readouterr().out

    return go


def test_train_then_evaluate(dataset_dir, tmp_path, run_stdout):
    model_path, json_path = tmp_path / "m.npz", tmp_path / "r.json"
    code, out = run_stdout(["train", "--recipe", "keras", "--data", str(dataset_dir),
                            "--epochs", "2", "--batch-size", "32", "--save", str(model_path),
                            "--json", str(json_path), "--verbose", "2",
                            "--validation-split", "0.1"])
    assert code == 0, out
    assert "Epoch 2/2" in out and "val_accuracy" in out and "test accuracy" in out
    assert "precision" in out and "macro avg" in out
    result = json.loads(json_path.read_text())
    for key in ("recipe", "backend", "dataset", "epochs", "test_accuracy", "test_loss",
                "epoch_seconds", "history"):
        assert key in result
    assert result["recipe"] == "keras" and result["epochs"] == 2
    assert len(result["epoch_seconds"]) == 2 and result["test_accuracy"] > 0.9
    assert len(result["history"]["val_loss"]) == 2

    code, out = run(["evaluate", str(model_path), "--data", str(dataset_dir), "--misclassified",
                     "3", "--backend", "numpy"])
    assert code == 0
    acc = float(out.split("test accuracy: ")[1].split()[0])
    assert acc == pytest.approx(result["test_accuracy"], abs=1e-4)
    assert "misclassified" in out


def test_dataset_is_guessed_from_the_folder_name(tmp_path, capsys):
    from conftest import write_dataset

    write_dataset(tmp_path / "fashion-mnist", n_train=40, n_test=20)
    code, out = run(["train", "--recipe", "keras", "--data", str(tmp_path / "fashion-mnist"),
                     "--epochs", "1", "--verbose", "0", "--json", str(tmp_path / "r.json")])
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text())["dataset"] == "fashion-mnist"
    assert "Ankle boot" in out  # the report names Fashion-MNIST's classes


def test_train_lecture_recipe_on_numpy(dataset_dir, tmp_path):
    code, out = run(["train", "--recipe", "lecture", "--data", str(dataset_dir), "--backend",
                     "numpy", "--epochs", "4", "--verbose", "0",
                     "--json", str(tmp_path / "r.json")])
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["history"]["loss"][0] > 0 and result["test_accuracy"] > 0.5


def test_train_reports_errors_without_traceback(tmp_path, capsys):
    code, _ = run(["train", "--recipe", "keras", "--data", str(tmp_path / "nowhere")])
    assert code == 2
    assert "fastmlp: error: no such data folder" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mnist_train.csv").write_text("1,2,3\n1,2\n")
    (tmp_path / "d" / "mnist_test.csv").write_text("1,2,3\n")
    code, _ = run(["train", "--recipe", "keras", "--data", str(tmp_path / "d")])
    assert code == 2
    assert "mnist_train.csv:2: 2 columns, expected 3" in capsys.readouterr().err


def test_bad_choices_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--recipe", "resnet"])
    assert info.value.code == 2
    assert "invalid choice: 'resnet'" in capsys.readouterr().err


def test_evaluate_rejects_a_foreign_file(tmp_path, capsys):
    (tmp_path / "x.npz").write_bytes(b"nonsense")
    code, _ = run(["evaluate", str(tmp_path / "x.npz")])
    assert code == 2 and "not a readable fastmlp model" in capsys.readouterr().err


def test_gradcheck_command():
    code, out = run(["gradcheck", "--recipe", "keras", "--entries", "4", "--samples", "3"])
    assert code == 0
    assert "PASS" in out
    lines = [line for line in out.splitlines() if line.startswith(("numpy ", "cpu "))]
    pairs = sum(len(outputs) * len(ACTIVATIONS) for outputs in LOSS_OUTPUTS.values())
    assert len(lines) == 2 * (1 + pairs)  # per backend: the recipe and every pair
    code, _ = run(["gradcheck", "--backend", "gpu"])
    assert code == 2


def test_gradcheck_command_fails_on_a_tolerance_it_cannot_meet():
    code, out = run(["gradcheck", "--recipe", "", "--backend", "numpy", "--tol", "1e-30"])
    assert code == 1 and "FAIL" in out


def test_info(capsys):
    code, out = run(["info", "--json"])
    info = json.loads(out)
    assert code == 0 and info["fastmlp"] == fastmlp.__version__
    assert info["backends"]["numpy"] == "available"
    assert info["threads"] >= 1 and info["cpu_simd"]


def test_console_script_is_installed():
    exe = shutil.which("fastmlp", path=os.path.dirname(sys.executable))
    assert exe, "the fastmlp console script is not installed next to this Python"
    result = subprocess.run([exe, "info"], capture_output=True, text=True, check=True)
    assert "backend cpu" in result.stdout


def test_train_lecture_by_numerical_derivative(dataset_dir, tmp_path):
    runs = {}
    for trainer in ("numerical", "lecture-backprop"):
        path = tmp_path / f"{trainer}.json"
        code, out = run(["train", "--recipe", "lecture", "--trainer", trainer, "--data",
                         str(dataset_dir), "--verbose", "0", "--json", str(path)])
        assert code == 0, out
        assert f"trainer {trainer}" in out
        runs[trainer] = json.loads(path.read_text())
    assert runs["numerical"]["trainer"] == "numerical"
    assert runs["numerical"]["steps"] == runs["lecture-backprop"]["steps"] > 0
    assert runs["numerical"]["test_accuracy"] == pytest.approx(
        runs["lecture-backprop"]["test_accuracy"], abs=0.02)


@pytest.mark.parametrize("argv, message", [
    (["train", "--recipe", "keras", "--trainer", "numerical"], "one sigmoid hidden layer"),
    (["train", "--recipe", "lecture", "--diff-step", "1e-3"], "trainer='numerical'"),
    (["train", "--recipe", "lecture", "--trainer", "numerical", "--diff-step", "0"],
     "h must be > 0"),
    (["compare", "--samples", "0"], "--samples must be >= 1"),
    (["compare", "--repeats", "0"], "--repeats must be >= 1"),
    (["compare", "--diff-step", "-1"], "h must be > 0"),
])
def test_numerical_trainer_errors(dataset_dir, capsys, argv, message):
    code, _ = run(argv + ["--data", str(dataset_dir)])
    assert code == 2
    assert message in capsys.readouterr().err


def test_compare(dataset_dir, tmp_path):
    path = tmp_path / "c.json"
    code, out = run(["compare", "--data", str(dataset_dir), "--samples", "120",
                     "--naive-samples", "1", "--gradient-samples", "2", "--repeats", "2",
                     "--misclassified", "4", "--json", str(path)])
    assert code == 0, out
    result = json.loads(path.read_text())
    keys = [row["key"] for row in result["trainers"]]
    assert keys == ["naive", "numerical", "lecture-backprop", "backprop"]
    assert all(len(v) == 2 for v in result["epoch_seconds_all"].values())
    # The compiled trainer took the naive trainer's step to round-off, and both
    # derivatives agree to O(h^2).
    assert result["naive_vs_compiled_max_weight_diff"] < 1e-10
    assert 0 < result["gradient_max_rel_diff"] < 1e-7
    by = {row["key"]: row for row in result["trainers"]}
    assert by["numerical"]["test_accuracy"] == by["lecture-backprop"]["test_accuracy"]
    assert by["naive"]["seconds_per_sample"] > 100 * by["numerical"]["seconds_per_sample"]
    wrong = result["misclassified"]
    assert len(wrong) == round((1 - by["numerical"]["test_accuracy"]) * result["test_samples"])
    assert all(label != pred for _, label, pred in wrong)
    assert "s/sample" in out and "misclassifies" in out
    assert out.count("\n") > 8
