/* Packed, cache-blocked matrix products C = op(A) @ op(B) with fused epilogues.

   All matrices are row-major. op(A) is M x K (A itself, or the transpose of a
   K x M matrix when trans_a is set); op(B) is K x N likewise. The product is
   written into C (M x N, leading dimension ldc), and then, tile by tile while
   the tile is still in cache, the epilogue is applied:

     FM_EPI_NONE      C = op(A) op(B)
     FM_EPI_BIAS_ACT  C = act(op(A) op(B) + bias)           (bias has N entries)
     FM_EPI_MUL_DACT  C = (op(A) op(B)) * act'(z), given a = act(z) as the matrix
                      `act_out` (M x N, leading dimension ldo)

   Work is split between threads by output tiles only, and every element is
   summed in an order that depends on K alone, so results are bitwise identical
   for any number of threads. The microkernel is chosen at run time: AVX-512,
   AVX2 with FMA, or portable C. The functions trust their arguments. */
#ifndef FASTMLP_GEMM_H
#define FASTMLP_GEMM_H

#include <stddef.h>

#include "fm_ids.h"

enum { FM_EPI_NONE = 0, FM_EPI_BIAS_ACT = 1, FM_EPI_MUL_DACT = 2, FM_EPI_HOOK = 3 };

typedef struct {
    int kind;              /* FM_EPI_* */
    int act;               /* an elementwise activation of fm_ids.h (softmax is not
                              elementwise and never fused) */
    const void *bias;      /* FM_EPI_BIAS_ACT: N values of the product's type */
    const void *act_out;   /* FM_EPI_MUL_DACT: M x N values of the product's type */
    ptrdiff_t ldo;
    /* FM_EPI_HOOK: hook(ctx, i0, j0, m, n, blk, ldb) on each finished m x n block
       of C at (i0, j0) (a cache block of many tiles), by the thread that computed
       it, with the float mode restored; blk holds the block's values, row r at
       blk + r * ldb (in C itself, unless c_unused). */
    void (*hook)(const void *ctx, ptrdiff_t i0, ptrdiff_t j0, ptrdiff_t m, ptrdiff_t n,
                 const void *blk, ptrdiff_t ldb);
    const void *ctx;
    /* FM_EPI_HOOK: C's values are not wanted after the hook, so that a block summed
       in one pass over K may be computed in the thread's scratch memory (which
       stays in cache) and C left as it was. */
    int c_unused;
    /* FM_EPI_HOOK with c_unused, or NULL: the same hook for a block of whole panels
       of the plan's nr columns summed in the scratch, which it then takes laid out
       as panels: hook_panels(ctx, i0, j0, m, n, blk), panel q of the block at blk +
       q * m * nr, its m rows one after another. (A hook that updates weights kept in
       such panels then reads its gradient as it reads the weights: in runs of m * nr
       values, not of nr.) */
    void (*hook_panels)(const void *ctx, ptrdiff_t i0, ptrdiff_t j0, ptrdiff_t m,
                        ptrdiff_t n, const void *blk);
} fm_epilogue;

/* Makes every thread of the calling thread's team hold the scratch memory that any
   product of elements of `elem` bytes needs, so that no later product can fail
   for want of it; returns 0, or -1 when it could not be allocated. */
int fm_gemm_reserve(size_t elem);

/* Both return 0, or -1 when scratch memory could not be allocated. ep may be NULL. */
int fm_sgemm(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
             const float *A, ptrdiff_t lda, const float *B, ptrdiff_t ldb,
             float *C, ptrdiff_t ldc, const fm_epilogue *ep);
int fm_dgemm(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
             const double *A, ptrdiff_t lda, const double *B, ptrdiff_t ldb,
             double *C, ptrdiff_t ldc, const fm_epilogue *ep);

/* fm_sgemm with bfloat16 products (the mixed_bfloat16 policy): each operand
   rounded to bfloat16 (to nearest even, subnormals to zero) and the products
   accumulated in float in pairs of k values, as the vdpbf16ps instruction does
   (odd member first, subnormal inputs and results as zero; gemm.c says how). The
   instruction runs where the CPU has avx512_bf16 and it is switched on; elsewhere
   the float microkernels give the same bits. */
int fm_bgemm(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
             const float *A, ptrdiff_t lda, const float *B, ptrdiff_t ldb,
             float *C, ptrdiff_t ldc, const fm_epilogue *ep);

/* Teams of up to this many threads split a product's tiles by adaptive shares
   (gemm.c); larger ones evenly. */
#define FM_SHARE_TEAM 16

/* A product prepared for the threads of a parallel region that runs several
   kernels in turn (the compiled step): fm_sgemm_plan, fm_bgemm_plan and
   fm_dgemm_plan take the arguments of fm_sgemm, fm_bgemm and fm_dgemm; then each
   thread t of the region's team calls fm_gemm_run(plan, t, team), the product
   being complete once all have returned (the caller's barrier); then the thread
   that planned it calls fm_gemm_done, which returns what fm_sgemm would (0, or -1
   when scratch memory could not be allocated). The operands and the epilogue must
   stay in place until then. fm_sgemm is exactly plan, run on a team of its own,
   done: the same tiles with the same sums, so the same bits. The fields are
   gemm.c's. */
typedef struct {
    int dbl, path, mr, nr, thin_r, thin_t_w, bf, ta, tb, ct, split_n, kind, threads;
    int got, shared, failed, a_in_place, b_panels;
    void (*ukr)(void), (*thin)(void), (*thin_t)(void), (*ukr_rows)(void);
    ptrdiff_t M, N, K, Kp, kcb, mcb, ncb, tiles, lda, ldb, ldc;
    const void *A, *B, *a_rows;
    void *C, *b_sums;
    const fm_epilogue *ep;
    void *slot;
    ptrdiff_t start[FM_SHARE_TEAM + 1];
    double spent[FM_SHARE_TEAM];
} fm_gemm_plan;

void fm_sgemm_plan(fm_gemm_plan *pl, int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                   ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B,
                   ptrdiff_t ldb, float *C, ptrdiff_t ldc, const fm_epilogue *ep);
void fm_bgemm_plan(fm_gemm_plan *pl, int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                   ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B,
                   ptrdiff_t ldb, float *C, ptrdiff_t ldc, const fm_epilogue *ep);
void fm_dgemm_plan(fm_gemm_plan *pl, int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                   ptrdiff_t K, const double *A, ptrdiff_t lda, const double *B,
                   ptrdiff_t ldb, double *C, ptrdiff_t ldc, const fm_epilogue *ep);
void fm_gemm_run(fm_gemm_plan *pl, int t, int team);
int fm_gemm_done(fm_gemm_plan *pl);
/* A planned product run on a team of its own; returns what fm_gemm_done does. */
int fm_gemm_alone(fm_gemm_plan *pl);

/* Tells a planned product that its op(B), a row-major K x N matrix, lies in the
   general path's panels of B: N / nr panels of nr columns (the plan's nr), panel q
   holding its K rows of nr values one after another at B + q * K * nr. Returns 1,
   or 0 (the plan unchanged) where the plan cannot read them: not on the general
   path, computed as its transpose, a transposed or bfloat16 B, or an N that is
   not a whole number of panels. The panels hold the same values, read in the
   same order: the same bits. */
int fm_gemm_b_panels(fm_gemm_plan *pl);

/* Tells a planned product that the rows of its A, as stored (the rows of op(A),
   or with trans_a its k values), lie apart: row r at rows[r], an array of
   pointers to the product's type (the compiled step: a batch read where it lies
   in the training set instead of gathered first). A and lda are then not read.
   Returns 1, or 0 (the plan unchanged) where the plan cannot read them: not on the
   general path, computed as its transpose, or a bfloat16 product other than with
   the instruction (whose packing reads the rows). The rows hold the same values,
   read in the same order: the same bits. rows NULL reads A as planned. */
int fm_gemm_a_rows(fm_gemm_plan *pl, const void *rows);

/* Makes a planned product split C's columns between the threads in the runs that
   `like` (planned for the same team, with as many columns in panels of the same
   width) gives them: each thread then computes the columns it computed there
   (the compiled step: each thread updates the weights it reads next). The
   product's own shares are left as they were. Returns 1, or 0 (the plan
   unchanged) where either is not split by columns on the general path, or the
   product sums B's columns (fm_gemm_b_sums). Which thread computes a tile changes
   none of its bits. */
int fm_gemm_split_as(fm_gemm_plan *pl, const fm_gemm_plan *like);
/* Has the planned product also sum each column j of op(B) over k, k ascending from
   zero, into sums[j] (N values of its type), as it packs B: thread t of a team of
   `team` sums the columns that fm_team_share(N, 64 / element size, t, team) gives it,
   from B itself where it packs none. A bfloat16 product sums each block of B's rows
   where it lies (in cache after the packing), in float and in the caller's
   floating-point mode, as fm_gemm_column_sums does. Returns 1, or 0 where a thread
   might pack only part of B's columns or rows, or B is transposed (the caller then
   sums them itself, fm_gemm_column_sums). */
int fm_gemm_b_sums(fm_gemm_plan *pl, void *sums);
/* sums[j] = the sum of B[k * ldb + j] over k = 0..K-1, k ascending from zero, for j in
   [lo, hi): the same sums, on the calling thread. */
void fm_gemm_column_sums_s(const float *B, ptrdiff_t ldb, ptrdiff_t K, ptrdiff_t lo,
                           ptrdiff_t hi, float *sums);
void fm_gemm_column_sums_d(const double *B, ptrdiff_t ldb, ptrdiff_t K, ptrdiff_t lo,
                           ptrdiff_t hi, double *sums);

/* Whether this CPU and build have the bfloat16 instruction; whether fm_bgemm uses
   it (1: switched on, and the level is avx512; 2: its paired layout with a
   portable kernel in its place, for tests); and the switch: 0 (at start), 1 (only
   where supported) or 2. */
int fm_bf16_hardware_supported(void);
int fm_bf16_hardware(void);
void fm_bf16_set_hardware(int on);

/* For the tests: teams of `team` threads split every product's tiles by the fixed
   shares w (team values summing to 1) instead of adaptive ones; team 0 restores
   those. */
void fm_gemm_set_shares(const double *w, int team);

/* For the tests: the general path reads A's panels where they lie by its rule (0,
   at start), never (1: always packed) or wherever it can (2); the bits are the
   same. */
void fm_gemm_set_a_in_place(int mode);

/* For the tests: whether the general path may pack B for all of K first and take
   each block of rows through every block of k (1, at start) or never (0); the
   bits are the same. */
void fm_gemm_set_all_k(int on);

/* For the tests: whether a shallow product with relu's derivative (an input gradient
   from at most 12 classes) may run its strips through the level's strip kernel (1,
   at start; float at AVX-512 and AVX2, bfloat16 on vdpbf16ps) or always through the
   tiles and their epilogue (0); the bits are the same. */
void fm_gemm_set_shallow(int on);

/* For the tests: the shallow products' strip kernel writes C with non-temporal
   stores by its rule (0, at start: C above 8 MiB), never (1) or wherever C's rows
   start on cache lines (2); the bits are the same. */
void fm_gemm_set_stream(int mode);

/* Whether the kernels run with subnormal floats flushed to zero (0 at start):
   MXCSR's DAZ (a subnormal operand read as zero) and FTZ (a subnormal result
   written as zero), set by each thread of a parallel region on entering it
   (fm_flush_enter) and put back on leaving (fm_flush_leave). It changes only
   values below the smallest normal float, which otherwise cost the x86 cores
   a microcode assist each. Every SIMD level and thread count still gives the
   same bits. Without x86 SIMD there is nothing to set. */
extern int fm_flush_denormals;

/* 1 where fm_flush_denormals has an effect (x86), else 0. */
int fm_flush_supported(void);

/* fm_flush_enter_if sets DAZ and FTZ where `on` (the bfloat16 products always set
   them) and returns the MXCSR that fm_flush_leave puts back. MXCSR's DAZ and FTZ
   bits: */
#define FM_MXCSR_DAZ 0x0040u
#define FM_MXCSR_FTZ 0x8000u
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define FM_HAS_FLUSH 1
static inline unsigned fm_flush_enter_if(int on)
{
    unsigned csr = _mm_getcsr();
    if (on)
        _mm_setcsr(csr | FM_MXCSR_FTZ | FM_MXCSR_DAZ);
    return csr;
}
static inline void fm_flush_leave(unsigned csr) { _mm_setcsr(csr); }
#else
#define FM_HAS_FLUSH 0
static inline unsigned fm_flush_enter_if(int on)
{
    (void)on;
    return 0;
}
static inline void fm_flush_leave(unsigned csr) { (void)csr; }
#endif
static inline unsigned fm_flush_enter(void)
{
    return fm_flush_enter_if(fm_flush_denormals);
}

/* The best level (FM_LEVEL_* of fm_ids.h) this CPU and build support, the level
   in use, and a setter (the caller keeps it at or below the best level). */
int fm_gemm_best_level(void);
int fm_gemm_level(void);
void fm_gemm_set_level(int level);

#endif
