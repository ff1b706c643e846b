/* Matrix products for the cpu backend: packing, blocking, threads and the
   microkernels; the type-generic driver is in gemm_impl.h. See gemm.h. */
#include "gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* Cache blocking: KC values of K per packed panel (about L1 with one B
   micro-panel, L2 with the A block), MC rows per packed A block, NC columns per
   packed B block. KC alone fixes the summation order. */
#define FM_KC 384
#define FM_MC 144
#define FM_NC 1024

/* Below this many multiply-adds a product runs on one thread. */
#define FM_PARALLEL_MIN_MACS (1 << 20)

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

static ptrdiff_t fm_min(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }

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

/* ---------------------------------------------------------------- microkernels
   ukr(kc, a, b, c, ldc, accumulate): the MR x NR tile at c (leading dimension
   ldc) is set to, or with `accumulate` increased by, the product of the packed
   panels a (kc x MR, k-major) and b (kc x NR, k-major), k ascending. */

/* Portable C, no intrinsics: a 4 x 4 tile of scalars. */
#define FM_SCALAR_UKR(NAME, T)                                                         \
    static void NAME(ptrdiff_t kc, const T *restrict a, const T *restrict b,           \
                     T *restrict c, ptrdiff_t ldc, int accumulate)                     \
    {                                                                                  \
        T acc[4][4] = {{0}};                                                           \
        for (ptrdiff_t k = 0; k < kc; k++, a += 4, b += 4)                             \
            for (int i = 0; i < 4; i++)                                                \
                for (int j = 0; j < 4; j++)                                            \
                    acc[i][j] += a[i] * b[j];                                          \
        for (int i = 0; i < 4; i++)                                                    \
            for (int j = 0; j < 4; j++)                                                \
                c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];  \
    }

FM_SCALAR_UKR(fm_ukr_scalar_s, float)
FM_SCALAR_UKR(fm_ukr_scalar_d, double)

#if FM_X86_SIMD
/* SIMD microkernels in vector extensions: NV vectors of VW lanes per row and MR
   rows of accumulators stay in registers; the target attribute picks the
   instruction set, so the file builds without -mavx2 and each kernel runs only
   where the CPU has it. */
#define FM_VEC_UKR(NAME, T, VW, MR, NV, TARGET)                                        \
    __attribute__((target(TARGET))) static void NAME(                                  \
        ptrdiff_t kc, const T *restrict a, const T *restrict b, T *restrict c,         \
        ptrdiff_t ldc, int accumulate)                                                 \
    {                                                                                  \
        typedef T vec __attribute__((vector_size((VW) * sizeof(T))));                  \
        typedef T uvec __attribute__((vector_size((VW) * sizeof(T)),                   \
                                      aligned(sizeof(T)), may_alias));                 \
        vec acc[MR][NV];                                                               \
        _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++)                        \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                     \
                acc[i][v] = (vec){0};                                                  \
        for (ptrdiff_t k = 0; k < kc; k++) {                                           \
            vec bv[NV];                                                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                     \
                bv[v] = *(const vec *)(b + v * (VW));                                  \
            _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++) {                  \
                T ai = a[i];                                                           \
                _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++)                 \
                    acc[i][v] += ai * bv[v];                                           \
            }                                                                          \
            a += (MR);                                                                 \
            b += (NV) * (VW);                                                          \
        }                                                                              \
        _Pragma("GCC unroll 16") for (int i = 0; i < (MR); i++)                        \
            _Pragma("GCC unroll 4") for (int v = 0; v < (NV); v++) {                   \
                uvec *cp = (uvec *)(c + i * ldc + v * (VW));                           \
                if (accumulate)                                                        \
                    *cp += (uvec)acc[i][v];                                            \
                else                                                                   \
                    *cp = (uvec)acc[i][v];                                             \
            }                                                                          \
    }

FM_VEC_UKR(fm_ukr_avx2_s, float, 8, 6, 2, "avx2,fma")
FM_VEC_UKR(fm_ukr_avx2_d, double, 4, 6, 2, "avx2,fma")
FM_VEC_UKR(fm_ukr_avx512_s, float, 16, 8, 2, "avx512f")
FM_VEC_UKR(fm_ukr_avx512_d, double, 8, 8, 2, "avx512f")
#endif

typedef void (*fm_ukr_s)(ptrdiff_t, const float *, const float *, float *, ptrdiff_t, int);
typedef void (*fm_ukr_d)(ptrdiff_t, const double *, const double *, double *, ptrdiff_t,
                         int);

typedef struct { int mr, nr; fm_ukr_s ukr; } fm_kernel_s;
typedef struct { int mr, nr; fm_ukr_d ukr; } fm_kernel_d;

static fm_kernel_s fm_kernel_for_s(int level)
{
    fm_kernel_s k = {4, 4, fm_ukr_scalar_s};
#if FM_X86_SIMD
    if (level == FM_LEVEL_AVX2) { k.mr = 6; k.nr = 16; k.ukr = fm_ukr_avx2_s; }
    if (level == FM_LEVEL_AVX512) { k.mr = 8; k.nr = 32; k.ukr = fm_ukr_avx512_s; }
#else
    (void)level;
#endif
    return k;
}

static fm_kernel_d fm_kernel_for_d(int level)
{
    fm_kernel_d k = {4, 4, fm_ukr_scalar_d};
#if FM_X86_SIMD
    if (level == FM_LEVEL_AVX2) { k.mr = 6; k.nr = 8; k.ukr = fm_ukr_avx2_d; }
    if (level == FM_LEVEL_AVX512) { k.mr = 8; k.nr = 16; k.ukr = fm_ukr_avx512_d; }
#else
    (void)level;
#endif
    return k;
}

void fm_gemm_tile(int level, int is_double, int *mr, int *nr)
{
    if (is_double) {
        fm_kernel_d k = fm_kernel_for_d(level);
        *mr = k.mr; *nr = k.nr;
    } else {
        fm_kernel_s k = fm_kernel_for_s(level);
        *mr = k.mr; *nr = k.nr;
    }
}

/* The type-generic driver, once per type. */
#define T float
#define SUF _s
#define FM_EXP_FN expf
#define FM_TANH_FN tanhf
#include "gemm_impl.h"
#undef T
#undef SUF
#undef FM_EXP_FN
#undef FM_TANH_FN

#define T double
#define SUF _d
#define FM_EXP_FN exp
#define FM_TANH_FN tanh
#include "gemm_impl.h"
#undef T
#undef SUF
#undef FM_EXP_FN
#undef FM_TANH_FN

int fm_sgemm(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
             const float *A, ptrdiff_t lda, const float *B, ptrdiff_t ldb,
             float *C, ptrdiff_t ldc, const fm_epilogue *ep)
{
    fm_kernel_s k = fm_kernel_for_s(fm_gemm_level());
    return fm_gemm_s(k.mr, k.nr, k.ukr, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc,
                     ep);
}

int fm_dgemm(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
             const double *A, ptrdiff_t lda, const double *B, ptrdiff_t ldb,
             double *C, ptrdiff_t ldc, const fm_epilogue *ep)
{
    fm_kernel_d k = fm_kernel_for_d(fm_gemm_level());
    return fm_gemm_d(k.mr, k.nr, k.ukr, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc,
                     ep);
}
