"""The machine's measured ceilings that ``fastmlp profile`` holds each kernel to
(:mod:`fastmlp.tools.profile`), and a kernel's roofline bound under them: on the CPU
the FMA peak of a register-only loop, the streaming bandwidth by footprint and the
rate of the optimizer's square roots and divisions."""

from __future__ import annotations

import math

import numpy as np

from .. import threads

#: Footprints (bytes read and written) at which the CPU's copy bandwidth is measured:
#: from the first-level cache out to main memory.
BANDWIDTH_FOOTPRINTS = tuple(2**k for k in range(15, 29, 2))  # 32 KiB .. 128 MiB


def cpu_ceilings(seconds=0.2) -> dict:
    """The CPU's measured ceilings at the thread count in use: the FMA peak of a
    register-only loop of independent float32 FMA chains at the best SIMD level
    (also at one thread), and the streaming bandwidth at each footprint of
    :data:`BANDWIDTH_FOOTPRINTS`: the best of a copy, a read-only stream and the
    optimizer's pattern (three arrays read, two of them written), each thread
    streaming its share in one parallel region. (Several streams at once move more
    than one copy does: on a 2-core Xeon, 1.6x at 8 MiB; holding the update to the
    copy's figure alone showed it at 127% of its ceiling.) And ``roots``: the
    billions of square roots and divisions per second of a register-only loop in
    the update's own instructions, at the thread count in use: RMSprop and Adam take
    one of each per parameter, and on a CPU whose divider is slower than its memory
    that, not the traffic, bounds the update (on a 2-core AMD EPYC its 407,050
    parameters took 81 us, held to 34 us by the bandwidth alone: 42%)."""
    from .. import _cpu

    level, team = _cpu.gemm_best_level(), threads.get_num_threads()

    def rate(loop, n_threads, iters):
        # The best of 20 runs, each longer until a run takes a quarter of `seconds`:
        # the loop's count per second, in billions.
        best = 0.0
        for _ in range(20):
            count, sec = loop(level, iters, n_threads)
            best = max(best, count / max(sec, 1e-9))
            if sec < seconds / 4:
                iters *= 2
        return best / 1e9

    def stream(src, dst, aux, reps):
        return max(nbytes / max(sec, 1e-9) for nbytes, sec in
                   (_cpu.stream_bandwidth(src, dst, aux, reps, team) for _ in range(3)))

    curve = []
    for footprint in BANDWIDTH_FOOTPRINTS:
        reps = max(1, (256 << 20) // footprint)
        # A copy (half read, half written), a read-only stream and the optimizer's
        # pattern over three arrays, each of the same footprint: a kernel that
        # reads more than it writes, or streams several arrays, can beat the copy.
        src = np.ones(footprint // 4, np.float32)
        half, third = src[:footprint // 8], src[:footprint // 12]
        best = max(stream(half, np.empty_like(half), None, reps),
                   stream(src, None, None, reps),
                   stream(third, np.ones_like(third), np.ones_like(third), reps))
        curve.append([footprint, best / 1e9])
    root_rate = rate(_cpu.root_peak, team, 1 << 14)
    return {"gflops": rate(_cpu.fma_peak, team, 1 << 16),
            "gflops_1thread": rate(_cpu.fma_peak, 1, 1 << 16), "gbs": curve[-1][1],
            "bandwidth": curve, "roots": root_rate,
            "how": f"float32 FMA chains in {level} registers, {team} thread(s); "
                   f"streaming bandwidth (the best of a copy, a read and the update's "
                   f"pattern) by footprint, {curve[0][1]:.0f} GB/s at "
                   f"{curve[0][0] >> 10} KiB to {curve[-1][1]:.0f} GB/s at "
                   f"{curve[-1][0] >> 20} MiB; {root_rate:.2f} G square roots and "
                   f"divisions per second in the update's instructions"}


def bandwidth_at(ceil, nbytes) -> float:
    """The streaming bandwidth (GB/s) at a footprint of ``nbytes`` (the ceiling of a
    kernel that moves that much): interpolated, in logarithms of both, between the
    two measured footprints around it, or the first or last measurement beyond
    them; one figure on the GPU. (Holding a kernel to the next larger footprint's
    figure, as before, put a 51 MB gather under the 128 MiB figure: 148% of it.)"""
    curve = ceil.get("bandwidth", ())
    if not curve:
        return ceil["gbs"]
    if nbytes <= curve[0][0]:
        return curve[0][1]
    for (f0, g0), (f1, g1) in zip(curve, curve[1:]):
        if nbytes <= f1:
            t = math.log(nbytes / f0) / math.log(f1 / f0)
            return math.exp((1 - t) * math.log(g0) + t * math.log(g1))
    return curve[-1][1]


def roofline_bound(ceil, flops, nbytes, gbs, roots=0) -> float:
    """A kernel's roofline bound in seconds: the longest of its flops at the FMA peak,
    its bytes at ``gbs`` (the bandwidth at its footprint) and, where the ceilings
    measured it (``roots``, the CPU's), its square roots and divisions at their rate."""
    bound = max(flops / (ceil["gflops"] * 1e9), nbytes / (gbs * 1e9))
    if roots and ceil.get("roots"):
        bound = max(bound, roots / (ceil["roots"] * 1e9))
    return bound
