/* The machine's fused multiply-add peak, measured: a loop of independent FMA
   chains that stay in registers (no memory traffic), run by every thread. */
#include "cpu_features.h"

#include "fm_clones.h"
#include "fm_ids.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FM_PEAK_X86 1
#include <immintrin.h>
/* Hides x's value from the optimizer, so the loop is not folded. */
#define FM_OPAQUE(x) __asm__ volatile("" : "+x"(x))
#else
#define FM_PEAK_X86 0
#define FM_OPAQUE(x) (void)0
#endif
#if defined(__GNUC__) || defined(__clang__)
#define FM_BARRIER() __asm__ volatile("" ::: "memory")
#else
#define FM_BARRIER() (void)0
#endif

/* 16 chains: enough independent FMAs to cover two FMA units' latency. Each
   iteration is 16 FMAs of `lanes` float lanes, 2 flops each. */
#define FM_PEAK_LOOP(NAME, VEC, SET1, FMA, ADD, REDUCE, ATTR)                          \
    ATTR static float NAME(long iters)                                                 \
    {                                                                                  \
        VEC acc[16], x = SET1(0.999f), y = SET1(1e-7f);                                \
        for (int c = 0; c < 16; c++)                                                   \
            acc[c] = SET1((float)c);                                                   \
        for (long i = 0; i < iters; i++) {                                             \
            _Pragma("GCC unroll 16") for (int c = 0; c < 16; c++)                      \
                acc[c] = FMA(acc[c], x, y);                                            \
            FM_OPAQUE(x);                                                              \
        }                                                                              \
        for (int c = 1; c < 16; c++)                                                   \
            acc[0] = ADD(acc[0], acc[c]);                                              \
        return REDUCE(acc[0]);                                                         \
    }

#if FM_PEAK_X86
__attribute__((target("avx2"))) static float fm_first8(__m256 v)
{
    return _mm256_cvtss_f32(v);
}
FM_PEAK_LOOP(fm_peak_avx2, __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps,
             fm_first8, __attribute__((target("avx2,fma"))))
__attribute__((target("avx512f"))) static float fm_first16(__m512 v)
{
    return _mm512_cvtss_f32(v);
}
FM_PEAK_LOOP(fm_peak_avx512, __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,
             fm_first16, __attribute__((target("avx512f"))))
#endif

static float fm_set1_scalar(float v) { return v; }
static float fm_fma_scalar(float a, float b, float c) { return a * b + c; }
static float fm_add_scalar(float a, float b) { return a + b; }
#define fm_id_scalar(v) (v)
FM_PEAK_LOOP(fm_peak_scalar, float, fm_set1_scalar, fm_fma_scalar, fm_add_scalar,
             fm_id_scalar, )

/* The optimizer's costliest arithmetic: 8 independent chains of x = 1 / (sqrt(x) +
   eps), one square root and one division per lane and iteration, as RMSprop and
   Adam take per parameter. The values stay near 1. */
#define FM_ROOT_LOOP(NAME, VEC, SET1, SQRT, ADD, DIV, REDUCE, ATTR)                      \
    ATTR static float NAME(long iters)                                                 \
    {                                                                                  \
        VEC x[8], one = SET1(1.0f), eps = SET1(1e-7f);                                 \
        for (int c = 0; c < 8; c++)                                                    \
            x[c] = SET1(1.0f + 0.01f * (float)c);                                      \
        for (long i = 0; i < iters; i++) {                                             \
            _Pragma("GCC unroll 8") for (int c = 0; c < 8; c++)                        \
                x[c] = DIV(one, ADD(SQRT(x[c]), eps));                                 \
            FM_OPAQUE(eps);                                                            \
        }                                                                              \
        for (int c = 1; c < 8; c++)                                                    \
            x[0] = ADD(x[0], x[c]);                                                    \
        return REDUCE(x[0]);                                                           \
    }

#if FM_PEAK_X86
FM_ROOT_LOOP(fm_roots_avx2, __m256, _mm256_set1_ps, _mm256_sqrt_ps, _mm256_add_ps,
             _mm256_div_ps, fm_first8, __attribute__((target("avx2"))))
#endif
static float fm_sqrt_scalar(float v) { return sqrtf(v); }
static float fm_div_scalar(float a, float b) { return a / b; }
FM_ROOT_LOOP(fm_roots_scalar, float, fm_set1_scalar, fm_sqrt_scalar, fm_add_scalar,
             fm_div_scalar, fm_id_scalar, )

static double fm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Where the loops' results go, so that the compiler keeps them. */
static volatile float fm_peak_sink;

/* `threads` threads each run loop(iters) in one parallel region; returns the team's
   size and sets *seconds to the wall time. */
static int fm_run_team(float (*loop)(long), long iters, int threads, double *seconds)
{
    float sink = 0;
    int team = 1;
    double t0 = fm_now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : sink)
#endif
    {
#ifdef _OPENMP
#pragma omp single
        team = omp_get_num_threads();
#endif
        sink += loop(iters);
    }
    (void)threads;
    fm_peak_sink = sink;
    *seconds = fm_now() - t0;
    return team;
}

double fm_fma_peak(int level, long iters, int threads, double *seconds)
{
    float (*loop)(long) = fm_peak_scalar;
    int lanes = 1;
#if FM_PEAK_X86
    if (level == FM_LEVEL_AVX512)
        loop = fm_peak_avx512, lanes = 16;
    else if (level == FM_LEVEL_AVX2)
        loop = fm_peak_avx2, lanes = 8;
#endif
    int team = fm_run_team(loop, iters, threads, seconds);
    return 2.0 * 16.0 * (double)lanes * (double)iters * (double)team;
}

double fm_root_peak(int level, long iters, int threads, double *seconds)
{
    float (*loop)(long) = fm_roots_scalar;
    int lanes = 1;
    /* update.c's loops run in AVX2 at every level from AVX2 up. */
#if FM_PEAK_X86
    if (level >= FM_LEVEL_AVX2)
        loop = fm_roots_avx2, lanes = 8;
#endif
    int team = fm_run_team(loop, iters, threads, seconds);
    return 8.0 * (double)lanes * (double)iters * (double)team;
}

/* Where the streaming loop's xor goes. */
static volatile uint32_t fm_stream_sink;

/* The optimizer's pattern of access, without its arithmetic: three arrays read,
   two of them written (parameters, gradient and state in; state and new
   parameters out), element by element. Several streams at once reach more of the
   caches' bandwidth than one copy does. (The values stay finite: b tends to 2a,
   c grows by about 2a a pass.) */
FM_CLONE_BODY fm_stream3_body(const float *restrict a, float *restrict b,
                              float *restrict c, long n)
{
    for (long i = 0; i < n; i++) {
        float u = a[i] + 0.5f * b[i];
        b[i] = u;
        c[i] = c[i] + u;
    }
}

FM_LEVEL_CLONES(fm_stream3, (const float *restrict a, float *restrict b, float *restrict c,
                             long n), (a, b, c, n))

/* Streaming bandwidth: `threads` threads, in one parallel region, each stream their
   share of src (n floats) `reps` times: copied into dst (dst NULL: only read, an
   xor of its words), or with aux, src, dst and aux read and dst and aux written
   (fm_stream3); returns the bytes read and written and sets *seconds. One region
   for all the repetitions, so that at a first-level-cache footprint the figure is
   the cache's, not the cost of starting threads. */
double fm_stream_bandwidth(const float *src, float *dst, float *aux, long n, int reps,
                           int threads, double *seconds)
{
    uint32_t sink = 0;
    double t0 = fm_now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(^ : sink)
#endif
    {
        int t = 0, team = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        team = omp_get_num_threads();
#endif
        long lo = n * t / team, hi = n * (t + 1) / team;
        for (int r = 0; r < reps; r++) {
            if (aux != NULL) {
                fm_stream3(src + lo, dst + lo, aux + lo, hi - lo);
            } else if (dst != NULL) {
                memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
            } else {
                const uint32_t *w = (const uint32_t *)(const void *)(src + lo);
                uint32_t x = 0;
                for (long i = 0; i < hi - lo; i++)
                    x ^= w[i];
                sink ^= x;
            }
            FM_BARRIER();
        }
    }
    (void)threads;
    fm_stream_sink = sink;
    *seconds = fm_now() - t0;
    return (aux != NULL ? 5.0 : dst != NULL ? 2.0 : 1.0) * (double)n * sizeof(float) * reps;
}
