"""benches/two_trainings.py: the measurement of two trainings at once, run briefly."""

import pytest
from conftest import bench_script, write_dataset


def test_two_trainings_at_once_on_a_small_data_set(tmp_path):
    # 300 images: each worker trains the keras recipe for 2 epochs (the first a
    # warm-up), alone, two at once, then alone again.
    write_dataset(tmp_path / "data", n_train=300, n_test=50)
    script = bench_script("two_trainings")
    res = script.measure(str(tmp_path / "data"), epochs=2)
    for key in ("solo_before_s", "pair_a_s", "pair_b_s", "solo_after_s"):
        assert len(res[key]) == 1 and res[key][0] > 0
    assert res["ratio"] == pytest.approx(res["pair_median_s"] / res["solo_median_s"])
    out = tmp_path / "report.txt"
    assert script.main(["--data", str(tmp_path / "data"), "--epochs", "2",
                        "--out", str(out)]) == 0
    assert "x its solo epoch." in out.read_text()


def test_two_trainings_needs_a_warm_up_epoch(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_script("two_trainings").main(["--data", str(tmp_path), "--epochs", "1"])
    assert "--epochs must be at least 2" in capsys.readouterr().err
