/* The type-generic part of gemm.c, included once per type with T (float or
   double), SUF (_s or _d), FM_SIGMOID_FN, FM_TANH_FN defined,
   FM_PACK_ALONG_K_FAST where the type has a fast packing of an operand contiguous
   along k (a row-major A, a transposed B), and FM_PACK_BF16 where it has bfloat16
   products (float): then `bf` (FM_BF16_*) selects them. Not a public header. */

#define FM_CAT_(a, b) a##b
#define FM_CAT(a, b) FM_CAT_(a, b)
#define FM_FN(name) FM_CAT(name, SUF)

typedef void (*FM_FN(fm_ukr_fn))(ptrdiff_t, const T *, ptrdiff_t, ptrdiff_t, const T *, T *,
                                 ptrdiff_t, int);
typedef void (*FM_FN(fm_thin_t_fn))(ptrdiff_t, const T *, ptrdiff_t, const T *, T *, int);
typedef void (*FM_FN(fm_thin_fn))(ptrdiff_t, ptrdiff_t, const T *, ptrdiff_t, const T *,
                                  T *, ptrdiff_t, ptrdiff_t, int);

/* Packing into panels of w lanes, k-major, with zero lanes past the edge: lanes
   [r0, r0+rc) and k values [p0, p0+kc) of an operand whose element (r, k) is at
   X[k * ld + r] (contiguous along r: a transposed A, a row-major B), or, given
   row pointers rp (fm_gemm_a_rows), at rp[k][r]. Each k reads one run of rc
   values and copies it into the panels side by side. */
FM_CLONE_BODY FM_CLONE_CAT(FM_FN(fm_pack_along_r), _body)(const T *X, ptrdiff_t ld,
                                                           const T *const *rp,
                                                           ptrdiff_t r0, ptrdiff_t rc,
                                                           ptrdiff_t p0, ptrdiff_t kc,
                                                           int w, T *restrict dst)
{
    ptrdiff_t full = rc / w * w, rest = rc - full;
    for (ptrdiff_t k = 0; k < kc; k++) {
        const T *src = (rp != NULL ? rp[p0 + k] : X + (p0 + k) * ld) + r0;
        T *d = dst + k * w;
        /* Copies of a constant size, which compile to a few vector moves. */
#define FM_COPY_RUNS(W)                                                                \
    for (ptrdiff_t r = 0; r < full; r += (W), d += (W) * kc)                           \
        memcpy(d, src + r, (W) * sizeof(T))
        if (w == 8)
            FM_COPY_RUNS(8);
        else if (w == 16)
            FM_COPY_RUNS(16);
        else if (w == 32)
            FM_COPY_RUNS(32);
        else
            FM_COPY_RUNS(w);
#undef FM_COPY_RUNS
        if (rest) {
            memcpy(d, src + full, (size_t)rest * sizeof(T));
            memset(d + rest, 0, (size_t)(w - rest) * sizeof(T));
        }
    }
}

FM_LEVEL_CLONES(FM_FN(fm_pack_along_r),
                (const T *X, ptrdiff_t ld, const T *const *rp, ptrdiff_t r0, ptrdiff_t rc,
                 ptrdiff_t p0, ptrdiff_t kc, int w, T *restrict dst),
                (X, ld, rp, r0, rc, p0, kc, w, dst))

/* The same for an operand whose element (r, k) is at X[r * ld + k] (contiguous
   along k: a row-major A, a transposed B), or at rp[r][k]. */
static void FM_FN(fm_pack_along_k)(const T *X, ptrdiff_t ld, const T *const *rp,
                                   ptrdiff_t r0, ptrdiff_t rc, ptrdiff_t p0, ptrdiff_t kc,
                                   int w, T *restrict dst)
{
    for (ptrdiff_t pr = 0; pr < rc; pr += w, dst += w * kc) {
        ptrdiff_t m = fm_min(w, rc - pr);
        const T *src = X + (r0 + pr) * ld + p0;
        for (ptrdiff_t k = 0; k < kc; k++) {
            for (ptrdiff_t i = 0; i < m; i++)
                dst[k * w + i] = rp != NULL ? rp[r0 + pr + i][p0 + k] : src[i * ld + k];
            for (ptrdiff_t i = m; i < w; i++)
                dst[k * w + i] = 0;
        }
    }
}

#define FM_ONE 1
#include "act_impl.h"
#undef FM_ONE

/* The epilogue on the m x n tile of C whose top-left element is (i0, j0): one
   loop per activation (the case list of fm_ids.h), in which fm_act folds to the
   activation's own expression and vectorizes. */
#define FM_EPI_BIAS_ACT_CASE(id, name)                                                 \
    case id:                                                                           \
        for (ptrdiff_t i = 0; i < m; i++) {                                            \
            T *c = C + (i0 + i) * ldc + j0;                                            \
            for (ptrdiff_t j = 0; j < n; j++)                                          \
                c[j] = FM_FN(fm_act)(id, c[j] + bias[j]);                              \
        }                                                                              \
        break;
#define FM_EPI_MUL_DACT_CASE(id, name)                                                 \
    case id:                                                                           \
        for (ptrdiff_t i = 0; i < m; i++) {                                            \
            T *c = C + (i0 + i) * ldc + j0;                                            \
            const T *a = (const T *)ep->act_out + (i0 + i) * ep->ldo + j0;             \
            for (ptrdiff_t j = 0; j < n; j++)                                          \
                c[j] = FM_FN(fm_act_grad)(id, a[j], c[j]);                             \
        }                                                                              \
        break;

FM_CLONE_BODY FM_CLONE_CAT(FM_FN(fm_epilogue_tile), _body)(const fm_epilogue *ep, T *C,
                                                           ptrdiff_t ldc, ptrdiff_t i0,
                                                           ptrdiff_t j0, ptrdiff_t m,
                                                           ptrdiff_t n)
{
    if (ep->kind == FM_EPI_BIAS_ACT) {
        const T *bias = (const T *)ep->bias + j0;
        switch (ep->act) {
            FM_ACTIVATION_LIST(FM_EPI_BIAS_ACT_CASE)
        }
    } else if (ep->kind == FM_EPI_MUL_DACT && ep->act != FM_LINEAR) {
        switch (ep->act) {
            FM_ACTIVATION_LIST(FM_EPI_MUL_DACT_CASE)
        }
    } else if (ep->kind == FM_EPI_HOOK) {
        ep->hook(ep->ctx, i0, j0, m, n, C + i0 * ldc + j0, ldc);
    }
}

FM_LEVEL_CLONES(FM_FN(fm_epilogue_tile),
                (const fm_epilogue *ep, T *C, ptrdiff_t ldc, ptrdiff_t i0, ptrdiff_t j0,
                 ptrdiff_t m, ptrdiff_t n),
                (ep, C, ldc, i0, j0, m, n))

#undef FM_EPI_BIAS_ACT_CASE
#undef FM_EPI_MUL_DACT_CASE

/* s[l] for l < n, increased by src[k * ld + l] for k = 0..K-1 in turn (set to zero
   first where `first`): the column sums fm_gemm_b_sums promises, k ascending. */
FM_CLONE_BODY FM_FN(fm_add_columns)(const T *src, ptrdiff_t ld, ptrdiff_t K, ptrdiff_t n,
                                    int first, T *restrict s)
{
    if (first)
        for (ptrdiff_t l = 0; l < n; l++)
            s[l] = 0;
    for (ptrdiff_t k = 0; k < K; k++)
        for (ptrdiff_t l = 0; l < n; l++)
            s[l] += src[k * ld + l];
}

/* The same for the columns j in [lo, hi) of a block of B packed in panels of w lanes
   (kc values of k, panel p at bp + p * w * kc, its first column j0), into sums[j]. */
FM_CLONE_BODY FM_CLONE_CAT(FM_FN(fm_sum_panels), _body)(const T *bp, ptrdiff_t kc, int w,
                                                         ptrdiff_t j0, ptrdiff_t lo,
                                                         ptrdiff_t hi, int first,
                                                         T *restrict sums)
{
    /* A whole panel of the kernels' widths is summed in registers. */
#define FM_SUM_PANEL(W)                                                                \
    {                                                                                  \
        T acc[W];                                                                      \
        for (int l = 0; l < (W); l++)                                                  \
            acc[l] = first ? 0 : s[l];                                                 \
        for (ptrdiff_t k = 0; k < kc; k++)                                             \
            for (int l = 0; l < (W); l++)                                              \
                acc[l] += src[k * (W) + l];                                            \
        for (int l = 0; l < (W); l++)                                                  \
            s[l] = acc[l];                                                             \
    }
    for (ptrdiff_t j = lo; j < hi;) {
        ptrdiff_t p = (j - j0) / w, l0 = (j - j0) % w, n = fm_min(w - l0, hi - j);
        const T *src = bp + p * w * kc + l0;
        T *s = sums + j;
        if (n == 32 && w == 32)
            FM_SUM_PANEL(32)
        else if (n == 16 && w == 16)
            FM_SUM_PANEL(16)
        else if (n == 8 && w == 8)
            FM_SUM_PANEL(8)
        else
            FM_FN(fm_add_columns)(src, w, kc, n, first, s);
        j += n;
    }
#undef FM_SUM_PANEL
}

FM_LEVEL_CLONES(FM_FN(fm_sum_panels),
                (const T *bp, ptrdiff_t kc, int w, ptrdiff_t j0, ptrdiff_t lo, ptrdiff_t hi,
                 int first, T *restrict sums),
                (bp, kc, w, j0, lo, hi, first, sums))

/* The same for columns [lo, hi) of a row-major B (K x N) read where it lies. */
FM_CLONE_BODY FM_CLONE_CAT(FM_FN(fm_sum_columns), _body)(const T *B, ptrdiff_t ldb,
                                                          ptrdiff_t K, ptrdiff_t lo,
                                                          ptrdiff_t hi, int first,
                                                          T *restrict sums)
{
    FM_FN(fm_add_columns)(B + lo, ldb, K, hi - lo, first, sums + lo);
}

FM_LEVEL_CLONES(FM_FN(fm_sum_columns),
                (const T *B, ptrdiff_t ldb, ptrdiff_t K, ptrdiff_t lo, ptrdiff_t hi,
                 int first, T *restrict sums),
                (B, ldb, K, lo, hi, first, sums))

void FM_FN(fm_gemm_column_sums)(const T *B, ptrdiff_t ldb, ptrdiff_t K, ptrdiff_t lo,
                                ptrdiff_t hi, T *sums)
{
    FM_FN(fm_sum_columns)(B, ldb, K, lo, hi, 1, sums);
}

/* Packing of rows [r0, r0+rc) and k values [p0, p0+kc) of op(A) (B: columns, with
   its_b) into panels of w, for the kind of product `bf`; an A whose rows lie
   apart is given by its row pointers rp (of bfloat16 products, only the native
   packing's), else rp is NULL. */
static void FM_FN(fm_pack)(int bf, int its_b, int trans, const T *X, ptrdiff_t ld,
                           const T *const *rp, ptrdiff_t r0, ptrdiff_t rc, ptrdiff_t p0,
                           ptrdiff_t kc, ptrdiff_t K, int w, T *restrict dst)
{
    /* op(A)(r, k) and op(B)(k, r): contiguous along k for a row-major A and a
       transposed B, else along r. */
    int along_k = its_b ? trans : !trans;
#ifdef FM_PACK_BF16
    if (bf) {
        /* Element (r, k) as X[r * s_r + k * s_k]. */
        FM_PACK_BF16(bf, along_k, X, rp, ld, r0, rc, p0, kc, K, w, dst);
        return;
    }
#else
    (void)bf; (void)K;
#endif
    if (along_k) {
#ifdef FM_PACK_ALONG_K_FAST
        if (rp == NULL && FM_PACK_ALONG_K_FAST(X, ld, r0, rc, p0, kc, w, dst))
            return;
#endif
        FM_FN(fm_pack_along_k)(X, ld, rp, r0, rc, p0, kc, w, dst);
    } else {
        FM_FN(fm_pack_along_r)(X, ld, rp, r0, rc, p0, kc, w, dst);
    }
}

/* One thread's share: rows [i0, i1) and columns [j0, j1) of C, or, with ct, of
   C's transpose: the tile (i, j) is then element (j, i) of the matrix at C, and
   the epilogue is applied to it in C's own orientation. K is the depth of the
   packed panels, Ks that of the operands (K rounded up to even for bfloat16).
   With in_place, A's whole panels are read where they lie instead of packed
   (gemm.c's fm_a_in_place says when); with b_panels, B is already in panels
   (gemm.h's fm_gemm_b_panels) and read where it lies. Given ar, the rows of A (as
   stored) lie where its pointers say (gemm.h's fm_gemm_a_rows), and A and lda
   are not read. Given sums, op(B)'s columns [s_lo, s_hi) are summed into it as B
   is packed (gemm.h's fm_gemm_b_sums). */
static int FM_FN(fm_gemm_part)(int mr, int nr, FM_FN(fm_ukr_fn) ukr,
                               FM_FN(fm_ukr_fn) ukr_rows, int bf, int ta,
                               int tb, int ct, int in_place, int b_panels, int stream,
                               ptrdiff_t i0,
                               ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1, ptrdiff_t K,
                               ptrdiff_t Ks,
                               ptrdiff_t kcb, ptrdiff_t mcb, ptrdiff_t ncb, const T *A,
                               ptrdiff_t lda, const T *const *ar,
                               const T *B, ptrdiff_t ldb, T *C, ptrdiff_t ldc,
                               const fm_epilogue *ep, T *sums, ptrdiff_t s_lo,
                               ptrdiff_t s_hi)
{
    T tile[FM_MAX_MR * FM_MAX_NR] __attribute__((aligned(64)));
    /* Elementwise epilogues run on each finished tile, in cache; a hook on each
       finished block of C, which it may take from the scratch (own_c). */
    int per_tile = ep != NULL && ep->kind != FM_EPI_NONE && ep->kind != FM_EPI_HOOK;
    int per_block = ep != NULL && ep->kind == FM_EPI_HOOK;
    int own_c = per_block && ep->c_unused && !ct && K <= kcb;
    /* C's transpose summed over several blocks of k, in one block of rows: summed
       in the scratch, in its own orientation, and written across C once, at the
       end, instead of read and written across C element by element for every
       block of k (a weight gradient of 10 classes at a large batch). */
    int ct_sum = ct && K > kcb && i1 - i0 <= mcb;
    size_t a_elems = fm_scratch_block(mcb, kcb), b_elems = (size_t)kcb * ncb;
    size_t c_elems = own_c || ct_sum ? fm_scratch_block(mcb, ncb) : 0;
    /* A hardware bfloat16 panel holds a pair of k values per element. */
    ptrdiff_t kdiv = bf >= FM_BF16_HARDWARE ? 2 : 1;
    /* With several blocks of k and of rows, B is packed for all of K first where
       the scratch holds it, and each block of rows then takes every block of k in
       turn, its block of C staying in cache; else each block of k is packed and
       taken by every block of rows in turn. (A forward product at a large batch
       read and wrote all of C, in memory, once per block of k.) Each element is
       summed in the same order either way. */
    ptrdiff_t nkb = (K + kcb - 1) / kcb, nib = (i1 - i0 + mcb - 1) / mcb;
    int all_k = !b_panels && nkb > 1 && nib > 1 && fm_all_k_on &&
                a_elems + c_elems + (size_t)(K * ncb / kdiv) <= fm_scratch_reserved();
    if (all_k)
        b_elems = (size_t)(K * ncb / kdiv);
    T *Ap = fm_scratch((a_elems + c_elems + b_elems) * sizeof(T));
    T *Bp, *Cs;
    /* Element (r, k) of op(A) at A[r * a_r + k * a_k]. */
    const ptrdiff_t a_r = ta ? 1 : lda, a_k = ta ? lda : 1;
    unsigned csr;
    if (Ap == NULL)
        return -1;
    Cs = Ap + a_elems;
    Bp = Cs + c_elems;
    csr = fm_fp_enter(bf);
    for (ptrdiff_t jc = j0; jc < j1; jc += ncb) {
        ptrdiff_t nc = fm_min(ncb, j1 - jc);
        for (ptrdiff_t blk = 0; blk < nkb * nib; blk++) {
            ptrdiff_t pc = (all_k ? blk % nkb : blk / nib) * kcb;
            ptrdiff_t ic = i0 + (all_k ? blk / nkb : blk % nib) * mcb;
            ptrdiff_t kc = fm_min(kcb, K - pc);
            int first = pc == 0, last = pc + kc >= K;
            /* This block of k's packed B. */
            T *Bk = all_k ? Bp + pc * ncb / kdiv : Bp;
            /* Packed at its first use, with this thread's columns of B's sums
               (fm_gemm_b_sums) in it. */
            if (ic == i0) {
                ptrdiff_t s0 = fm_max(s_lo, jc), s1 = fm_min(s_hi, jc + nc);
                if (!b_panels)
                    FM_FN(fm_pack)(bf, 1, tb, B, ldb, NULL, jc, nc, pc, kc, Ks, nr, Bk);
                if (sums != NULL && s0 < s1) {
                    if (!bf) {
                        FM_FN(fm_sum_panels)(Bk, kc, nr, jc, s0, s1, first, sums);
                    } else {
                        /* A bfloat16 panel holds the rounded values: the block's
                           rows are summed where they lie, in cache after the
                           packing, in the caller's floating-point mode. */
                        fm_fp_leave(bf, csr);
                        FM_FN(fm_sum_columns)(B + pc * ldb, ldb, fm_min(kc, Ks - pc), s0,
                                              s1, first, sums);
                        fm_fp_enter(bf);
                    }
                }
            }
            {
                ptrdiff_t mc = fm_min(mcb, i1 - ic);
                /* Where this block of C is summed: C itself, or the scratch, in rows
                   or in panels of nr columns (for hook_panels). */
                T *Cb = own_c || ct_sum ? Cs : C + ic * ldc + jc;
                ptrdiff_t ldb = own_c || ct_sum ? ncb : ldc;
                int blk_panels = own_c && ep->hook_panels != NULL && nc % nr == 0;
                if (blk_panels)
                    ldb = nr;
                /* A's whole panels are read where they lie (in_place), or packed;
                   a last panel of fewer than mr rows is always packed. */
                ptrdiff_t whole = in_place ? mc / mr * mr : 0;
                if (whole < mc)
                    FM_FN(fm_pack)(bf, 0, ta, A, lda, ar, ic + whole, mc - whole, pc, kc,
                                   Ks, mr, Ap + whole * kc / kdiv);
                /* The tiles, a column of panels of B at a time (its panel stays in
                   the first-level cache over the panels of A), or, where the block
                   of B fits there whole, a strip of mr rows at a time: C and the
                   epilogue's operand are then read and written row after row, and
                   the epilogue runs once per strip. (A shallow product, an input
                   gradient from 10 classes, spent most of its time on the tiles'
                   epilogues, each reading rows of a few panels' width.) The order
                   of the tiles changes none of their bits. */
                int strips = !ct && (size_t)kc * nc * sizeof(T) <= FM_STRIP_B_BYTES;
                ptrdiff_t njr = (nc + nr - 1) / nr, nir = (mc + mr - 1) / mr;
#ifdef FM_SHALLOW_RELU
                /* (Whole panels of B packed here, one block of k, C itself.) */
                int shallow = strips && first && last && !b_panels && per_tile &&
                              !own_c && !ct_sum && nc % nr == 0 &&
                              ep->kind == FM_EPI_MUL_DACT && ep->act == FM_RELU;
#endif
                for (ptrdiff_t t = 0; t < njr * nir; t++) {
                    ptrdiff_t jr = (strips ? t % njr : t / nir) * nr;
                    ptrdiff_t ir = (strips ? t / njr : t % nir) * mr;
                    ptrdiff_t n = fm_min(nr, nc - jr), m = fm_min(mr, mc - ir);
                    const T *ap = Ap + ir * kc / kdiv, *bp = Bk + jr * kc / kdiv;
                    if (b_panels)
                        bp = B + (jc + jr) * K + pc * nr;
                    /* Element (i, k) of A's panel at ap[i * ai + k * ak]. */
                    ptrdiff_t ai = 1, ak = mr;
                    FM_FN(fm_ukr_fn) kernel = ukr;
                    if (ir < whole && ar != NULL) {
                        /* The row pointers, and the offset along each row. */
                        ap = (const T *)(const void *)(ar + (ta ? pc : ic + ir));
                        ai = ta ? FM_A_KROWS : FM_A_ROWS;
                        ak = ta ? ic + ir : pc;
                        kernel = ukr_rows;
                    } else if (ir < whole) {
                        ap = A + (ic + ir) * a_r + pc * a_k;
                        ai = a_r;
                        ak = a_k;
                    }
#ifdef FM_SHALLOW_RELU
                    /* A whole strip of a shallow product with relu's derivative, at
                       its start: the strip's kernel, where the level has one. */
                    if (shallow && jr == 0 && m == mr && kernel == ukr &&
                        FM_SHALLOW_RELU(mr, nr, bf, csr, kc, ap, ai, ak, bp, njr,
                                        C + (ic + ir) * ldc + jc, ldc,
                                        (const T *)ep->act_out + (ic + ir) * ep->ldo + jc,
                                        ep->ldo, stream)) {
                        t += njr - 1;
                        continue;
                    }
#endif
                    if (ct && !ct_sum) {
                        /* The tile of C's transpose, read and written across C. */
                        T *c = C + (jc + jr) * ldc + ic + ir;
                        if (!first)
                            for (ptrdiff_t i = 0; i < m; i++)
                                for (ptrdiff_t j = 0; j < n; j++)
                                    tile[i * nr + j] = c[j * ldc + i];
                        ukr(kc, ap, ai, ak, bp, tile, nr, !first);
                        for (ptrdiff_t i = 0; i < m; i++)
                            for (ptrdiff_t j = 0; j < n; j++)
                                c[j * ldc + i] = tile[i * nr + j];
                        if (last && per_tile) {
                            fm_fp_leave(bf, csr);
                            FM_FN(fm_epilogue_tile)(ep, C, ldc, jc + jr, ic + ir, n, m);
                            fm_fp_enter(bf);
                        }
                        continue;
                    }
                    T *c = Cb + ir * ldb + (blk_panels ? jr * mc : jr);
                    if (m == mr && n == nr) {
                        kernel(kc, ap, ai, ak, bp, c, ldb, !first);
                    } else {
                        /* Edge tile: the same kernel on a full-size copy. */
                        if (!first)
                            for (ptrdiff_t i = 0; i < m; i++)
                                memcpy(tile + i * nr, c + i * ldb, n * sizeof(T));
                        kernel(kc, ap, ai, ak, bp, tile, nr, !first);
                        for (ptrdiff_t i = 0; i < m; i++)
                            memcpy(c + i * ldb, tile + i * nr, n * sizeof(T));
                    }
                    if (last && per_tile && !ct_sum && (!strips || jr + n >= nc)) {
                        fm_fp_leave(bf, csr);
                        if (strips)
                            FM_FN(fm_epilogue_tile)(ep, C, ldc, ic + ir, jc, m, nc);
                        else
                            FM_FN(fm_epilogue_tile)(ep, C, ldc, ic + ir, jc + jr, m, n);
                        fm_fp_enter(bf);
                    }
                }
                if (last && ct_sum) {
                    for (ptrdiff_t i = 0; i < mc; i++)
                        for (ptrdiff_t j = 0; j < nc; j++)
                            C[(jc + j) * ldc + ic + i] = Cb[i * ldb + j];
                    if (per_tile || per_block) {
                        fm_fp_leave(bf, csr);
                        FM_FN(fm_epilogue_tile)(ep, C, ldc, jc, ic, nc, mc);
                        fm_fp_enter(bf);
                    }
                    continue;
                }
                if (last && per_block) {
                    /* A hook runs once per finished block (long rows, few calls). */
                    fm_fp_leave(bf, csr);
                    if (ct)
                        FM_FN(fm_epilogue_tile)(ep, C, ldc, jc, ic, nc, mc);
                    else if (blk_panels)
                        ep->hook_panels(ep->ctx, ic, jc, mc, nc, Cb);
                    else
                        ep->hook(ep->ctx, ic, jc, mc, nc, Cb, ldb);
                    fm_fp_enter(bf);
                }
            }
        }
    }
    fm_fp_leave(bf, csr);
    return 0;
}

/* A thin product (N <= FM_THIN_LANES, a row-major A) with the level's thin
   kernel: the threads split C's rows in groups of r; each thread packs op(B)'s
   rows, zero-padded to the lanes, all of them for a large A (else a block of k at
   a time), and runs the kernel over its groups, each group through the blocks of
   k packed (the blocks of the general path: the same sums), reading A in place;
   the epilogue runs on each group as its last block is added. This is thread t's
   share on a team of `team`. (Block by block over all the groups, A was read in a
   pass per block: at 8192 rows of 512 that took 1.33x the time.) (A transposed A,
   a weight gradient's, would be read a row of A per k for every group: at batch
   8192 that took 1.11x the general path's time.) */
static int FM_FN(fm_gemm_thin)(FM_FN(fm_thin_fn) thin, int r, int tb, ptrdiff_t M,
                               ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda,
                               const T *B, ptrdiff_t ldb, T *C, ptrdiff_t ldc,
                               const fm_epilogue *ep, int t, int team)
{
    ptrdiff_t kcb = fm_balanced(K, FM_KC, 4), groups = (M + r - 1) / r;
    /* The k values packed at once: all of them where A is larger than the scratch
       budget (an A that small stays in cache from one block's pass to the next)
       and they fit in the scratch; else a block. */
    ptrdiff_t span = (size_t)M * K > (size_t)FM_KC * FM_NC &&
                             (size_t)K * FM_THIN_LANES <= (size_t)FM_KC * FM_NC
                         ? K
                         : kcb;
    T *bp = fm_scratch((size_t)span * FM_THIN_LANES * sizeof(T));
    ptrdiff_t lo = groups * t / team, hi = groups * (t + 1) / team;
    if (bp == NULL)
        return -1;
    for (ptrdiff_t ps = 0; lo < hi && ps < K; ps += span) {
        ptrdiff_t sk = fm_min(span, K - ps);
        memset(bp, 0, (size_t)sk * FM_THIN_LANES * sizeof(T));
        if (tb)
            for (ptrdiff_t j = 0; j < N; j++)
                for (ptrdiff_t k = 0; k < sk; k++)
                    bp[k * FM_THIN_LANES + j] = B[j * ldb + ps + k];
        else
            for (ptrdiff_t k = 0; k < sk; k++)
                for (ptrdiff_t j = 0; j < N; j++)
                    bp[k * FM_THIN_LANES + j] = B[(ps + k) * ldb + j];
        for (ptrdiff_t g = lo; g < hi; g++) {
            ptrdiff_t i0 = g * r, rows = fm_min(r, M - i0);
            for (ptrdiff_t pc = ps; pc < ps + sk; pc += kcb) {
                ptrdiff_t kc = fm_min(kcb, K - pc);
                thin(rows, kc, A + i0 * lda + pc, lda, bp + (pc - ps) * FM_THIN_LANES,
                     C + i0 * ldc, ldc, N, pc > 0);
                if (pc + kc >= K && ep != NULL)  /* any kind, the hook's included */
                    FM_FN(fm_epilogue_tile)(ep, C, ldc, i0, 0, rows, N);
            }
        }
    }
    return 0;
}

/* A thin weight gradient (a transposed A, a row-major B, N <= FM_THIN_T_ROWS) with
   the level's kernel: the threads split C's rows in runs of w; each thread packs B
   (all of it, each row zero-padded to FM_THIN_T_ROWS) and sums each of its runs
   over the blocks of k (those of the general path: the same sums) in a buffer in
   C's transposed orientation, then writes it into C and runs the epilogue or hook
   on it. The last thread also takes the rows past the whole runs, copied a block of
   k at a time into a run zero-padded to w. Instead of packing A^T (a layer's
   activations, 512 x 8192 at a large batch) for 10 multiply-adds per value, A's
   rows are read in place. A block of k is taken for all the thread's runs before
   the next (fm_thin_t_elems sizes their buffers): at batch 8192 that took 0.74-0.77x
   the time of each run through all of k in turn for float at AVX-512, 0.66-0.85x at
   AVX2 and for double, and 0.91-1.0x at 512 to 2048 rows. This is thread t's share
   on a team of `team`. */
static int FM_FN(fm_gemm_thin_t)(FM_FN(fm_thin_t_fn) thin_t, int w, ptrdiff_t M,
                                 ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda,
                                 const T *B, ptrdiff_t ldb, T *C, ptrdiff_t ldc,
                                 const fm_epilogue *ep, int t, int team)
{
    ptrdiff_t kcb = fm_balanced(K, FM_KC, 4), runs = (M + w - 1) / w, whole = M / w;
    ptrdiff_t lo = whole * t / team, hi = t == team - 1 ? runs : whole * (t + 1) / team;
    const ptrdiff_t per_run = (ptrdiff_t)FM_THIN_T_ROWS * w;
    /* The runs' sums first (aligned as the scratch is), then B's rows, then the edge. */
    T *acc = fm_scratch(fm_thin_t_elems(M, K, w) * sizeof(T));
    T *bp = acc + runs * per_run, *edge = bp + K * FM_THIN_T_ROWS;
    if (acc == NULL)
        return -1;
    if (lo < hi)
        for (ptrdiff_t k = 0; k < K; k++)
            for (ptrdiff_t j = 0; j < FM_THIN_T_ROWS; j++)
                bp[k * FM_THIN_T_ROWS + j] = j < N ? B[k * ldb + j] : 0;
    for (ptrdiff_t pc = 0; pc < K; pc += kcb) {
        ptrdiff_t kc = fm_min(kcb, K - pc);
        for (ptrdiff_t run = lo; run < hi; run++) {
            ptrdiff_t r0 = run * w, m = fm_min(w, M - r0);
            const T *a = A + pc * lda + r0;
            ptrdiff_t ld = lda;
            if (m < w) {
                for (ptrdiff_t k = 0; k < kc; k++)
                    for (ptrdiff_t i = 0; i < w; i++)
                        edge[k * w + i] = i < m ? a[k * lda + i] : 0;
                a = edge;
                ld = w;
            }
            thin_t(kc, a, ld, bp + pc * FM_THIN_T_ROWS, acc + (run - lo) * per_run, pc > 0);
        }
    }
    for (ptrdiff_t run = lo; run < hi; run++) {
        ptrdiff_t r0 = run * w, m = fm_min(w, M - r0);
        const T *sums = acc + (run - lo) * per_run;
        for (ptrdiff_t i = 0; i < m; i++)
            for (ptrdiff_t j = 0; j < N; j++)
                C[(r0 + i) * ldc + j] = sums[j * w + i];
        if (ep != NULL)
            FM_FN(fm_epilogue_tile)(ep, C, ldc, r0, 0, m, N);
    }
    return 0;
}

/* Prepares the product (gemm.h's fm_gemm_plan) for the level's kernels: which path
   it takes, on how many threads, and each thread's share of the tiles. */
static void FM_FN(fm_gemm_plan_for)(fm_gemm_plan *pl, int mr, int nr, FM_FN(fm_ukr_fn) ukr,
                                    FM_FN(fm_thin_fn) thin, int thin_r,
                                    FM_FN(fm_thin_t_fn) thin_t, int thin_t_w, int bf,
                                    int ta, int tb, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                    const T *A, ptrdiff_t lda, const T *B, ptrdiff_t ldb,
                                    T *C, ptrdiff_t ldc, const fm_epilogue *ep)
{
    ptrdiff_t mt, nt;
    *pl = (fm_gemm_plan){.dbl = sizeof(T) == sizeof(double), .path = FM_PATH_NONE,
                         .mr = mr, .nr = nr, .thin_r = thin_r, .thin_t_w = thin_t_w,
                         .bf = bf, .ta = ta, .tb = tb, .threads = 1,
                         .ukr = (void (*)(void))ukr, .thin = (void (*)(void))thin,
                         .thin_t = (void (*)(void))thin_t, .M = M, .N = N, .K = K,
                         .lda = lda, .ldb = ldb, .ldc = ldc, .A = A, .B = B, .C = C,
                         .ep = ep};
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        pl->path = FM_PATH_ZERO;
        return;
    }
    pl->threads = fm_threads_for(M, N, K);
    if (thin != NULL && !bf && !ta && N <= FM_THIN_LANES && M >= thin_r) {
        pl->path = FM_PATH_THIN;
        return;
    }
    /* (All of B, the runs' sums and a block of A's rows: within the reserved scratch,
       so that a step's fused update cannot fail half-way; for 512 rows of C, up to a
       depth of 43,000 or so.) */
    if (thin_t != NULL && !bf && ta && !tb && N <= FM_THIN_T_ROWS && M >= thin_t_w &&
        fm_thin_t_elems(M, K, thin_t_w) <= fm_scratch_reserved()) {
        pl->path = FM_PATH_THIN_T;
        return;
    }
    pl->path = FM_PATH_GENERAL;
    /* A thin C (few columns, many rows) is computed as its transpose,
       C^T = op(B)^T op(A)^T, when that wastes fewer of the microkernel's lanes:
       the same products summed in the same order (a fused multiply-add does not
       depend on its factors' order), so the bits are the same. */
    pl->ct = fm_lane_waste(N, nr) > fm_lane_waste(M, mr) && N < nr && M >= 4 * nr;
    if (pl->ct) {
        pl->A = B, pl->lda = ldb, pl->ta = !tb;
        pl->B = A, pl->ldb = lda, pl->tb = !ta;
        pl->M = N, pl->N = M;
        M = pl->M, N = pl->N;
    }
    /* kcb depends on K alone: the summation order is fixed. bfloat16 products take
       k in pairs, a zero pair member past an odd K. */
    pl->Kp = bf ? K + (K & 1) : K;
    pl->kcb = fm_balanced(pl->Kp, FM_KC, 4);
    pl->a_in_place = !bf && fm_a_in_place(pl->ta, K, pl->lda, sizeof(T));
    pl->mcb = fm_balanced(M, FM_MC, mr);
    pl->ncb = fm_balanced(N, FM_NC, nr);
    mt = (M + mr - 1) / mr;
    nt = (N + nr - 1) / nr;
    /* Each thread packs its share of the operand whose rows or columns are split,
       and all of the other: where both split evenly, split the one that makes the
       smaller sum (the longer of M and N). The split changes no sum. */
    pl->split_n = nt >= mt || nt >= 2 * pl->threads;
    if (mt >= 2 * pl->threads && nt >= 2 * pl->threads)
        pl->split_n = N >= M;
    pl->tiles = pl->split_n ? nt : mt;
    /* Each thread's run of the tiles, by the shares this shape had (see
       fm_share_weights). */
    fm_share *slot;
    pl->kind = pl->split_n | pl->ct << 1 | pl->ta << 2 | pl->tb << 3 | bf << 4;
    const double *w = fm_share_weights(M, N, K, pl->kind, pl->threads, &slot);
    pl->slot = slot;
    if (w != NULL) {
        fm_share_starts(w, pl->threads, pl->tiles, pl->start);
        pl->shared = 1;
    }
}

/* Thread t's tiles of a planned product on the general path, on a team of `team`:
   its run by the shares where the team is the plan's, else an even one. Returns 0,
   or -1 when scratch memory could not be allocated. */
static int FM_FN(fm_gemm_general)(fm_gemm_plan *pl, int t, int team, ptrdiff_t s_lo,
                                  ptrdiff_t s_hi)
{
    FM_FN(fm_ukr_fn) ukr = (FM_FN(fm_ukr_fn))pl->ukr;
    ptrdiff_t M = pl->M, N = pl->N, mr = pl->mr, nr = pl->nr, lo, hi;
    int by_shares = pl->shared && team == pl->threads, failed = 0;
    /* How long the thread took, from its own start to its end, for the shares. */
    double t0 = fm_now();
    if (by_shares) {
        lo = pl->start[t];
        hi = pl->start[t + 1];
    } else {
        lo = pl->tiles * t / team;
        hi = pl->tiles * (t + 1) / team;
    }
    /* The run's tiles are columns of C's panels (split_n) or rows of them; the
       other side is whole, and the block along the split side no larger than the
       run. */
    ptrdiff_t i0 = 0, i1 = M, j0 = 0, j1 = N, mcb = pl->mcb, ncb = pl->ncb;
    if (pl->split_n) {
        j0 = lo * nr, j1 = fm_min(hi * nr, N);
        ncb = fm_min(ncb, (hi - lo) * nr);
    } else {
        i0 = lo * mr, i1 = fm_min(hi * mr, M);
        mcb = fm_min(mcb, (hi - lo) * mr);
    }
    if (lo < hi)
        failed = FM_FN(fm_gemm_part)(mr, nr, ukr, (FM_FN(fm_ukr_fn))pl->ukr_rows, pl->bf,
                                     pl->ta, pl->tb, pl->ct,
                                     pl->a_in_place, pl->b_panels,
                                     fm_stream_c(M, N, sizeof(T)), i0, i1, j0, j1, pl->Kp,
                                     pl->K, pl->kcb, mcb, ncb, pl->A, pl->lda,
                                     (const T *const *)pl->a_rows, pl->B, pl->ldb, pl->C,
                                     pl->ldc, pl->ep, pl->b_sums, s_lo, s_hi);
    else if (s_lo < s_hi)
        FM_FN(fm_sum_columns)(pl->B, pl->ldb, pl->K, s_lo, s_hi, 1, pl->b_sums);
    if (by_shares)
        pl->spent[t] = fm_now() - t0;
    return failed;
}

/* Thread t's share of a planned product on a team of `team` (threads past the
   plan's count have none). */
static void FM_FN(fm_gemm_run_for)(fm_gemm_plan *pl, int t, int team)
{
    const T *A = pl->A, *B = pl->B;
    T *C = pl->C;
    const fm_epilogue *ep = pl->ep;
    ptrdiff_t M = pl->M, N = pl->N;
    int failed = 0;
    /* This thread's columns of B's sums (fm_gemm_b_sums), by the caller's team; a
       thread without a share of the product sums them from B itself. */
    ptrdiff_t s_lo = 0, s_hi = 0;
    if (pl->b_sums != NULL)
        fm_team_share(N, 64 / sizeof(T), t, team, &s_lo, &s_hi);
    team = team < pl->threads ? team : pl->threads;
    if (t >= team && s_lo < s_hi)
        FM_FN(fm_sum_columns)(B, pl->ldb, pl->K, s_lo, s_hi, 1, pl->b_sums);
    if (t >= team || pl->path == FM_PATH_NONE)
        return;
    if (t == 0)
        pl->got = team;
    switch (pl->path) {
    case FM_PATH_ZERO:
        if (t != 0)
            return;
        for (ptrdiff_t i = 0; i < M; i++)
            memset(C + i * pl->ldc, 0, N * sizeof(T));
        if (ep != NULL && ep->kind != FM_EPI_NONE)
            FM_FN(fm_epilogue_tile)(ep, C, pl->ldc, 0, 0, M, N);
        return;
    case FM_PATH_THIN:
        failed = FM_FN(fm_gemm_thin)((FM_FN(fm_thin_fn))pl->thin, pl->thin_r, pl->tb, M, N,
                                     pl->K, A, pl->lda, B, pl->ldb, C, pl->ldc, ep, t,
                                     team);
        break;
    case FM_PATH_THIN_T:
        failed = FM_FN(fm_gemm_thin_t)((FM_FN(fm_thin_t_fn))pl->thin_t, pl->thin_t_w, M, N,
                                       pl->K, A, pl->lda, B, pl->ldb, C, pl->ldc, ep, t,
                                       team);
        break;
    default:
        failed = FM_FN(fm_gemm_general)(pl, t, team, s_lo, s_hi);
    }
    if (failed)
        __atomic_store_n(&pl->failed, 1, __ATOMIC_RELAXED);
}

#undef FM_FN
#undef FM_CAT
#undef FM_CAT_
