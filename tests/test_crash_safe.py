"""A process killed (SIGKILL) while it saves leaves a file that loads as one complete
model, the old one or the new one (benches/kill_saves.py runs the long version)."""

import importlib.util
import os
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benches" / "kill_saves.py"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX signals")
def test_killed_saves_leave_a_whole_model(tmp_path):
    spec = importlib.util.spec_from_file_location("kill_saves", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.kill_loop(str(tmp_path), kills=50, seed=1)
    # Every kill left a model that loads as one of the two (kill_loop checks each).
    assert sum(res["loaded"].values()) == 50
