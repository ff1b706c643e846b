/* The type-generic part of rows.c, included once per type with T, SUF,
   FM_SIGMOID_FN, FM_TANH_FN and FM_SOFTPLUS_FN defined, after fm_exp_row##SUF. Not a
   public header. Literals are written as 1.0 where the kernels have
   always computed in double before rounding to T. */

#define FM_CAT_(a, b) a##b
#define FM_CAT(a, b) FM_CAT_(a, b)
#define FM_FN(name) FM_CAT(name, SUF)

static T FM_FN(fm_row_max)(const T *z, ptrdiff_t M)
{
    T mx = z[0];
    for (ptrdiff_t j = 1; j < M; j++)
        mx = z[j] > mx ? z[j] : mx; /* a select, not a branch */
    return mx;
}

#define FM_ONE 1.0
#include "act_impl.h"
#undef FM_ONE

/* Rows taken at once by the softmax kernels, so that their exponentials run in
   vectors over many values (a row has as few as 10). */
#define FM_ROWS_AT_ONCE FM_ROWS_UNIT

/* a = softmax(z) for `rows` rows (at most FM_ROWS_AT_ONCE), each as exp(z - max)
   over their sum; sets mx[i] to row i's max and s[i] to that sum (logsumexp(z) =
   mx + log(sum)). */
static void FM_FN(fm_softmax_rows)(const T *z, T *a, ptrdiff_t rows, ptrdiff_t M, T *mx,
                                   T *s)
{
    for (ptrdiff_t i = 0; i < rows; i++) {
        mx[i] = FM_FN(fm_row_max)(z + i * M, M);
        for (ptrdiff_t j = 0; j < M; j++)
            a[i * M + j] = z[i * M + j] - mx[i];
    }
    FM_FN(fm_exp_row)(rows * M, a);
    for (ptrdiff_t i = 0; i < rows; i++) {
        T *ai = a + i * M, si = 0, r;
        for (ptrdiff_t j = 0; j < M; j++)
            si = si + ai[j];
        r = 1.0 / si;
        for (ptrdiff_t j = 0; j < M; j++)
            ai[j] = ai[j] * r;
        s[i] = si;
    }
}

/* a = act(z) for `rows` rows (at most FM_ROWS_AT_ONCE); for softmax also each row's
   max and sum in mx and s (fm_softmax_rows). */
static void FM_FN(fm_activate_rows)(int act, const T *z, T *a, ptrdiff_t rows, ptrdiff_t M,
                                    T *mx, T *s)
{
    if (act == FM_SOFTMAX) {
        FM_FN(fm_softmax_rows)(z, a, rows, M, mx, s);
    } else if (act != FM_LINEAR || a != z) {
        for (ptrdiff_t j = 0; j < rows * M; j++)
            a[j] = FM_FN(fm_act)(act, z[j]);
    }
}

static void FM_FN(fm_activation_grad_row)(int act, const T *a, T *g, ptrdiff_t M)
{
    T s;
    if (act == FM_SOFTMAX) {
        /* Jacobian-vector product of softmax: a * (g - <g, a>). */
        s = 0;
        for (ptrdiff_t j = 0; j < M; j++)
            s = s + g[j] * a[j];
        for (ptrdiff_t j = 0; j < M; j++)
            g[j] = a[j] * (g[j] - s);
    } else if (act != FM_LINEAR) {
        for (ptrdiff_t j = 0; j < M; j++)
            g[j] = FM_FN(fm_act_grad)(act, a[j], g[j]);
    }
}

/* Cross-entropy on softmax for one row, given a = softmax(z), its row max mx and
   sum s (fm_softmax_rows): g = scale * dloss/dz, and the row's loss -sum y log
   softmax(z). */
static T FM_FN(fm_softmax_cross_entropy_row)(const T *z, const T *a, const T *y, T *g,
                                             ptrdiff_t M, T scale, T mx, T s)
{
    T total = 0, sum_y = 0;
    T lse = mx + (T)log(s);
    for (ptrdiff_t j = 0; j < M; j++) {
        total = total + y[j] * (lse - z[j]);
        sum_y = sum_y + y[j];
    }
    for (ptrdiff_t j = 0; j < M; j++)
        g[j] = scale * (a[j] * sum_y - y[j]);
    return total;
}

/* The loss of one row of a = act(z) (any pairing but cross-entropy on softmax);
   writes g = scale * dloss/dz. */
static T FM_FN(fm_loss_row)(int loss, int act, const T *z, const T *a, const T *y, T *g,
                            ptrdiff_t M, T scale, T clip)
{
    T total = 0, p;
    if (loss == FM_CROSS_ENTROPY && act == FM_SIGMOID) {
        /* -sum y log sigmoid(z) = sum y softplus(-z) */
        for (ptrdiff_t j = 0; j < M; j++) {
            total = total + y[j] * FM_SOFTPLUS_FN(-z[j]);
            g[j] = scale * y[j] * (a[j] - 1.0);
        }
        return total;
    }
    if (loss == FM_BINARY_CROSS_ENTROPY && act == FM_SIGMOID) {
        /* -sum [y log a + (1 - y) log(1 - a)] = sum softplus(z) - y z */
        for (ptrdiff_t j = 0; j < M; j++) {
            total = total + FM_SOFTPLUS_FN(z[j]) - y[j] * z[j];
            g[j] = scale * (a[j] - y[j]);
        }
        return total;
    }
    if (loss == FM_BINARY_CROSS_ENTROPY) {
        /* Any other output in (0, 1) (softmax): a clipped away from 0 and 1. */
        for (ptrdiff_t j = 0; j < M; j++) {
            p = a[j];
            if (p < clip)
                p = clip;
            else if (p > 1.0 - clip)
                p = 1.0 - clip;
            total = total - y[j] * (T)log(p) - (1.0 - y[j]) * (T)log(1.0 - p);
            g[j] = scale * (-y[j] / p + (1.0 - y[j]) / (1.0 - p));
        }
        FM_FN(fm_activation_grad_row)(act, a, g, M);
        return total;
    }
    /* Mean squared error over the outputs. */
    for (ptrdiff_t j = 0; j < M; j++) {
        p = a[j] - y[j];
        total = total + p * p;
        g[j] = scale * 2.0 * p / (T)M;
    }
    FM_FN(fm_activation_grad_row)(act, a, g, M);
    return total / (T)M;
}

void FM_FN(fm_activation_forward_rows)(int act, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t M,
                                       const T *z, T *a)
{
    for (ptrdiff_t i = i0; i < i1; i += FM_ROWS_AT_ONCE) {
        T mx[FM_ROWS_AT_ONCE], s[FM_ROWS_AT_ONCE];
        FM_FN(fm_activate_rows)(act, z + i * M, a + i * M, fm_min(FM_ROWS_AT_ONCE, i1 - i),
                                M, mx, s);
    }
}

/* rows(act, i0, i1, M, x, y) over n rows, FM_ROWS_AT_ONCE at a time, split
   between the threads, each with the flush setting (gemm.h). */
static void FM_FN(fm_row_blocks)(void (*rows)(int, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                              const T *, T *),
                                 int act, ptrdiff_t n, ptrdiff_t M, const T *x, T *y)
{
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        unsigned csr = fm_flush_enter();
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (ptrdiff_t i = 0; i < n; i += FM_ROWS_AT_ONCE)
            rows(act, i, fm_min(i + FM_ROWS_AT_ONCE, n), M, x, y);
        fm_flush_leave(csr);
    }
}

void FM_FN(fm_activation_forward)(int act, ptrdiff_t n, ptrdiff_t M, const T *z, T *a)
{
    FM_FN(fm_row_blocks)(FM_FN(fm_activation_forward_rows), act, n, M, z, a);
}

void FM_FN(fm_activation_backward_rows)(int act, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t M,
                                        const T *a, T *g)
{
    if (act == FM_LINEAR)
        return;
    for (ptrdiff_t i = i0; i < i1; i++)
        FM_FN(fm_activation_grad_row)(act, a + i * M, g + i * M, M);
}

void FM_FN(fm_activation_backward)(int act, ptrdiff_t n, ptrdiff_t M, const T *a, T *g)
{
    if (act == FM_LINEAR)
        return;
    FM_FN(fm_row_blocks)(FM_FN(fm_activation_backward_rows), act, n, M, a, g);
}

long FM_FN(fm_loss_grad_rows)(int loss, int act, ptrdiff_t n, ptrdiff_t i0, ptrdiff_t i1,
                              ptrdiff_t M, const T *z, T *a, const T *y, T *g, T *row_loss)
{
    T scale = (T)1 / (T)n, clip = sizeof(T) == sizeof(float) ? 1e-7 : 1e-15;
    const T gfloor = sizeof(T) == sizeof(float) ? (T)FM_GRAD_FLOOR_S : (T)FM_GRAD_FLOOR_D;
    long count = 0;
    /* Cross-entropy on softmax takes each exponential once. */
    int ce_softmax = loss == FM_CROSS_ENTROPY && act == FM_SOFTMAX;
    for (ptrdiff_t r0 = i0; r0 < i1; r0 += FM_ROWS_AT_ONCE) {
        ptrdiff_t rows = fm_min(FM_ROWS_AT_ONCE, i1 - r0);
        T mx[FM_ROWS_AT_ONCE], s[FM_ROWS_AT_ONCE];
        FM_FN(fm_activate_rows)(act, z + r0 * M, a + r0 * M, rows, M, mx, s);
        for (ptrdiff_t i = r0; i < r0 + rows; i++) {
            const T *zi = z + i * M, *yi = y + i * M, *ai = a + i * M;
            T *gi = g + i * M;
            row_loss[i] = ce_softmax ? FM_FN(fm_softmax_cross_entropy_row)(
                                           zi, ai, yi, gi, M, scale, mx[i - r0], s[i - r0])
                                     : FM_FN(fm_loss_row)(loss, act, zi, ai, yi, gi, M,
                                                          scale, clip);
            count += FM_FN(fm_hit)(ai, yi, M);
            for (ptrdiff_t j = 0; j < M; j++) /* the gradient floor (update.h) */
                gi[j] = FM_FLUSH(gi[j], T, gfloor);
        }
    }
    return count;
}

double FM_FN(fm_loss_sum)(ptrdiff_t n, const T *row_loss)
{
    /* In sample order, whatever the thread count. */
    T sum = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        sum = sum + row_loss[i];
    return sum;
}

void FM_FN(fm_loss_grad)(int loss, int act, ptrdiff_t n, ptrdiff_t M, const T *z, T *a,
                         const T *y, T *g, T *row_loss, double *total, long *hits)
{
    long count = 0;
    /* A count of hits is exact in any order. */
#ifdef _OPENMP
#pragma omp parallel reduction(+ : count)
#endif
    {
        unsigned csr = fm_flush_enter();
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (ptrdiff_t i0 = 0; i0 < n; i0 += FM_ROWS_AT_ONCE)
            count += FM_FN(fm_loss_grad_rows)(loss, act, n, i0,
                                              fm_min(i0 + FM_ROWS_AT_ONCE, n), M, z, a, y,
                                              g, row_loss);
        fm_flush_leave(csr);
    }
    unsigned csr = fm_flush_enter();
    *total = FM_FN(fm_loss_sum)(n, row_loss);
    fm_flush_leave(csr);
    *hits = count;
}

#undef FM_FN
#undef FM_CAT
#undef FM_CAT_
