/* What the threads of one parallel region need to run several kernels in turn
   (the compiled step, the numerical trainer): a barrier that yields the core, and
   each thread's share of a range. Not a public header. */
#ifndef FASTMLP_FM_TEAM_H
#define FASTMLP_FM_TEAM_H

#include <stddef.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#include <sched.h>
#define FM_SPIN_BARRIER 1
#else
#define FM_SPIN_BARRIER 0
#endif

/* A barrier for the threads of one parallel region. It spins for FM_BARRIER_SPINS
   pause instructions (about 60 us on the 2-core Xeon of the README; a pause's
   length varies between CPUs), then yields the core at each look: when another
   program keeps the cores busy, a waiting thread must not burn the time slice its
   partner needs (OpenMP's own barrier, spinning far longer, made each sample of the
   numerical trainer 7 times slower with a second 2-thread process on 2 cores; in the
   compiled step, 500 spins gave the same times as 4,000, alone and beside a second
   training). Its writes and reads are ordered (release, acquire), so what a thread
   wrote before the barrier is seen by every thread after it. n is the team's size
   (fm_barrier_join); count and sense start at 0, and each thread keeps its own
   sense, starting at 0. */
#define FM_BARRIER_SPINS 4000

typedef struct {
    int n, count, sense;
} fm_barrier;

static inline void fm_barrier_wait(fm_barrier *b, int *sense)
{
#if FM_SPIN_BARRIER
    const int s = !*sense;
    *sense = s;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
        return;
    }
    for (long spins = 0; __atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s; spins++) {
        if (spins < FM_BARRIER_SPINS) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
#else
    (void)b;
    (void)sense;
#pragma omp barrier
#endif
}

/* Each thread of a team of nt calls this before it first waits at b. */
static inline void fm_barrier_join(fm_barrier *b, int nt)
{
    __atomic_store_n(&b->n, nt, __ATOMIC_RELAXED);
}

/* Thread t's share [*lo, *hi) of n items taken in units of `unit` (the last unit
   may be short): contiguous runs in thread order. */
static inline void fm_team_share(ptrdiff_t n, ptrdiff_t unit, int t, int team,
                                 ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t units = (n + unit - 1) / unit;
    ptrdiff_t a = units * t / team * unit, b = units * (t + 1) / team * unit;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

/* Seconds on a monotonic clock. */
static inline double fm_now(void)
{
#ifdef _OPENMP
    return omp_get_wtime();
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
#endif
}

#endif
