"""A process killed (SIGKILL) while it saves leaves a file that loads as one complete
model, the old one or the new one (benches/kill_saves.py runs the long version)."""

import os
import subprocess
import sys

import pytest
from conftest import bench_script


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX signals")
def test_killed_saves_leave_a_whole_model(tmp_path):
    res = bench_script("kill_saves").kill_loop(str(tmp_path), kills=50, seed=1)
    # Every kill left a model that loads as one of the two (kill_loop checks each).
    assert sum(res["loaded"].values()) == 50
    # A save removes the temporary files of killed writers: the last one's at most.
    assert res["temporary files left"] <= 1 and res["left after one more save"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX signals")
def test_killed_checkpoints_leave_a_whole_checkpoint(tmp_path):
    res = bench_script("kill_saves").kill_loop(str(tmp_path), kills=20, seed=2,
                                               checkpoint=True)
    # Each file loaded with its training state and trained on (kill_loop checks).
    assert res["loaded"] == {"checkpoint": 20}
    assert res["left after one more save"] == 0


@pytest.mark.skipif(os.name != "posix", reason="stale files are found by probing pids")
def test_a_save_removes_only_dead_writers_temporaries(tmp_path):
    from fastmlp import _util

    path = tmp_path / "m.npz"
    prefix = _util._temporary_prefix(str(path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {"dead": f"{prefix}{dead.pid}.abc{_util.TEMP_SUFFIX}",
             "alive": f"{prefix}{os.getppid()}.abc{_util.TEMP_SUFFIX}",
             "other file": f"{_util._temporary_prefix(str(tmp_path / 'other.npz'))}"
                           f"{dead.pid}.x{_util.TEMP_SUFFIX}",
             "not ours": f"{prefix}{dead.pid}.abc.tmp"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    with _util.atomic_write(path) as f:
        f.write(b"whole")
    left = set(os.listdir(tmp_path))
    assert names["dead"] not in left
    assert {names["alive"], names["other file"], names["not ours"], "m.npz"} <= left
