"""Models too large for memory are refused with a clear MemoryError before anything is
allocated; initialisation needs no float64 copy of a float32 model."""

import numpy as np
import pytest
from conftest import peak_bytes

import fastmlp
from fastmlp import _memory, initializers


def fake_files(monkeypatch, files):
    monkeypatch.setattr(_memory, "_read", lambda path: files.get(path))


def test_available_memory_is_meminfo_lowered_to_the_cgroup_room(monkeypatch):
    meminfo = "MemTotal: 20000000 kB\nMemAvailable: 10000000 kB\n"
    fake_files(monkeypatch, {"/proc/meminfo": meminfo})
    assert _memory.available_bytes() == 10_000_000 * 1024
    fake_files(monkeypatch, {"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory.max": "max\n",
                             "/sys/fs/cgroup/memory.current": "5\n"})
    assert _memory.available_bytes() == 10_000_000 * 1024
    fake_files(monkeypatch, {"/proc/meminfo": meminfo,
                             "/sys/fs/cgroup/memory.max": "1073741824\n",
                             "/sys/fs/cgroup/memory.current": "73741824\n"})
    assert _memory.available_bytes() == 1_000_000_000
    fake_files(monkeypatch, {"/sys/fs/cgroup/memory/memory.limit_in_bytes": "3000\n",
                             "/sys/fs/cgroup/memory/memory.usage_in_bytes": "4000\n"})
    assert _memory.available_bytes() == 0
    fake_files(monkeypatch, {})
    assert _memory.available_bytes() is None
    _memory.ensure(10**15, "anything")  # unknown: nothing is refused


def test_a_model_larger_than_memory_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: 8 * 2**30)

    def make():
        with pytest.raises(MemoryError, match=r"the 2,400,000,003 float32 parameters of "
                           r"MLP\(\[20, 100000000, 3\]\): 8.9 GiB \(9,608,388,620 bytes\) "
                           r"needed, but only 8.0 GiB \(8,589,934,592 bytes\)"):
            fastmlp.MLP([20, 100_000_000, 3], ["relu", "softmax"])

    assert peak_bytes(make) < 1_000_000


def test_fit_is_refused_before_allocating_when_training_needs_more(monkeypatch):
    model = fastmlp.MLP([784, 512, 10], backend="cpu", seed=0)
    before = model.get_weights()
    # Room for the parameters, not for the gradient, spare copy and RMSprop's state.
    monkeypatch.setattr(_memory, "available_bytes", lambda: 3 * model.params.flat.nbytes)
    x = np.zeros((64, 784), np.float32)
    with pytest.raises(MemoryError, match=r"training MLP\(\[784, 512, 10\]\) in batches of "
                       r"32: .* needed, but only"):
        model.fit(x, np.zeros(64, int), epochs=1, batch_size=32, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_float32_initialisation_peaks_near_the_parameters(monkeypatch):
    layers = [4096, 4096, 10]
    n_params = 4096 * 4096 + 4096 * 10 + 4096 + 10
    peak = peak_bytes(lambda: fastmlp.MLP(layers, ["relu", "softmax"], seed=0))
    # The parameters, and one piece of float64 draws at a time (not a float64 copy
    # of the 4096 x 4096 layer, 134 MB).
    assert peak < 4 * n_params + 3 * 8 * initializers.CHUNK
