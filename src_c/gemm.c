/* Matrix products for the cpu backend: packing, blocking, threads and the
   microkernels; the type-generic driver is in gemm_impl.h. See gemm.h. */
#include "gemm.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_clones.h"
#include "fm_math.h"
#include "fm_team.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FM_X86_SIMD 1
#else
#define FM_X86_SIMD 0
#endif

/* Largest register tile of any microkernel, for the edge-tile buffer. */
#define FM_MAX_MR 8
#define FM_MAX_NR 32

/* Columns of a thin product (see FM_THIN_UKR): every level's thin kernel has
   this many lanes. */
#define FM_THIN_LANES 16
/* Columns of a thin weight gradient (see FM_THIN_T_UKR): an output layer of 10. */
#define FM_THIN_T_ROWS 10
/* The rows of A a thin weight-gradient kernel fetches ahead. */
#define FM_THIN_T_AHEAD 8

/* How a float product runs: in float, or on bfloat16 operands (see the section on
   bfloat16 products further down). */
enum { FM_BF16_NONE = 0, FM_BF16_EMULATED = 1, FM_BF16_HARDWARE = 2, FM_BF16_NATIVE = 3 };

/* Cache blocking: KC values of K per packed panel (about L1 with one B
   micro-panel, L2 with the A block), MC rows per packed A block, NC columns per
   packed B block. KC alone fixes the summation order. */
#define FM_KC 256
#define FM_MC 144
#define FM_NC 1024
/* Blocks of packed B up to this size have their tiles taken a strip of rows at a
   time (gemm_impl.h): it fits in the first-level cache beside A's panel. */
#define FM_STRIP_B_BYTES (24 << 10)

/* Below this many multiply-adds a product runs on one thread. */
#define FM_PARALLEL_MIN_MACS (1 << 17)

/* The paths of a planned product (fm_gemm_plan's path): nothing to do (an empty
   C), C zero (K = 0), the thin kernel, the thin weight-gradient kernel, or the
   packed microkernels. */
enum { FM_PATH_NONE, FM_PATH_ZERO, FM_PATH_THIN, FM_PATH_THIN_T, FM_PATH_GENERAL };

static int fm_level = -1;

int fm_gemm_best_level(void)
{
#if FM_X86_SIMD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return FM_LEVEL_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FM_LEVEL_AVX2;
#endif
    return FM_LEVEL_SCALAR;
}

int fm_gemm_level(void)
{
    if (fm_level < 0)
        fm_level = fm_gemm_best_level();
    return fm_level;
}

void fm_gemm_set_level(int level)
{
    fm_level = level;
}

/* A per-thread scratch buffer, grown when needed and kept between calls so a
   training step allocates nothing. OpenMP threads are reused, so it persists. */
static _Thread_local void *fm_scratch_buf;
static _Thread_local size_t fm_scratch_cap;

static void *fm_scratch(size_t bytes)
{
    if (bytes > fm_scratch_cap) {
        void *p = NULL;
        free(fm_scratch_buf);
        fm_scratch_buf = NULL;
        fm_scratch_cap = 0;
        if (posix_memalign(&p, 64, bytes) != 0)
            return NULL;
        fm_scratch_buf = p;
        fm_scratch_cap = bytes;
    }
    return fm_scratch_buf;
}

/* Whether a product may pack B for all of K first (see fm_gemm_part); a switch
   for the tests and benchmarks. */
static int fm_all_k_on = 1;

void fm_gemm_set_all_k(int on)
{
    fm_all_k_on = on;
}

/* A thread's scratch holds blocks of mcb x kcb (A), kcb x ncb (B; or K x ncb, all of
   K packed first, where that fits in the reserve: see fm_gemm_part) and, where a
   block of C is kept there, mcb x ncb: the A block, then C's and B's, the next
   starting at a multiple of 64 elements. The elements a rows x cols block takes
   there: */
static size_t fm_scratch_block(ptrdiff_t rows, ptrdiff_t cols)
{
    return ((size_t)rows * cols + 63) / 64 * 64;
}

/* The elements of scratch that fm_gemm_reserve holds for each thread: the most a
   thread's share of the general path asks for (its blocks are at most FM_MC x FM_KC
   and FM_KC x FM_NC: fm_balanced keeps them within these multiples of every MR and
   NR). The thin kernels take their paths only where they need no more. */
static size_t fm_scratch_reserved(void)
{
    return fm_scratch_block(FM_MC, FM_KC) + fm_scratch_block(FM_MC, FM_NC) +
           (size_t)FM_KC * FM_NC;
}

int fm_gemm_reserve(size_t elem)
{
    /* Done again only for more threads or a wider type on this thread's team. */
    static _Thread_local int done_threads;
    static _Thread_local size_t done_elem;
    size_t bytes = fm_scratch_reserved() * elem;
    int team = 1, failed = 0;
#ifdef _OPENMP
    team = omp_get_max_threads();
#endif
    if (team <= done_threads && elem <= done_elem)
        return 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) reduction(| : failed)
#endif
    failed |= fm_scratch(bytes) == NULL;
    if (failed)
        return -1;
    done_threads = team;
    done_elem = elem;
    return 0;
}

/* Block size for `total` items, at most `maxb`, a multiple of `mult`, and with
   the blocks as equal as possible (no thin last block). */
static ptrdiff_t fm_balanced(ptrdiff_t total, ptrdiff_t maxb, ptrdiff_t mult)
{
    ptrdiff_t nb, b;
    if (total <= 0)
        return mult;
    nb = (total + maxb - 1) / maxb;
    b = (total + nb - 1) / nb;
    return (b + mult - 1) / mult * mult;
}

/* The elements of scratch a thin weight gradient (gemm_impl.h's fm_gemm_thin_t)
   takes for an M x 10 result of depth K, in runs of w rows: a buffer for each run's
   sums (enough for all of them, whichever thread's), B's rows, and an edge run. */
static size_t fm_thin_t_elems(ptrdiff_t M, ptrdiff_t K, int w)
{
    size_t runs = (size_t)((M + w - 1) / w);
    return (runs * w + (size_t)K) * FM_THIN_T_ROWS + (size_t)fm_balanced(K, FM_KC, 4) * w;
}

/* The fraction of a microkernel's lanes left idle over n items in tiles of t. */
static double fm_lane_waste(ptrdiff_t n, int t)
{
    ptrdiff_t tiles = (n + t - 1) / t;
    return 1.0 - (double)n / (double)(tiles * t);
}

static int fm_threads_for(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K)
{
#ifdef _OPENMP
    if ((double)M * (double)N * (double)K < FM_PARALLEL_MIN_MACS)
        return 1;
    return omp_get_max_threads();
#else
    (void)M; (void)N; (void)K;
    return 1;
#endif
}

/* ------------------------------------------------------ the threads' shares

   The threads split a product's tiles in contiguous runs. On a shared machine the
   cores do not run at one speed (another program or virtual machine may be using
   one of them), and equal runs leave the faster threads waiting at the end of
   every product. So each calling thread keeps, for the last shapes it multiplied,
   the share of the tiles that each thread of its team gets, and after each product
   moves it half-way to the shares that would have made that product's threads
   finish together. Which thread computes a tile changes none of its bits. */
#define FM_SHARE_SLOTS 61

typedef struct {
    ptrdiff_t M, N, K;
    int key, team;
    double w[FM_SHARE_TEAM];
} fm_share;

static _Thread_local fm_share fm_shares[FM_SHARE_SLOTS];
/* Shares fixed by fm_gemm_set_shares (for the tests), for teams of fm_fixed_team. */
static double fm_fixed_w[FM_SHARE_TEAM];
static int fm_fixed_team;

void fm_gemm_set_shares(const double *w, int team)
{
    fm_fixed_team = team >= 2 && team <= FM_SHARE_TEAM ? team : 0;
    for (int t = 0; t < fm_fixed_team; t++)
        fm_fixed_w[t] = w[t];
}

/* Whether slot s holds the shares of this shape and kind (key) on a team of `team`. */
static int fm_share_is(const fm_share *s, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, int key,
                       int team)
{
    return s->team == team && s->M == M && s->N == N && s->K == K && s->key == key;
}

/* The shares for a product of this shape and kind (key) on a team of `team`, or
   NULL where the tiles are split evenly. */
static const double *fm_share_weights(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, int key,
                                      int team, fm_share **slot)
{
    uint64_t h;
    fm_share *s;
    *slot = NULL;
    if (team < 2 || team > FM_SHARE_TEAM)
        return NULL;
    if (fm_fixed_team)
        return fm_fixed_team == team ? fm_fixed_w : NULL;
    h = ((uint64_t)M * 0x9E3779B97F4A7C15u) ^ ((uint64_t)N * 0xC2B2AE3D27D4EB4Fu) ^
        ((uint64_t)K * 0x165667B19E3779F9u) ^ (uint64_t)key;
    s = &fm_shares[(h ^ h >> 29) % FM_SHARE_SLOTS];
    if (!fm_share_is(s, M, N, K, key, team)) {
        s->M = M, s->N = N, s->K = K, s->key = key, s->team = team;
        for (int t = 0; t < team; t++)
            s->w[t] = 1.0 / team;
    }
    *slot = s;
    return s->w;
}

/* Where each thread's run of the tiles starts, by the shares w (start[team] =
   tiles): rounded cumulative shares, so the runs are contiguous and in order. */
static void fm_share_starts(const double *w, int team, ptrdiff_t tiles, ptrdiff_t *start)
{
    double c = 0;
    for (int t = 0; t < team; t++) {
        ptrdiff_t b = (ptrdiff_t)(c * (double)tiles + 0.5);
        start[t] = b < 0 ? 0 : b > tiles ? tiles : b;
        c += w[t];
    }
    start[team] = tiles;
}

/* After a product: each thread's speed (tiles per second from its own start to its
   end) gives the shares that would have made their times equal; the slot's shares
   move half-way there, no thread's below a quarter of an even share. */
static void fm_share_update(fm_share *s, const ptrdiff_t *start, const double *spent)
{
    double v[FM_SHARE_TEAM], sum = 0, total = 0;
    int team = s->team;
    for (int t = 0; t < team; t++) {
        ptrdiff_t x = start[t + 1] - start[t];
        if (x <= 0 || !(spent[t] > 0))
            return;
        v[t] = (double)x / spent[t];
        sum += v[t];
    }
    for (int t = 0; t < team; t++) {
        double w = s->w[t] + 0.5 * (v[t] / sum - s->w[t]);
        s->w[t] = w < 0.25 / team ? 0.25 / team : w;
        total += s->w[t];
    }
    for (int t = 0; t < team; t++)
        s->w[t] /= total;
}

/* ---------------------------------------------------------------- microkernels
   ukr(kc, a, ai, ak, b, c, ldc, accumulate): the MR x NR tile at c (leading
   dimension ldc) is set to, or with `accumulate` increased by, the product of A's
   MR x kc panel, element (i, k) at a[i * ai + k * ak], and the packed panel b
   (kc x NR, k-major), k ascending. A's panel is packed (ai = 1, ak = MR) or read
   where it lies (gemm_impl.h's fm_gemm_part): the same values in the same order,
   so the same bits. Where A's rows lie apart (fm_gemm_a_rows), ai is one of two
   marks, `a` an array of row pointers and ak an offset: with FM_A_ROWS, element
   (i, k) is at rows[i][ak + k] (op(A)'s own rows, a forward product's batch);
   with FM_A_KROWS, at rows[k][ak + i] (a transposed A, a weight gradient's
   batch, a row per k). */
#define FM_A_ROWS (-1)
#define FM_A_KROWS (-2)

/* Every level accumulates with a fused multiply-add, acc = fma(a, b, acc), k
   ascending, so that each level gives the same bits: the SIMD kernels through
   their FMA instructions, the portable one through C99 fma(), which is one
   instruction where the CPU has FMA (and exact, though slow, in software where it
   has not). The extension is compiled with -ffp-contract=off, so no other
   product and sum is fused behind the code's back. */

/* Portable C, no intrinsics: a 4 x 4 tile of scalars; NAME##_rows for an A whose
   rows lie apart. */
#define FM_SCALAR_UKR(NAME, T, FMA)                                                    \
    static void NAME(ptrdiff_t kc, const T *restrict a, ptrdiff_t ai, ptrdiff_t ak,    \
                     const T *restrict b, T *restrict c, ptrdiff_t ldc, int accumulate) \
    {                                                                                  \
        T acc[4][4] = {{0}};                                                           \
        for (ptrdiff_t k = 0; k < kc; k++, a += ak, b += 4)                            \
            for (int i = 0; i < 4; i++)                                                \
                for (int j = 0; j < 4; j++)                                            \
                    acc[i][j] = FMA(a[i * ai], b[j], acc[i][j]);                       \
        FM_SCALAR_TAIL                                                                 \
    }                                                                                  \
    static void NAME##_rows(ptrdiff_t kc, const T *restrict a, ptrdiff_t ai,           \
                            ptrdiff_t ak, const T *restrict b, T *restrict c,          \
                            ptrdiff_t ldc, int accumulate)                             \
    {                                                                                  \
        const T *const *rows = (const T *const *)(const void *)a;                      \
        T acc[4][4] = {{0}};                                                           \
        for (ptrdiff_t k = 0; k < kc; k++, b += 4)                                     \
            for (int i = 0; i < 4; i++) {                                              \
                T av = ai == FM_A_ROWS ? rows[i][ak + k] : rows[k][ak + i];            \
                for (int j = 0; j < 4; j++)                                            \
                    acc[i][j] = FMA(av, b[j], acc[i][j]);                              \
            }                                                                          \
        FM_SCALAR_TAIL                                                                 \
    }
#define FM_SCALAR_TAIL                                                                 \
    for (int i = 0; i < 4; i++)                                                        \
        for (int j = 0; j < 4; j++)                                                    \
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];

FM_SCALAR_UKR(fm_ukr_scalar_s, float, fmaf)
FM_SCALAR_UKR(fm_ukr_scalar_d, double, fma)

#if FM_X86_SIMD
#include <immintrin.h>

/* SIMD microkernels in vector extensions: NV vectors of VW lanes per row and MR
   rows of accumulators stay in registers; the target attribute picks the
   instruction set, so the file builds without -mavx2 and each kernel runs only
   where the CPU has it. VFMA is the instruction set's fused multiply-add and SET1
   its broadcast (a scalar added to a zero vector would be one more addition).
   The loop over k: A_AT is A's element (i, k), A_STEP moves A on after each k. */
#define FM_VEC_KLOOP(MR, NV, VW, VFMA, SET1, A_AT, A_STEP)                             \
    _Pragma("GCC unroll 4") for (ptrdiff_t k = 0; k < kc; k++) {                       \
        vec bv[NV];                                                                    \
        _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                         \
            bv[v] = *(const vec *)(b + v * (VW));                                      \
        _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++) {                      \
            vec av = (vec)SET1(A_AT);                                                  \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                     \
                acc[i][v] = (vec)VFMA(av, bv[v], acc[i][v]);                           \
        }                                                                              \
        A_STEP;                                                                        \
        b += (NV) * (VW);                                                              \
    }

/* The kernel's start (its vector types, the accumulators set to zero, the tile of
   C fetched: it is read or written after the loop) and its end (the tile written,
   or increased by the sums). */
#define FM_VEC_UKR_HEAD(T, VW, MR, NV)                                                 \
    typedef T vec __attribute__((vector_size((VW) * sizeof(T))));                      \
    typedef T uvec __attribute__((vector_size((VW) * sizeof(T)), aligned(sizeof(T)),   \
                                  may_alias));                                         \
    vec acc[MR][NV];                                                                   \
    _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++) {                          \
        __builtin_prefetch(c + i * ldc, 1, 3);                                         \
        __builtin_prefetch(c + i * ldc + (NV) * (VW) - 1, 1, 3);                       \
    }                                                                                  \
    _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++)                            \
        _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                         \
            acc[i][v] = (vec){0};
#define FM_VEC_UKR_TAIL(MR, NV, VW)                                                    \
    _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++)                            \
        _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++) {                       \
            uvec *cp = (uvec *)(c + i * ldc + v * (VW));                               \
            if (accumulate)                                                            \
                *cp += (uvec)acc[i][v];                                                \
            else                                                                       \
                *cp = (uvec)acc[i][v];                                                 \
        }

/* NAME, and NAME##_rows for an A whose rows lie apart (ai is FM_A_ROWS or
   FM_A_KROWS): a kernel of its own, so that the common one keeps its registers.
   The loop is unrolled by 4 along k (the same sums, in the same order), so that
   its own instructions run once per 4 steps: the float products took 5-8% less
   time at AVX-512, the other kernels 6-19% less. */
#define FM_VEC_UKR(NAME, T, VW, MR, NV, TARGET, VFMA, SET1)                            \
    __attribute__((target(TARGET))) static void NAME(                                  \
        ptrdiff_t kc, const T *restrict a, ptrdiff_t ai, ptrdiff_t ak,                 \
        const T *restrict b, T *restrict c, ptrdiff_t ldc, int accumulate)             \
    {                                                                                  \
        FM_VEC_UKR_HEAD(T, VW, MR, NV)                                                 \
        FM_VEC_KLOOP(MR, NV, VW, VFMA, SET1, a[i * ai], a += ak);                      \
        FM_VEC_UKR_TAIL(MR, NV, VW)                                                    \
    }                                                                                  \
    __attribute__((target(TARGET))) static void NAME##_rows(                           \
        ptrdiff_t kc, const T *restrict a, ptrdiff_t ai, ptrdiff_t ak,                 \
        const T *restrict b, T *restrict c, ptrdiff_t ldc, int accumulate)             \
    {                                                                                  \
        const T *const *rows = (const T *const *)(const void *)a;                      \
        FM_VEC_UKR_HEAD(T, VW, MR, NV)                                                 \
        if (ai == FM_A_ROWS) {                                                         \
            const T *r[MR];                                                            \
            _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++)                    \
                r[i] = rows[i] + ak;                                                   \
            FM_VEC_KLOOP(MR, NV, VW, VFMA, SET1, r[i][k], (void)0);                    \
        } else {                                                                       \
            FM_VEC_KLOOP(MR, NV, VW, VFMA, SET1, rows[k][ak + i], (void)0);            \
        }                                                                              \
        FM_VEC_UKR_TAIL(MR, NV, VW)                                                    \
    }

FM_VEC_UKR(fm_ukr_avx2_s, float, 8, 6, 2, "avx2,fma", _mm256_fmadd_ps, _mm256_set1_ps)
FM_VEC_UKR(fm_ukr_avx2_d, double, 4, 6, 2, "avx2,fma", _mm256_fmadd_pd, _mm256_set1_pd)
FM_VEC_UKR(fm_ukr_avx512_s, float, 16, 8, 2, "avx512f", _mm512_fmadd_ps, _mm512_set1_ps)
FM_VEC_UKR(fm_ukr_avx512_d, double, 8, 8, 2, "avx512f", _mm512_fmadd_pd, _mm512_set1_pd)

/* Whether the general path reads A's panels where they lie instead of packing them
   (gemm_impl.h's fm_gemm_part), for an op(A) of depth K whose rows (ta = 0) or
   columns (ta = 1) are lda elements of `size` bytes apart. Measured on the 2-core
   Xeon (Emerald Rapids), float and double, AVX-512 and AVX2, against packing:
   - a row-major A (a forward product's batch) is read a run of k values per row
     of the panel: 0.90-0.98x the time at every shape tried, so always;
   - a transposed A (a weight gradient's batch) gives each k step a row of A of its
     own: 0.88-0.96x while A fits well within the second-level cache (100-640 KiB
     of float), but 1.02-1.08x at 1-1.5 MiB, 1.18-1.94x at 2-3 MiB with rows of
     8-12 KiB, and 1.16x for double at 25 MiB.
   The keras recipe's fit (784-512-10, batch 128, 2 threads) took 0.95-0.98x the
   time with both. The bits are the same either way. */
#define FM_A_IN_PLACE_BYTES (768 << 10)
static int fm_a_in_place_mode; /* fm_gemm_set_a_in_place's */

void fm_gemm_set_a_in_place(int mode)
{
    fm_a_in_place_mode = mode == 1 || mode == 2 ? mode : 0;
}

static int fm_a_in_place(int ta, ptrdiff_t K, ptrdiff_t lda, size_t size)
{
    if (fm_a_in_place_mode != 0)
        return fm_a_in_place_mode == 2;
    return !ta || (size_t)K * (size_t)lda * size <= FM_A_IN_PLACE_BYTES;
}

/* A shallow product's strip kernel (fm_shallow_relu_s) writes C past the caches,
   with non-temporal stores, where C is larger than this: its lines are then not
   read from memory before they are written over, and C would not stay in cache for
   the next product anyway. Measured on the 2-core AMD EPYC (32 MiB of third-level
   cache), the input gradient 10 -> 512 alone, 2 threads: 0.60x the time at batch
   8192 (C 16 MiB) and about 0.75x at 6144, but 1.1-1.4x at 1024 to 4096 (C up to
   8 MiB), whose C the next call finds in cache. */
#define FM_STREAM_C_BYTES (8 << 20)
static int fm_stream_mode; /* fm_gemm_set_stream's */

void fm_gemm_set_stream(int mode)
{
    fm_stream_mode = mode == 1 || mode == 2 ? mode : 0;
}

static int fm_stream_c(ptrdiff_t M, ptrdiff_t N, size_t size)
{
    if (fm_stream_mode != 0)
        return fm_stream_mode == 2;
    return (size_t)M * (size_t)N * size > FM_STREAM_C_BYTES;
}

/* Thin products, at most FM_THIN_LANES columns (an output layer of 10 classes): a
   32-wide microkernel would leave most of its lanes idle, and the product
   computed as its transpose needs its wide operand transposed while packing.
   These keep R rows of C in registers, NV vectors of VW lanes each, and read a
   row-major A where it lies (each row along k, one broadcast at a time); bp
   holds kc rows of op(B), each zero-padded to NV * VW lanes. Each element of C
   is summed as the microkernels sum it (acc = fma(a, b, acc), k ascending from
   zero, then added to C or stored), so the bits are the same. Rows past `rows`
   repeat the last one and are not stored. With FETCH, each of A's R rows is
   fetched FM_THIN_AHEAD bytes ahead, a cache line at a time: R short rows at once
   are more streams than the hardware follows well. Measured on the 512x10 forward
   at batch 128 to 8192, that took 0.80-0.95x the time for float at AVX-512, but
   0.99-1.04x for double and 1.01-1.10x for float at AVX2, which go without. */
#define FM_THIN_AHEAD 256
#define FM_THIN_UKR(NAME, T, VW, NV, R, TARGET, VFMA, SET1, FETCH)                     \
    __attribute__((target(TARGET))) static void NAME(                                  \
        ptrdiff_t rows, ptrdiff_t kc, const T *a, ptrdiff_t lda, const T *restrict bp, \
        T *restrict c, ptrdiff_t ldc, ptrdiff_t n, int accumulate)                     \
    {                                                                                  \
        typedef T vec __attribute__((vector_size((VW) * sizeof(T))));                  \
        vec acc[R][NV];                                                                \
        const T *ar[R];                                                                \
        _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++) {                       \
            ar[r] = a + (r < rows ? r : rows - 1) * lda;                               \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                     \
                acc[r][v] = (vec){0};                                                  \
        }                                                                              \
        _Pragma("GCC unroll 4") /* as in FM_VEC_UKR */                                 \
        for (ptrdiff_t k = 0; k < kc; k++, bp += (NV) * (VW)) {                        \
            vec bv[NV];                                                                \
            if ((FETCH) && (k & (64 / sizeof(T) - 1)) == 0)                             \
                _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++)                 \
                    __builtin_prefetch(ar[r] + k + FM_THIN_AHEAD / sizeof(T), 0, 3);    \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                     \
                bv[v] = *(const vec *)(bp + v * (VW));                                 \
            _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++) {                   \
                vec ai = (vec)SET1(ar[r][k]);                                          \
                _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                 \
                    acc[r][v] = (vec)VFMA(ai, bv[v], acc[r][v]);                       \
            }                                                                          \
        }                                                                              \
        for (int r = 0; r < (R) && r < rows; r++) {                                    \
            T t[(NV) * (VW)] __attribute__((aligned(64)));                             \
            T *cr = c + r * ldc;                                                       \
            memcpy(t, acc[r], sizeof(t));                                              \
            for (ptrdiff_t j = 0; j < n; j++)                                          \
                cr[j] = accumulate ? cr[j] + t[j] : t[j];                              \
        }                                                                              \
    }

FM_THIN_UKR(fm_thin_avx2_s, float, 8, 2, 6, "avx2,fma", _mm256_fmadd_ps, _mm256_set1_ps, 0)
FM_THIN_UKR(fm_thin_avx2_d, double, 4, 4, 3, "avx2,fma", _mm256_fmadd_pd, _mm256_set1_pd, 0)
FM_THIN_UKR(fm_thin_avx512_s, float, 16, 1, 8, "avx512f", _mm512_fmadd_ps, _mm512_set1_ps,
            1)
FM_THIN_UKR(fm_thin_avx512_d, double, 8, 2, 8, "avx512f", _mm512_fmadd_pd, _mm512_set1_pd,
            0)

/* The weight gradient of a thin layer, C = A^T B with at most FM_THIN_T_ROWS columns
   (10 classes): C's transpose, one row per class, summed over NV vectors of VW of
   C's rows at a time, reading A's rows (k) where they lie, each a run of NV * VW
   values (for the general path, A^T, transposed, would be packed: as large as the
   layer's activations, for a few multiply-adds per value). bp holds kc rows of B,
   each zero-padded to FM_THIN_T_ROWS. t (FM_THIN_T_ROWS x NV * VW, aligned) is set
   to, or with `accumulate` increased by, the block's sums: each element summed as
   the microkernels sum it (acc = fma(a, b, acc), k ascending from zero). */
#define FM_THIN_T_UKR(NAME, T, VW, NV, TARGET, VFMA, SET1)                             \
    __attribute__((target(TARGET))) static void NAME(ptrdiff_t kc, const T *a,        \
                                                     ptrdiff_t lda, const T *restrict bp, \
                                                     T *restrict t, int accumulate)   \
    {                                                                                  \
        typedef T vec __attribute__((vector_size((VW) * sizeof(T))));                  \
        typedef T uvec __attribute__((vector_size((VW) * sizeof(T)),                   \
                                      aligned(sizeof(T)), may_alias));                 \
        vec acc[FM_THIN_T_ROWS][NV];                                                   \
        _Pragma("GCC unroll 16") for (int j = 0; j < FM_THIN_T_ROWS; j++)              \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                     \
                acc[j][v] = (vec){0};                                                  \
        _Pragma("GCC unroll 4") /* as in FM_VEC_UKR */                                 \
        for (ptrdiff_t k = 0; k < kc; k++, a += lda, bp += FM_THIN_T_ROWS) {           \
            vec av[NV];                                                                \
            /* A's rows lie a row of the layer apart (2 KiB for 512 units), where \
               the hardware's prefetchers fall behind: 0.84x the time at batch    \
               8192, 0.77x at 1024. */                                           \
            __builtin_prefetch(a + FM_THIN_T_AHEAD * lda);                             \
            __builtin_prefetch(a + FM_THIN_T_AHEAD * lda + (NV) * (VW) - 1);           \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                     \
                av[v] = (vec)*(const uvec *)(a + v * (VW));                            \
            _Pragma("GCC unroll 16") for (int j = 0; j < FM_THIN_T_ROWS; j++) {        \
                vec bj = (vec)SET1(bp[j]);                                             \
                _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                 \
                    acc[j][v] = (vec)VFMA(bj, av[v], acc[j][v]);                       \
            }                                                                          \
        }                                                                              \
        _Pragma("GCC unroll 16") for (int j = 0; j < FM_THIN_T_ROWS; j++)              \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++) {                   \
                vec *tp = (vec *)(t + (j * (NV) + v) * (VW));                          \
                *tp = accumulate ? *tp + acc[j][v] : acc[j][v];                        \
            }                                                                          \
    }

FM_THIN_T_UKR(fm_thin_t_avx2_s, float, 8, 1, "avx2,fma", _mm256_fmadd_ps, _mm256_set1_ps)
FM_THIN_T_UKR(fm_thin_t_avx2_d, double, 4, 1, "avx2,fma", _mm256_fmadd_pd, _mm256_set1_pd)
FM_THIN_T_UKR(fm_thin_t_avx512_s, float, 16, 2, "avx512f", _mm512_fmadd_ps, _mm512_set1_ps)
FM_THIN_T_UKR(fm_thin_t_avx512_d, double, 8, 2, "avx512f", _mm512_fmadd_pd, _mm512_set1_pd)
#endif

typedef void (*fm_ukr_s)(ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, const float *,
                         float *, ptrdiff_t, int);
typedef void (*fm_ukr_d)(ptrdiff_t, const double *, ptrdiff_t, ptrdiff_t, const double *,
                         double *, ptrdiff_t, int);

typedef void (*fm_thin_s)(ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, const float *,
                          float *, ptrdiff_t, ptrdiff_t, int);
typedef void (*fm_thin_d)(ptrdiff_t, ptrdiff_t, const double *, ptrdiff_t, const double *,
                          double *, ptrdiff_t, ptrdiff_t, int);
typedef void (*fm_thin_t_s)(ptrdiff_t, const float *, ptrdiff_t, const float *, float *,
                            int);
typedef void (*fm_thin_t_d)(ptrdiff_t, const double *, ptrdiff_t, const double *, double *,
                            int);

/* A level's microkernel (mr x nr), thin kernel (thin_r rows of FM_THIN_LANES
   columns) and thin weight-gradient kernel (thin_t_w of C's rows at a time); NULL
   where the level has none. */
typedef struct {
    int mr, nr;
    fm_ukr_s ukr;
    fm_thin_s thin;
    int thin_r;
    fm_thin_t_s thin_t;
    int thin_t_w;
    fm_ukr_s ukr_rows;
} fm_kernel_s;
typedef struct {
    int mr, nr;
    fm_ukr_d ukr;
    fm_thin_d thin;
    int thin_r;
    fm_thin_t_d thin_t;
    int thin_t_w;
    fm_ukr_d ukr_rows;
} fm_kernel_d;

static fm_kernel_s fm_kernel_for_s(int level)
{
    fm_kernel_s k = {4, 4, fm_ukr_scalar_s, NULL, 0, NULL, 0, fm_ukr_scalar_s_rows};
#if FM_X86_SIMD
    if (level == FM_LEVEL_AVX2)
        k = (fm_kernel_s){6,  16, fm_ukr_avx2_s, fm_thin_avx2_s, 6, fm_thin_t_avx2_s, 8,
                          fm_ukr_avx2_s_rows};
    if (level == FM_LEVEL_AVX512)
        k = (fm_kernel_s){8, 32, fm_ukr_avx512_s, fm_thin_avx512_s, 8, fm_thin_t_avx512_s,
                          32, fm_ukr_avx512_s_rows};
#else
    (void)level;
#endif
    return k;
}

static fm_kernel_d fm_kernel_for_d(int level)
{
    fm_kernel_d k = {4, 4, fm_ukr_scalar_d, NULL, 0, NULL, 0, fm_ukr_scalar_d_rows};
#if FM_X86_SIMD
    if (level == FM_LEVEL_AVX2)
        k = (fm_kernel_d){6, 8, fm_ukr_avx2_d, fm_thin_avx2_d, 3, fm_thin_t_avx2_d, 4,
                          fm_ukr_avx2_d_rows};
    if (level == FM_LEVEL_AVX512)
        k = (fm_kernel_d){8, 16, fm_ukr_avx512_d, fm_thin_avx512_d, 8, fm_thin_t_avx512_d,
                          16, fm_ukr_avx512_d_rows};
#else
    (void)level;
#endif
    return k;
}

/* Packing of an operand contiguous along k (a row-major A, a transposed B) reads
   along k and writes across the panel's lanes. For float on AVX2 it goes through
   8 x 8 blocks transposed in registers; it returns 0 where it does not apply, and
   the generic loop runs. */
#if FM_X86_SIMD
__attribute__((target("avx2"))) static void fm_transpose8_s(const float *src, ptrdiff_t lds,
                                                            float *dst, ptrdiff_t ldd)
{
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}
#endif

#if FM_X86_SIMD
/* A row's 32 sums stored where m0 and m1 keep them, zero elsewhere: past the caches
   with nt (c then aligned). */
__attribute__((target("avx512f"))) static inline void
fm_store_kept32(float *c, __m512 acc0, __m512 acc1, __mmask16 m0, __mmask16 m1, int nt)
{
    __m512 c0 = _mm512_maskz_mov_ps(m0, acc0), c1 = _mm512_maskz_mov_ps(m1, acc1);
    if (nt) {
        _mm512_stream_ps(c, c0);
        _mm512_stream_ps(c + 16, c1);
    } else {
        _mm512_storeu_ps(c, c0);
        _mm512_storeu_ps(c + 16, c1);
    }
}
#endif

/* A strip of a shallow product (at most FM_SHALLOW_K values of k, an input gradient
   from 10 classes) with relu's derivative, at AVX-512 (gemm_impl.h's strips): 8 rows
   of C across `panels` whole panels of 32 columns, each panel's kc rows of packed B
   held in registers while the 8 rows take them, each row's two vectors summed as the
   microkernel sums them (from zero, k ascending, one fused multiply-add each) and
   kept where the layer's output h is above zero, zero elsewhere, as the tile's
   epilogue keeps them: the same bits, without the tiles' stores read back by a pass
   of the epilogue over the strip. Element (i, k) of A at a[i * ai + k * ak]. With
   nt, C's rows are written with non-temporal stores (whole aligned vectors; the
   caller then fences them). fm_shallow_relu_s returns 0 where the level has no
   such kernel (the strip is then left to the tiles). */
#define FM_SHALLOW_K 12
#if FM_X86_SIMD
__attribute__((target("avx512f"))) static void
fm_shallow_relu_avx512(ptrdiff_t kc, const float *a, ptrdiff_t ai, ptrdiff_t ak,
                       const float *bp, ptrdiff_t panels, float *c, ptrdiff_t ldc,
                       const float *h, ptrdiff_t ldh, int nt)
{
    const __m512 zero = _mm512_setzero_ps();
    for (ptrdiff_t q = 0; q < panels; q++, bp += kc * 32, c += 32, h += 32) {
        __m512 b0[FM_SHALLOW_K], b1[FM_SHALLOW_K];
        _Pragma("GCC unroll 12") for (int k = 0; k < FM_SHALLOW_K; k++) {
            b0[k] = k < kc ? _mm512_loadu_ps(bp + k * 32) : zero;
            b1[k] = k < kc ? _mm512_loadu_ps(bp + k * 32 + 16) : zero;
        }
        for (int i = 0; i < 8; i++) {
            __m512 acc0 = zero, acc1 = zero;
            _Pragma("GCC unroll 12") for (int k = 0; k < FM_SHALLOW_K; k++) {
                if (k >= kc)
                    break;
                __m512 av = _mm512_set1_ps(a[i * ai + k * ak]);
                acc0 = _mm512_fmadd_ps(av, b0[k], acc0);
                acc1 = _mm512_fmadd_ps(av, b1[k], acc1);
            }
            const float *hr = h + i * ldh;
            __mmask16 m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(hr), zero, _CMP_GT_OQ);
            __mmask16 m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(hr + 16), zero, _CMP_GT_OQ);
            fm_store_kept32(c + i * ldc, acc0, acc1, m0, m1, nt);
        }
    }
}

/* The same at AVX2 (6 rows, panels of 16 columns): each half of a panel's rows of B
   in registers (16 ymm hold no more). */
__attribute__((target("avx2,fma"))) static void
fm_shallow_relu_avx2(ptrdiff_t kc, const float *a, ptrdiff_t ai, ptrdiff_t ak,
                     const float *bp, ptrdiff_t panels, float *c, ptrdiff_t ldc,
                     const float *h, ptrdiff_t ldh, int nt)
{
    const __m256 zero = _mm256_setzero_ps();
    for (ptrdiff_t q = 0; q < 2 * panels; q++) {
        /* Half q % 2 of panel q / 2. */
        const float *b = bp + q / 2 * kc * 16 + q % 2 * 8;
        float *cq = c + q * 8;
        const float *hq = h + q * 8;
        __m256 bk[FM_SHALLOW_K];
        _Pragma("GCC unroll 12") for (int k = 0; k < FM_SHALLOW_K; k++)
            bk[k] = k < kc ? _mm256_loadu_ps(b + k * 16) : zero;
        for (int i = 0; i < 6; i++) {
            __m256 acc = zero;
            _Pragma("GCC unroll 12") for (int k = 0; k < FM_SHALLOW_K; k++) {
                if (k >= kc)
                    break;
                acc = _mm256_fmadd_ps(_mm256_set1_ps(a[i * ai + k * ak]), bk[k], acc);
            }
            __m256 keep = _mm256_cmp_ps(_mm256_loadu_ps(hq + i * ldh), zero, _CMP_GT_OQ);
            if (nt)
                _mm256_stream_ps(cq + i * ldc, _mm256_and_ps(keep, acc));
            else
                _mm256_storeu_ps(cq + i * ldc, _mm256_and_ps(keep, acc));
        }
    }
}

/* The same for a bfloat16 product on vdpbf16ps (FM_BF16_NATIVE, 8 rows, panels of 32
   columns): a holds the strip's packed pairs (pair q of row i at lane q * 8 + i), each
   panel's pairs of B are held in registers, and each row's two vectors are summed
   as fm_ukr_avx512bf16_s sums them (from zero, pair by pair). It runs with DAZ and
   FTZ set, where the tiles' epilogue compares the layer's output in the caller's
   floating-point mode: the output h is kept where h > 0 there, compared as
   integers (above h_min: 0, or the largest subnormal's bits where the caller reads
   subnormals as zero; at most infinity's: not a NaN). */
__attribute__((target("avx512f,avx512bf16"))) static void
fm_shallow_relu_bf16(ptrdiff_t pairs, const float *a, const float *bp, ptrdiff_t panels,
                     float *c, ptrdiff_t ldc, const float *h, ptrdiff_t ldh, int nt,
                     int h_min)
{
    const uint32_t *ap = (const uint32_t *)a, *b = (const uint32_t *)bp;
    const __m512i lo = _mm512_set1_epi32(h_min), inf = _mm512_set1_epi32(0x7f800000);
    for (ptrdiff_t q = 0; q < panels; q++, b += pairs * 32, c += 32, h += 32) {
        __m512bh b0[FM_SHALLOW_K / 2], b1[FM_SHALLOW_K / 2];
        _Pragma("GCC unroll 6") for (int p = 0; p < FM_SHALLOW_K / 2; p++) {
            const void *bq = b + p * 32;
            b0[p] = (__m512bh)(p < pairs ? _mm512_loadu_si512(bq) : _mm512_setzero_si512());
            b1[p] = (__m512bh)(p < pairs ? _mm512_loadu_si512((const uint32_t *)bq + 16)
                                         : _mm512_setzero_si512());
        }
        for (int i = 0; i < 8; i++) {
            __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
            _Pragma("GCC unroll 6") for (int p = 0; p < FM_SHALLOW_K / 2; p++) {
                if (p >= pairs)
                    break;
                __m512bh ai = (__m512bh)_mm512_set1_epi32((int)ap[p * 8 + i]);
                acc0 = _mm512_dpbf16_ps(acc0, ai, b0[p]);
                acc1 = _mm512_dpbf16_ps(acc1, ai, b1[p]);
            }
            const float *hr = h + i * ldh;
            __m512i h0 = _mm512_loadu_si512((const void *)hr);
            __m512i h1 = _mm512_loadu_si512((const void *)(hr + 16));
            __mmask16 m0 = _mm512_cmpgt_epi32_mask(h0, lo) &
                           _mm512_cmple_epi32_mask(h0, inf);
            __mmask16 m1 = _mm512_cmpgt_epi32_mask(h1, lo) &
                           _mm512_cmple_epi32_mask(h1, inf);
            fm_store_kept32(c + i * ldc, acc0, acc1, m0, m1, nt);
        }
    }
}
#endif

static int fm_shallow_on = 1; /* fm_gemm_set_shallow's */

void fm_gemm_set_shallow(int on)
{
    fm_shallow_on = on != 0;
}

/* With stream, C is written past the caches where its rows start on cache lines
   (fm_stream_c says when). bf is the product's FM_BF16_* (a
   bfloat16 product takes its kernel only on vdpbf16ps), csr the caller's MXCSR. */
static int fm_shallow_relu_s(int mr, int nr, int bf, unsigned csr, ptrdiff_t kc,
                             const float *a, ptrdiff_t ai, ptrdiff_t ak, const float *bp,
                             ptrdiff_t panels, float *c, ptrdiff_t ldc, const float *h,
                             ptrdiff_t ldh, int stream)
{
#if FM_X86_SIMD
    if (!fm_shallow_on || kc > FM_SHALLOW_K || (bf && bf != FM_BF16_NATIVE))
        return 0;
    int nt = stream && (uintptr_t)c % 64 == 0 && ldc % 16 == 0;
    if (bf && mr == 8 && nr == 32)
        fm_shallow_relu_bf16(kc / 2, a, bp, panels, c, ldc, h, ldh, nt,
                             csr & FM_MXCSR_DAZ ? 0x007fffff : 0);
    else if (bf)
        return 0;
    else if (fm_gemm_level() == FM_LEVEL_AVX512 && mr == 8 && nr == 32)
        fm_shallow_relu_avx512(kc, a, ai, ak, bp, panels, c, ldc, h, ldh, nt);
    else if (fm_gemm_level() == FM_LEVEL_AVX2 && mr == 6 && nr == 16)
        fm_shallow_relu_avx2(kc, a, ai, ak, bp, panels, c, ldc, h, ldh, nt);
    else
        return 0;
    /* Non-temporal stores are weakly ordered: they are made visible before the
       barrier that ends the product hands C to other threads. */
    if (nt)
        _mm_sfence();
    return 1;
#else
    (void)mr, (void)nr, (void)bf, (void)csr, (void)kc, (void)a, (void)ai, (void)ak;
    (void)bp, (void)panels, (void)c, (void)ldc, (void)h, (void)ldh, (void)stream;
    return 0;
#endif
}

static int fm_pack_along_k_fast_s(const float *X, ptrdiff_t ld, ptrdiff_t r0, ptrdiff_t rc,
                                  ptrdiff_t p0, ptrdiff_t kc, int w, float *restrict dst)
{
#if FM_X86_SIMD
    if (fm_gemm_level() < FM_LEVEL_AVX2 || w % 8 != 0)
        return 0;
    ptrdiff_t k8 = kc / 8 * 8;
    for (ptrdiff_t pr = 0; pr < rc; pr += w, dst += w * kc) {
        ptrdiff_t m = fm_min(w, rc - pr);
        for (ptrdiff_t g = 0; g < w; g += 8) {
            if (g + 8 <= m) {
                const float *src = X + (r0 + pr + g) * ld + p0;
                for (ptrdiff_t k = 0; k < k8; k += 8)
                    fm_transpose8_s(src + k, ld, dst + k * w + g, w);
                for (ptrdiff_t i = 0; i < 8; i++)
                    for (ptrdiff_t k = k8; k < kc; k++)
                        dst[k * w + g + i] = src[i * ld + k];
            } else {
                for (ptrdiff_t i = 0; i < 8; i++)
                    for (ptrdiff_t k = 0; k < kc; k++)
                        dst[k * w + g + i] =
                            g + i < m ? X[(r0 + pr + g + i) * ld + p0 + k] : 0.0f;
            }
        }
    }
    return 1;
#else
    (void)X; (void)ld; (void)r0; (void)rc; (void)p0; (void)kc; (void)w; (void)dst;
    return 0;
#endif
}

/* ------------------------------------------------------------- bfloat16 products
   fm_bgemm rounds each operand to bfloat16 (round to nearest even; a subnormal
   becomes a zero of its sign, a NaN stays a quiet NaN) as it packs it, and
   accumulates in float as the vdpbf16ps instruction does: for each pair of k
   values (2q, 2q+1), k ascending,
       acc = fma(a[2q+1], b[2q+1], acc);  acc = fma(a[2q], b[2q], acc)
   with subnormal inputs read as zero and subnormal results flushed to zero
   (Intel's pseudo-code: "FP32 FMA with DAZ in, FTZ out", odd element first). A
   product of two bfloat16 values is exact in float, so the emulation, which packs
   the same values as floats with each pair's members swapped and runs the float
   microkernel with MXCSR's DAZ and FTZ set, gives the same bits as the
   instruction; the hardware kernel packs each pair into one 32-bit lane. Each
   panel of K values starts from zero and is then added to C (a float addition,
   also under DAZ and FTZ), as in the float product. FM_BF16_HARDWARE is the
   instruction's paired layout (for the instruction, or fm_ukr_pairs_s in its
   place); FM_BF16_NATIVE the same, packed with the instruction set's own rounding,
   where the CPU has the instruction. (The FM_BF16_* values are defined at the top.) */

/* Sets DAZ and FTZ for a bfloat16 product and returns the MXCSR to restore. */
static unsigned fm_fp_enter(int bf)
{
#if FM_X86_SIMD
    if (bf)
        return fm_flush_enter_if(1);
#else
    (void)bf;
#endif
    return 0;
}

static void fm_fp_leave(int bf, unsigned csr)
{
#if FM_X86_SIMD
    if (bf)
        fm_flush_leave(csr);
#else
    (void)bf; (void)csr;
#endif
}

/* 0: emulation in the float microkernels; 1: vdpbf16ps; 2: fm_ukr_pairs_s. */
static int fm_bf16_mode;

/* x rounded to bfloat16, as the bits of the float with that value (branch-free, so
   that the packing loops vectorize). */
static inline uint32_t fm_bf16_bits(float x)
{
    uint32_t u, r;
    memcpy(&u, &x, sizeof u);
    r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    r = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u) & 0xffff0000u : r;
    return (u & 0x7f800000u) == 0 ? u & 0x80000000u : r;
}

/* One pair of k values for w lanes: lo (k = 2q) and hi (2q+1) hold n values each
   at stride s (hi NULL past K), the rest of the w lanes are zero. */
static inline void fm_put_pair(int hw, const float *lo, const float *hi, ptrdiff_t s,
                               ptrdiff_t n, int w, uint32_t *restrict out_hi,
                               uint32_t *restrict out_lo)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t l = fm_bf16_bits(lo[i * s]), h = hi ? fm_bf16_bits(hi[i * s]) : 0;
        if (hw) {
            out_hi[i] = (l >> 16) | h;
        } else {
            out_hi[i] = h;
            out_lo[i] = l;
        }
    }
    for (ptrdiff_t i = n; i < w; i++) {
        out_hi[i] = 0;
        if (!hw)
            out_lo[i] = 0;
    }
}

#if FM_X86_SIMD
/* fm_bf16_bits on 8 lanes. */
__attribute__((target("avx2"))) static __m256i fm_bf16_bits8(__m256 v)
{
    const __m256i top = _mm256_set1_epi32((int)0xffff0000u);
    const __m256i expo = _mm256_set1_epi32(0x7f800000);
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
    __m256i u = _mm256_castps_si256(v);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_and_si256(
        _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd)), top);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_andnot_si256(sign, u), expo);
    __m256i quiet = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
    __m256i sub = _mm256_cmpeq_epi32(_mm256_and_si256(u, expo), _mm256_setzero_si256());
    r = _mm256_blendv_epi8(r, _mm256_and_si256(quiet, top), nan);
    return _mm256_blendv_epi8(r, _mm256_and_si256(u, sign), sub);
}

/* Lanes of 8 rows read along k (row r at rows + r * s_r), 4 pairs (8 k values, all
   below K), through an 8 x 8 register transpose; o is the first lane of the first
   pair, per_pair the distance between pairs. */
__attribute__((target("avx2"))) static void fm_put_pairs8(int hw, const float *rows,
                                                          ptrdiff_t s_r, int w,
                                                          uint32_t *o, ptrdiff_t per_pair)
{
    float t[64] __attribute__((aligned(32)));
    fm_transpose8_s(rows, s_r, t, 8);
    for (int j = 0; j < 8; j += 2, o += per_pair) {
        __m256i lo = fm_bf16_bits8(_mm256_load_ps(t + j * 8));
        __m256i hi = fm_bf16_bits8(_mm256_load_ps(t + (j + 1) * 8));
        if (hw) {
            __m256i pair = _mm256_or_si256(_mm256_srli_epi32(lo, 16), hi);
            _mm256_storeu_si256((__m256i *)o, pair);
        } else {
            _mm256_storeu_si256((__m256i *)o, hi);
            _mm256_storeu_si256((__m256i *)(o + w), lo);
        }
    }
}
#endif

#if FM_X86_SIMD
/* The hardware layout packed with the instruction set's own rounding,
   vcvtneps2bf16: round to nearest even, subnormal inputs read as zero, a NaN made
   quiet; the same bits as fm_bf16_bits for every one of the 2^32 floats (checked
   on an AMD Zen 4; the tests compare every product with the exact reference).
   Lanes past the panel's m rows, and k values past K, are zero. */
#define FM_BF16_TARGET "avx512f,avx512bw,avx512vl,avx512bf16"

/* Eight rows of 8 pairs each (32-bit lanes) transposed: pair j of row i goes to
   o[j * w + i]. */
__attribute__((target(FM_BF16_TARGET))) static inline void fm_store_pairs8x8(
    __m256i r[8], uint32_t *o, ptrdiff_t w, ptrdiff_t pairs)
{
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int j = 0; j < 4 && j < pairs; j++)
        _mm256_storeu_si256((__m256i *)(o + j * w),
                            _mm256_permute2x128_si256(u[j], u[j + 4], 0x20));
    for (int j = 4; j < 8 && j < pairs; j++)
        _mm256_storeu_si256((__m256i *)(o + j * w),
                            _mm256_permute2x128_si256(u[j - 4], u[j], 0x31));
}

/* Row r of an operand, from its row pointers rp or at src + r * s. */
static inline const float *fm_row_at(const float *src, const float *const *rp, ptrdiff_t s,
                                     ptrdiff_t r)
{
    return rp != NULL ? rp[r] : src + r * s;
}

/* An operand read along k (its rows contiguous, r at src + r * s_r or rp[r]): 16 k
   values of 8 rows at a time, rounded into 8 pairs per row and transposed across
   the lanes; rows [r0, r0+rc) in panels of w (a multiple of 8). */
__attribute__((target(FM_BF16_TARGET))) static void fm_pack_pairs_along_k(
    const float *src, const float *const *rp, ptrdiff_t s_r, ptrdiff_t r0, ptrdiff_t rc,
    ptrdiff_t p0, ptrdiff_t kc, ptrdiff_t K, int w, uint32_t *out)
{
    ptrdiff_t pairs = kc / 2;
    for (ptrdiff_t pr = 0; pr < rc; pr += w, out += pairs * w) {
        for (ptrdiff_t g = 0; g < w; g += 8) {
            ptrdiff_t rows = fm_max(0, fm_min(8, rc - pr - g));
            const float *row[8];
            for (int i = 0; i < rows; i++)
                row[i] = fm_row_at(src, rp, s_r, r0 + pr + g + i);
            for (ptrdiff_t q = 0; q < pairs; q += 8) {
                ptrdiff_t k = p0 + 2 * q, valid = fm_max(0, fm_min(16, K - k));
                __mmask16 mask = (__mmask16)((1u << valid) - 1);
                __m256i r[8];
                for (int i = 0; i < 8; i++) {
                    __m512 v = _mm512_setzero_ps();
                    if (i < rows)
                        v = _mm512_maskz_loadu_ps(mask, row[i] + k);
                    r[i] = (__m256i)_mm512_cvtneps_pbh(v);
                }
                fm_store_pairs8x8(r, out + q * w + g, w, pairs - q);
            }
        }
    }
}

/* Where lane l of pair q goes in panels of w lanes, `pairs` pairs each: panel
   l / w, at l % w. */
static inline uint32_t *fm_pair_lane(uint32_t *out, ptrdiff_t l, ptrdiff_t w,
                                     ptrdiff_t pairs, ptrdiff_t q)
{
    return out + l / w * pairs * w + q * w + l % w;
}

/* An operand read across its rows (k at src + k * s_k or rp[k], its rows r
   contiguous): pair by pair, the two k values' rows over all of the panels, 16
   lanes at a time, rounded and interleaved, k = 2q in the low half, each lane into
   its panel (of w, a multiple of 8): each k's row is read along its length, once,
   instead of a panel's width of it per panel. */
__attribute__((target(FM_BF16_TARGET))) static void fm_pack_pairs_across(
    const float *src, const float *const *rp, ptrdiff_t s_k, ptrdiff_t r0, ptrdiff_t rc,
    ptrdiff_t p0, ptrdiff_t kc, ptrdiff_t K, int w, uint32_t *out)
{
    const __m512i mix = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                         25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                                         18, 2, 17, 1, 16, 0);
    ptrdiff_t pairs = kc / 2, lanes = (rc + w - 1) / w * w;
    for (ptrdiff_t q = 0; q < pairs; q++) {
        ptrdiff_t k = p0 + 2 * q;
        const float *lo = k < K ? fm_row_at(src, rp, s_k, k) + r0 : NULL;
        const float *hi = k + 1 < K ? fm_row_at(src, rp, s_k, k + 1) + r0 : NULL;
        for (ptrdiff_t v = 0; v < lanes; v += 16) {
            ptrdiff_t valid = fm_max(0, fm_min(16, rc - v));
            __mmask16 load = (__mmask16)((1u << valid) - 1);
            __m512 l = _mm512_setzero_ps(), h = _mm512_setzero_ps();
            if (lo != NULL)
                l = _mm512_maskz_loadu_ps(load, lo + v);
            if (hi != NULL)
                h = _mm512_maskz_loadu_ps(load, hi + v);
            __m512i both = _mm512_inserti64x4(
                _mm512_castsi256_si512((__m256i)_mm512_cvtneps_pbh(l)),
                (__m256i)_mm512_cvtneps_pbh(h), 1);
            __m512i z = _mm512_permutexvar_epi16(mix, both);
            if (w % 16 == 0) {
                _mm512_storeu_si512((void *)fm_pair_lane(out, v, w, pairs, q), z);
            } else {
                _mm256_storeu_si256((__m256i *)fm_pair_lane(out, v, w, pairs, q),
                                    _mm512_castsi512_si256(z));
                if (v + 8 < lanes)
                    _mm256_storeu_si256((__m256i *)fm_pair_lane(out, v + 8, w, pairs, q),
                                        _mm512_extracti64x4_epi64(z, 1));
            }
        }
    }
}
#endif

/* Element (r, k) of an operand is src[r * ld + k] (along_k) or src[k * ld + r]; rows
   [r0, r0+rc) and k values [p0, p0+kc) (kc even; zero past K) go into panels of w
   rows, for each pair q either the floats of k = 2q+1 then 2q (emulation) or one
   32-bit lane of two bfloat16 halves, k = 2q in the low one (hardware). Only the
   native packing takes an operand by its row pointers rp (fm_gemm_a_rows). */
static void fm_pack_bf16_s(int bf, int along_k, const float *src, const float *const *rp,
                           ptrdiff_t ld, ptrdiff_t r0, ptrdiff_t rc, ptrdiff_t p0,
                           ptrdiff_t kc, ptrdiff_t K, int w, float *restrict dst)
{
    uint32_t *out = (uint32_t *)dst;
    int hw = bf != FM_BF16_EMULATED;
    ptrdiff_t s_r = along_k ? ld : 1, s_k = along_k ? 1 : ld;
    ptrdiff_t pairs = kc / 2, per_pair = hw ? w : 2 * w;
    ptrdiff_t valid = fm_min(kc, K - p0 > 0 ? K - p0 : 0);
    /* Full panels of an operand read along k go 8 rows by 8 k values through
       register transposes (AVX2 and up); the rest lane by lane. */
    int blocks = FM_X86_SIMD && s_k == 1 && w % 8 == 0 && fm_gemm_level() >= FM_LEVEL_AVX2;
#if FM_X86_SIMD
    if (bf == FM_BF16_NATIVE) {
        if (along_k)
            fm_pack_pairs_along_k(src, rp, ld, r0, rc, p0, kc, K, w, out);
        else
            fm_pack_pairs_across(src, rp, ld, r0, rc, p0, kc, K, w, out);
        return;
    }
#endif
    (void)rp;
    for (ptrdiff_t pr = 0; pr < rc; pr += w, out += pairs * per_pair) {
        ptrdiff_t m = fm_min(w, rc - pr), q0 = 0;
        const float *base = src + (r0 + pr) * s_r;
#if FM_X86_SIMD
        if (blocks && m == w) {
            q0 = valid / 8 * 4;
            for (int g = 0; g < w; g += 8)
                for (ptrdiff_t q = 0; q < q0; q += 4)
                    fm_put_pairs8(hw, base + g * s_r + p0 + 2 * q, s_r, w,
                                  out + q * per_pair + g, per_pair);
        }
#endif
        for (ptrdiff_t q = q0; q < pairs; q++) {
            ptrdiff_t k = p0 + 2 * q;
            const float *lo = k < K ? base + k * s_k : NULL;
            const float *hi = k + 1 < K ? base + (k + 1) * s_k : NULL;
            uint32_t *o = out + q * per_pair;
            if (lo == NULL) {
                memset(o, 0, (size_t)per_pair * sizeof *o);
                continue;
            }
            /* Contiguous lanes vectorize. */
            if (s_r == 1)
                fm_put_pair(hw, lo, hi, 1, m, w, o, o + w);
            else
                fm_put_pair(hw, lo, hi, s_r, m, w, o, o + w);
        }
    }
}

#if FM_X86_SIMD
/* vdpbf16ps on 8 rows x 32 columns; a and b hold kc / 2 pairs per row and column. */
__attribute__((target("avx512f,avx512bf16"))) static void fm_ukr_avx512bf16_s(
    ptrdiff_t kc, const float *restrict a, ptrdiff_t ai, ptrdiff_t ak,
    const float *restrict b, float *restrict c, ptrdiff_t ldc, int accumulate)
{
    (void)ai, (void)ak; /* always packed */
    const uint32_t *ap = (const uint32_t *)a, *bp = (const uint32_t *)b;
    __m512 acc[8][2];
    /* The tile of C, read or written after the loop, is fetched now. */
    for (int i = 0; i < 8; i++) {
        __builtin_prefetch(c + i * ldc, 1, 3);
        __builtin_prefetch(c + i * ldc + 31, 1, 3);
    }
    for (int i = 0; i < 8; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (ptrdiff_t q = 0; q < kc / 2; q++, ap += 8, bp += 32) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)bp);
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(bp + 16));
        _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)ap[i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
    }
    for (int i = 0; i < 8; i++)
        for (int v = 0; v < 2; v++) {
            float *cp = c + i * ldc + 16 * v;
            __m512 r = acc[i][v];
            if (accumulate)
                r = _mm512_add_ps(_mm512_loadu_ps(cp), r);
            _mm512_storeu_ps(cp, r);
        }
}
#endif

/* The instruction's paired layout with a portable kernel in its place, so that the
   layout is tested on every CPU: two float FMAs per pair, odd member first. */
static void fm_ukr_pairs_s(ptrdiff_t kc, const float *restrict a, ptrdiff_t ai,
                           ptrdiff_t ak, const float *restrict b, float *restrict c,
                           ptrdiff_t ldc, int accumulate)
{
    (void)ai, (void)ak; /* always packed */
    const uint32_t *ap = (const uint32_t *)a, *bp = (const uint32_t *)b;
    float acc[8][32] = {{0}};
    for (ptrdiff_t q = 0; q < kc / 2; q++, ap += 8, bp += 32)
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 32; j++) {
                uint32_t hi_a = ap[i] & 0xffff0000u, lo_a = ap[i] << 16;
                uint32_t hi_b = bp[j] & 0xffff0000u, lo_b = bp[j] << 16;
                float x, y;
                memcpy(&x, &hi_a, 4);
                memcpy(&y, &hi_b, 4);
                acc[i][j] = fmaf(x, y, acc[i][j]);
                memcpy(&x, &lo_a, 4);
                memcpy(&y, &lo_b, 4);
                acc[i][j] = fmaf(x, y, acc[i][j]);
            }
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 32; j++)
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}


int fm_bf16_hardware_supported(void)
{
#if FM_X86_SIMD
    __builtin_cpu_init();
    return fm_gemm_best_level() >= FM_LEVEL_AVX512 &&
           __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

int fm_bf16_hardware(void)
{
    if (fm_bf16_mode == 1)
        return fm_gemm_level() >= FM_LEVEL_AVX512;
    return fm_bf16_mode == 2 ? 2 : 0;
}

void fm_bf16_set_hardware(int mode)
{
    fm_bf16_mode = mode == 2 || (mode == 1 && fm_bf16_hardware_supported()) ? mode : 0;
}

/* The type-generic driver, once per type. */
#define T float
#define SUF _s
#define FM_SIGMOID_FN fm_sigmoid_s  /* in float (see fm_math.h) */
#define FM_TANH_FN tanhf
#define FM_PACK_ALONG_K_FAST fm_pack_along_k_fast_s
#define FM_SHALLOW_RELU fm_shallow_relu_s
#define FM_PACK_BF16 fm_pack_bf16_s
#include "gemm_impl.h"
#undef T
#undef SUF
#undef FM_SIGMOID_FN
#undef FM_TANH_FN
#undef FM_PACK_ALONG_K_FAST
#undef FM_SHALLOW_RELU
#undef FM_PACK_BF16

#define T double
#define SUF _d
#define FM_SIGMOID_FN fm_sigmoid_d
#define FM_TANH_FN tanh
#include "gemm_impl.h"
#undef T
#undef SUF
#undef FM_SIGMOID_FN
#undef FM_TANH_FN

void fm_sgemm_plan(fm_gemm_plan *pl, int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                   ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B,
                   ptrdiff_t ldb, float *C, ptrdiff_t ldc, const fm_epilogue *ep)
{
    fm_kernel_s k = fm_kernel_for_s(fm_gemm_level());
    fm_gemm_plan_for_s(pl, k.mr, k.nr, k.ukr, k.thin, k.thin_r, k.thin_t, k.thin_t_w,
                       FM_BF16_NONE, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, ep);
    pl->ukr_rows = (void (*)(void))k.ukr_rows;
}

void fm_bgemm_plan(fm_gemm_plan *pl, int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                   ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B,
                   ptrdiff_t ldb, float *C, ptrdiff_t ldc, const fm_epilogue *ep)
{
    fm_kernel_s k = fm_kernel_for_s(fm_gemm_level());
    int bf = FM_BF16_EMULATED;
    int hw = fm_bf16_hardware();
    if (hw) {
        k.mr = 8;
        k.nr = 32;
        k.ukr = fm_ukr_pairs_s;
        bf = FM_BF16_HARDWARE;
#if FM_X86_SIMD
        if (hw == 1) {
            k.ukr = fm_ukr_avx512bf16_s;
            bf = FM_BF16_NATIVE;
        }
#endif
    }
    /* (No thin kernel: bfloat16 operands are rounded while packing.) */
    fm_gemm_plan_for_s(pl, k.mr, k.nr, k.ukr, NULL, 0, NULL, 0, bf, trans_a, trans_b, M, N,
                       K, A, lda, B, ldb, C, ldc, ep);
}

void fm_dgemm_plan(fm_gemm_plan *pl, int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                   ptrdiff_t K, const double *A, ptrdiff_t lda, const double *B,
                   ptrdiff_t ldb, double *C, ptrdiff_t ldc, const fm_epilogue *ep)
{
    fm_kernel_d k = fm_kernel_for_d(fm_gemm_level());
    fm_gemm_plan_for_d(pl, k.mr, k.nr, k.ukr, k.thin, k.thin_r, k.thin_t, k.thin_t_w,
                       FM_BF16_NONE, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, ep);
    pl->ukr_rows = (void (*)(void))k.ukr_rows;
}

int fm_gemm_b_panels(fm_gemm_plan *pl)
{
    if (pl->path != FM_PATH_GENERAL || pl->ct || pl->bf || pl->tb || pl->N % pl->nr != 0)
        return 0;
    pl->b_panels = 1;
    return 1;
}

int fm_gemm_a_rows(fm_gemm_plan *pl, const void *rows)
{
    /* A bfloat16 product packs A always: the native packing reads the rows. */
    if (pl->path != FM_PATH_GENERAL || pl->ct ||
        (pl->bf ? pl->bf != FM_BF16_NATIVE : pl->ukr_rows == NULL))
        return 0;
    pl->a_rows = rows;
    return 1;
}

int fm_gemm_b_sums(fm_gemm_plan *pl, void *sums)
{
    /* (A split of N gives a thread only its tiles' columns of B.) */
    if (pl->path != FM_PATH_GENERAL || pl->ct || pl->b_panels || pl->tb ||
        (pl->split_n && pl->threads > 1))
        return 0;
    pl->b_sums = sums;
    return 1;
}

int fm_gemm_split_as(fm_gemm_plan *pl, const fm_gemm_plan *like)
{
    if (pl->path != FM_PATH_GENERAL || like->path != FM_PATH_GENERAL || pl->ct ||
        like->ct || !like->split_n || pl->N != like->N || pl->nr != like->nr ||
        pl->threads != like->threads || pl->b_sums != NULL)
        return 0;
    pl->split_n = 1;
    pl->tiles = like->tiles;
    pl->shared = like->shared;
    for (int t = 0; t <= pl->threads && t <= FM_SHARE_TEAM; t++)
        pl->start[t] = like->start[t];
    pl->slot = NULL;
    return 1;
}

void fm_gemm_run(fm_gemm_plan *pl, int t, int team)
{
    if (pl->dbl)
        fm_gemm_run_for_d(pl, t, team);
    else
        fm_gemm_run_for_s(pl, t, team);
}

int fm_gemm_done(fm_gemm_plan *pl)
{
    fm_share *s = pl->slot;
    /* (Unless a product planned since took the slot for another shape.) */
    if (s != NULL && pl->got == pl->threads &&
        fm_share_is(s, pl->M, pl->N, pl->K, pl->kind, pl->threads))
        fm_share_update(s, pl->start, pl->spent);
    return pl->failed ? -1 : 0;
}

int fm_flush_denormals;

int fm_flush_supported(void)
{
    return FM_HAS_FLUSH;
}

int fm_gemm_alone(fm_gemm_plan *pl)
{
#ifdef _OPENMP
#pragma omp parallel num_threads(pl->threads) if (pl->threads > 1)
    {
        unsigned csr = fm_flush_enter();
        fm_gemm_run(pl, omp_get_thread_num(), omp_get_num_threads());
        fm_flush_leave(csr);
    }
#else
    unsigned csr = fm_flush_enter();
    fm_gemm_run(pl, 0, 1);
    fm_flush_leave(csr);
#endif
    return fm_gemm_done(pl);
}

/* fm_sgemm, fm_bgemm and fm_dgemm: the product planned, then run on a team of its
   own. */
#define FM_GEMM_ALONE(NAME, T)                                                         \
    int NAME(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, \
             ptrdiff_t lda, const T *B, ptrdiff_t ldb, T *C, ptrdiff_t ldc,            \
             const fm_epilogue *ep)                                                    \
    {                                                                                  \
        fm_gemm_plan pl;                                                               \
        NAME##_plan(&pl, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, ep);       \
        return fm_gemm_alone(&pl);                                                     \
    }
FM_GEMM_ALONE(fm_sgemm, float)
FM_GEMM_ALONE(fm_bgemm, float)
FM_GEMM_ALONE(fm_dgemm, double)
#undef FM_GEMM_ALONE
