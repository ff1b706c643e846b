"""A short soak (benches/soak.py runs the long one): cycles of fit, predict, save and
load with random valid configurations must not make resident memory grow."""

import pathlib

import pytest
from conftest import bench_script


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="reads VmRSS")
def test_short_soak_keeps_memory_flat(tmp_path):
    res = bench_script("soak").soak(cycles=300, warmup=100, seed=3, folder=tmp_path)
    # After warm-up, no cycle's RSS is more than 5% above the warm-up's largest.
    assert res["growth"] <= 0.05, res["curve"]
