"""float32 softmax's exponential against the C library's on every float."""

import pytest

from fastmlp import _cpu


@pytest.mark.slow
def test_softmax_exp_gives_the_c_librarys_float_for_every_float():
    # All 2^32 bit patterns (about 30 s on two cores): the proof behind
    # fm_exp_to_float's claim that the softmax keeps the bits it had.
    assert _cpu.exp_mismatches() == 0
