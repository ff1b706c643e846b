/* The type-generic part of rows.c, included once per type with T, SUF,
   FM_SIGMOID_FN, FM_TANH_FN and FM_SOFTPLUS_FN defined. Not a public header. Literals are
   written as 1.0 where the kernels have always computed in double before
   rounding to T. */

#define FM_CAT_(a, b) a##b
#define FM_CAT(a, b) FM_CAT_(a, b)
#define FM_FN(name) FM_CAT(name, SUF)

static T FM_FN(fm_row_max)(const T *z, ptrdiff_t M)
{
    T mx = z[0];
    for (ptrdiff_t j = 1; j < M; j++)
        if (z[j] > mx)
            mx = z[j];
    return mx;
}

#define FM_ONE 1.0
#include "act_impl.h"
#undef FM_ONE

/* a = softmax(z) for one row, as exp(z - max) over their sum; returns that sum and
   sets *mx to the row's max (logsumexp(z) = mx + log(sum)). */
static T FM_FN(fm_softmax_row)(const T *z, T *a, ptrdiff_t M, T *mx)
{
    T s = 0, r;
    *mx = FM_FN(fm_row_max)(z, M);
    for (ptrdiff_t j = 0; j < M; j++) {
        a[j] = (T)exp(z[j] - *mx);
        s = s + a[j];
    }
    r = 1.0 / s;
    for (ptrdiff_t j = 0; j < M; j++)
        a[j] = a[j] * r;
    return s;
}

static void FM_FN(fm_activate_row)(int act, const T *z, T *a, ptrdiff_t M)
{
    T mx;
    if (act == FM_SOFTMAX) {
        FM_FN(fm_softmax_row)(z, a, M, &mx);
    } else if (act != FM_LINEAR || a != z) {
        for (ptrdiff_t j = 0; j < M; j++)
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

/* Softmax and its cross-entropy for one row: a = softmax(z), g = scale * dloss/dz,
   and the row's loss -sum y log softmax(z). */
static T FM_FN(fm_softmax_cross_entropy_row)(const T *z, T *a, const T *y, T *g,
                                             ptrdiff_t M, T scale)
{
    T mx, s = FM_FN(fm_softmax_row)(z, a, M, &mx), total = 0, sum_y = 0;
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

void FM_FN(fm_activation_forward)(int act, ptrdiff_t n, ptrdiff_t M, const T *z, T *a)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (ptrdiff_t i = 0; i < n; i++)
        FM_FN(fm_activate_row)(act, z + i * M, a + i * M, M);
}

void FM_FN(fm_activation_backward)(int act, ptrdiff_t n, ptrdiff_t M, const T *a, T *g)
{
    if (act == FM_LINEAR)
        return;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (ptrdiff_t i = 0; i < n; i++)
        FM_FN(fm_activation_grad_row)(act, a + i * M, g + i * M, M);
}

void FM_FN(fm_loss_grad)(int loss, int act, ptrdiff_t n, ptrdiff_t M, const T *z, T *a,
                         const T *y, T *g, T *row_loss, double *total, long *hits)
{
    T scale = (T)1 / (T)n, clip = sizeof(T) == sizeof(float) ? 1e-7 : 1e-15, sum = 0;
    long count = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (ptrdiff_t i = 0; i < n; i++) {
        /* Cross-entropy on softmax takes each exponential once. */
        const T *zi = z + i * M, *yi = y + i * M;
        T *ai = a + i * M, *gi = g + i * M;
        if (loss == FM_CROSS_ENTROPY && act == FM_SOFTMAX) {
            row_loss[i] = FM_FN(fm_softmax_cross_entropy_row)(zi, ai, yi, gi, M, scale);
            continue;
        }
        FM_FN(fm_activate_row)(act, zi, ai, M);
        row_loss[i] = FM_FN(fm_loss_row)(loss, act, zi, ai, yi, gi, M, scale, clip);
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        sum = sum + row_loss[i];
        count += FM_FN(fm_hit)(a + i * M, y + i * M, M);
    }
    *total = sum;
    *hits = count;
}

#undef FM_FN
#undef FM_CAT
#undef FM_CAT_
