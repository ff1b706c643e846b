/* Training by the numerical derivative; see numdiff.h. */
#include "numdiff.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_math.h"
#include "fm_team.h"
#include "gemm.h"

#ifdef _OPENMP
#include <omp.h>
#else
#define omp_get_thread_num() 0
#define omp_get_num_threads() 1
#define omp_get_max_threads() 1
#endif


#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FM_ND_X86 1
#else
#define FM_ND_X86 0
#endif

/* The series below serve changes at most this large... */
#define FM_SMALL 0x1p-10
/* ...and ratios (1 + s) / (1 - s) with |s| at most this large. */
#define FM_SMALL_S 0x1p-9

/* exp(x) - 1 for |x| <= 2^-10: the first dropped term is below 2^-50 / 720 of
   the result. For doubles and for vectors of doubles alike. */
#define FM_EXPM1_SMALL(x)                                                              \
    ((x) * (1.0 + (x) * (0.5 + (x) * (1.0 / 6 + (x) * (1.0 / 24 + (x) * (1.0 / 120))))))

/* log((1 + s) / (1 - s)) = 2 atanh(s) for |s| <= 2^-9, given s2 = s * s: the
   first dropped term is below 2^-72 of the result. */
#define FM_LOG_RATIO_SMALL(s, s2)                                                      \
    (2.0 * (s) * (1.0 + (s2) * (1.0 / 3 + (s2) * (1.0 / 5 + (s2) * (1.0 / 7)))))

/* Coefficients kept per output for the series of y_k (exp(c W2[j,k]) - 1) in c. */
#define FM_NCOEF 5

/* Inputs are taken FM_LANES at a time, in vectors where the compiler has them. */
#if defined(__GNUC__) || defined(__clang__)
#define FM_LANES 4
typedef double fm_vd __attribute__((vector_size(8 * FM_LANES)));
#define FM_LANE(v, l) ((v)[l])
#define FM_INLINE static inline __attribute__((always_inline))
/* a * b + c rounded once, lane by lane, for the portable build (C99 fma(): one
   instruction where the CPU has FMA, exact in software where it has not). */
FM_INLINE fm_vd fm_vfma_lanes(fm_vd a, fm_vd b, fm_vd c)
{
    fm_vd r;
    for (int l = 0; l < FM_LANES; l++)
        r[l] = fma(a[l], b[l], c[l]);
    return r;
}
/* x in every lane (x + (fm_vd){0} would be an addition: -0 + 0 is +0). */
#define fm_splat(x) ((fm_vd){(x), (x), (x), (x)})
#else
#define FM_LANES 1
typedef double fm_vd;
#define FM_LANE(v, l) (v)
#define FM_INLINE static inline
#define fm_vfma_lanes fma
#define fm_splat(x) (x)
#endif

/* The unperturbed point: what every perturbation of one sample starts from. */
typedef struct {
    ptrdiff_t K;
    const double *z2, *y, *t;   /* output logits and activations, targets */
    double h;
} fm_point;

/* One hidden unit j, for perturbations of its pre-activation z1_j. */
typedef struct {
    double a, q, tau;   /* a_j, a_j (1 - a_j), sum_k t_k W2[j, k] */
    const double *w;    /* W2 row j */
    int fast;           /* every change within the series' range */
} fm_unit;




/* softplus(z + c) - softplus(z), given y = sigmoid(z): the change of one output's
   loss when its logit moves by c (less the t c the caller subtracts). */
static double softplus_change(double z, double y, double c)
{
    if (fabs(c) < 0.5)
        return log1p(y * expm1(c));   /* (1 + e^(z+c)) / (1 + e^z) = 1 + y (e^c - 1) */
    return fm_softplus_d(z + c) - fm_softplus_d(z);
}

/* sigmoid(z + d) - sigmoid(z), given a = sigmoid(z) and q = a (1 - a). */
static double sigmoid_change(double a, double q, double d)
{
    double e = expm1(d);
    return isinf(e) ? 1.0 - a : q * e / (1.0 + a * e);
}

/* L(z2_k + cp) - L(z2_k + cm) for one output k. */
static double output_diff(double z, double y, double t, double cp, double cm)
{
    if (fabs(cp) <= FM_SMALL && fabs(cm) <= FM_SMALL) {
        double vp = y * FM_EXPM1_SMALL(cp), vm = y * FM_EXPM1_SMALL(cm);
        double s = (vp - vm) / (2.0 + vp + vm), s2 = s * s;
        if (s2 <= FM_SMALL_S * FM_SMALL_S)
            return FM_LOG_RATIO_SMALL(s, s2) - t * (cp - cm);
    }
    return softplus_change(z, y, cp) - softplus_change(z, y, cm) - t * (cp - cm);
}

/* L - L0 when a_j moves by da. */
static double hidden_change_loss(const fm_point *p, const fm_unit *u, double da)
{
    double s = -da * u->tau;
    for (ptrdiff_t k = 0; k < p->K; k++)
        s += softplus_change(p->z2[k], p->y[k], da * u->w[k]);
    return s;
}

/* L(z1_j + d) - L(z1_j - d) with the C library's functions, for any d. */
static double unit_diff_exact(const fm_point *p, const fm_unit *u, double d)
{
    return hidden_change_loss(p, u, sigmoid_change(u->a, u->q, d)) -
           hidden_change_loss(p, u, sigmoid_change(u->a, u->q, -d));
}

/* Prepare unit j for perturbations of z1_j of at most dmax. cy gets, per output
   k, the coefficients y_k W2[j,k]^n / n! (n = 1..5) of the series of
   y_k (exp(da W2[j,k]) - 1) in da. */
static void unit_setup(const fm_point *p, const double *a, const double *W2, ptrdiff_t j,
                       double dmax, fm_unit *u, double *cy)
{
    const ptrdiff_t K = p->K;
    const double *w = W2 + j * K;
    double tau = 0.0, wmax = 0.0;
    u->a = a[j];
    u->q = a[j] * (1.0 - a[j]);
    u->w = w;
    for (ptrdiff_t k = 0; k < K; k++) {
        double f = p->y[k];
        tau += p->t[k] * w[k];
        wmax = fmax(wmax, fabs(w[k]));
        for (int n = 0; n < FM_NCOEF; n++) {
            f *= w[k] / (n + 1);
            cy[k * FM_NCOEF + n] = f;
        }
    }
    u->tau = tau;
    /* The change of a_j grows with |d|, so the largest d bounds every change. */
    double da = fmax(fabs(sigmoid_change(u->a, u->q, dmax)),
                     fabs(sigmoid_change(u->a, u->q, -dmax)));
    u->fast = dmax <= FM_SMALL && da * wmax <= FM_SMALL;
}

/* The two series on vectors, by Horner's rule with the including level's FM_VFMA. */
#define FM_VEXPM1_SMALL(x)                                                             \
    ((x) * FM_VFMA((x), FM_VFMA((x), FM_VFMA((x), FM_VFMA((x), fm_splat(1.0 / 120),      \
                                                           fm_splat(1.0 / 24)),          \
                                             fm_splat(1.0 / 6)),                         \
                               fm_splat(0.5)),                                           \
                   fm_splat(1.0)))
#define FM_VLOG_RATIO_SMALL(s, s2)                                                     \
    (2.0 * (s) * FM_VFMA((s2), FM_VFMA((s2), FM_VFMA((s2), fm_splat(1.0 / 7),           \
                                                     fm_splat(1.0 / 5)),                 \
                                       fm_splat(1.0 / 3)),                               \
                         fm_splat(1.0)))

/* unit_gradient and step_dot2, once per instruction set, each with its own fused
   multiply-add FM_VFMA, so that every level computes the same expression. */
#define FM_ND_NAME(name) name##_generic
#define FM_ND_ATTR
#define FM_VFMA fm_vfma_lanes
#include "numdiff_impl.h"
#undef FM_ND_NAME
#undef FM_ND_ATTR
#undef FM_VFMA

#if FM_ND_X86
#include <immintrin.h>
#define FM_ND_NAME(name) name##_avx2
#define FM_ND_ATTR __attribute__((target("avx2,fma")))
#define FM_VFMA(a, b, c) ((fm_vd)_mm256_fmadd_pd((a), (b), (c)))
#include "numdiff_impl.h"
#undef FM_ND_NAME
#undef FM_ND_ATTR
#undef FM_VFMA
#endif

typedef void (*fm_unit_gradient_fn)(const fm_point *, const fm_unit *, const double *,
                                    const double *, ptrdiff_t, double *);
typedef void (*fm_step_dot2_fn)(double *, const double *, ptrdiff_t, double, const double *,
                                const double *, double *, double *);

static void pick_kernels(fm_unit_gradient_fn *ug, fm_step_dot2_fn *sd)
{
    *ug = unit_gradient_generic;
    *sd = step_dot2_generic;
#if FM_ND_X86
    if (fm_gemm_level() >= FM_LEVEL_AVX2) {
        *ug = unit_gradient_avx2;
        *sd = step_dot2_avx2;
    }
#endif
}

/* From s1 = x W1: a = sigmoid(s1 + b1), z2 = a W2 + b2, y = sigmoid(z2). */
static void forward_top(const fm_mlp1 *net, const double *s1, double *a, double *z2,
                        double *y)
{
    const ptrdiff_t H = net->n_hid, K = net->n_out;
    for (ptrdiff_t j = 0; j < H; j++)
        a[j] = fm_sigmoid_d(s1[j] + net->b1[j]);
    for (ptrdiff_t k = 0; k < K; k++)
        z2[k] = net->b2[k];
    for (ptrdiff_t j = 0; j < H; j++)
        for (ptrdiff_t k = 0; k < K; k++)
            z2[k] += a[j] * net->W2[j * K + k];
    for (ptrdiff_t k = 0; k < K; k++)
        y[k] = fm_sigmoid_d(z2[k]);
}

static double sample_loss(ptrdiff_t K, const double *z2, const double *t)
{
    double s = 0.0;
    for (ptrdiff_t k = 0; k < K; k++)
        s += fm_softplus_d(z2[k]) - t[k] * z2[k];
    return s;
}

static double max_abs(const double *x, ptrdiff_t n)
{
    double m = 0.0;
    for (ptrdiff_t i = 0; i < n; i++)
        m = fmax(m, fabs(x[i]));
    return m;
}

/* The differences of b1, all at the current point. */
static void hidden_bias_gradients(fm_unit_gradient_fn ug, const fm_point *p,
                                  const fm_mlp1 *net, const double *a, double *cy, double *gb1)
{
    static const double one = 1.0;
    fm_unit u;
    for (ptrdiff_t j = 0; j < net->n_hid; j++) {
        unit_setup(p, a, net->W2, j, p->h, &u, cy);
        ug(p, &u, cy, &one, 1, gb1 + j);
    }
}

/* The differences of W2 (an entry moves z2_k by a_j h) and b2 (by h). */
static void output_weight_gradients(const fm_point *p, ptrdiff_t H, const double *a,
                                    double *gW2)
{
    const ptrdiff_t K = p->K;
    const double h = p->h, inv2h = 0.5 / h;
    for (ptrdiff_t j = 0; j < H; j++)
        for (ptrdiff_t k = 0; k < K; k++)
            gW2[j * K + k] =
                output_diff(p->z2[k], p->y[k], p->t[k], a[j] * h, -a[j] * h) * inv2h;
}

static void output_bias_gradients(const fm_point *p, double *gb2)
{
    const double h = p->h, inv2h = 0.5 / h;
    for (ptrdiff_t k = 0; k < p->K; k++)
        gb2[k] = output_diff(p->z2[k], p->y[k], p->t[k], h, -h) * inv2h;
}

/* The same derivatives by the chain rule (backprop), for the analytic variant:
   dL/dz2_k = y_k - t_k, dL/dz1_j = a_j (1 - a_j) sum_k W2[j,k] (y_k - t_k). */
static double hidden_delta(const fm_point *p, const double *a, const double *W2, ptrdiff_t j)
{
    double s = 0.0;
    for (ptrdiff_t k = 0; k < p->K; k++)
        s += W2[j * p->K + k] * (p->y[k] - p->t[k]);
    return a[j] * (1.0 - a[j]) * s;
}

static void analytic_hidden_bias(const fm_point *p, const fm_mlp1 *net, const double *a,
                                 double *gb1)
{
    for (ptrdiff_t j = 0; j < net->n_hid; j++)
        gb1[j] = hidden_delta(p, a, net->W2, j);
}

static void analytic_output_weights(const fm_point *p, ptrdiff_t H, const double *a,
                                    double *gW2)
{
    for (ptrdiff_t j = 0; j < H; j++)
        for (ptrdiff_t k = 0; k < p->K; k++)
            gW2[j * p->K + k] = a[j] * (p->y[k] - p->t[k]);
}

static void analytic_output_bias(const fm_point *p, double *gb2)
{
    for (ptrdiff_t k = 0; k < p->K; k++)
        gb2[k] = p->y[k] - p->t[k];
}

static void step(double *w, const double *g, ptrdiff_t n, double lr)
{
    for (ptrdiff_t i = 0; i < n; i++)
        w[i] -= lr * g[i];
}

int fm_numdiff_gradients(const fm_mlp1 *net, const double *x, const double *t, double h,
                         double *gW1, double *gb1, double *gW2, double *gb2)
{
    const ptrdiff_t N = net->n_in, H = net->n_hid, K = net->n_out;
    double *buf = malloc(sizeof(double) * (size_t)(2 * H + 2 * K + FM_NCOEF * K + N));
    if (!buf)
        return -1;
    double *s1 = buf, *a = s1 + H, *z2 = a + H, *y = z2 + K, *cy = y + K;
    double *g = cy + FM_NCOEF * K;
    fm_unit_gradient_fn ug;
    fm_step_dot2_fn sd;
    pick_kernels(&ug, &sd);

    for (ptrdiff_t j = 0; j < H; j++)
        s1[j] = 0.0;
    for (ptrdiff_t i = 0; i < N; i++)
        for (ptrdiff_t j = 0; j < H; j++)
            s1[j] += x[i] * net->W1[i * H + j];
    forward_top(net, s1, a, z2, y);
    fm_point p = {K, z2, y, t, h};
    double dmax = max_abs(x, N) * h;
    fm_unit u;
    for (ptrdiff_t j = 0; j < H; j++) {
        unit_setup(&p, a, net->W2, j, dmax, &u, cy);
        ug(&p, &u, cy, x, N, g);
        for (ptrdiff_t i = 0; i < N; i++)
            gW1[i * H + j] = g[i];
    }
    hidden_bias_gradients(ug, &p, net, a, cy, gb1);
    output_weight_gradients(&p, H, a, gW2);
    output_bias_gradients(&p, gb2);
    free(buf);
    return 0;
}

ptrdiff_t fm_numdiff_train(fm_mlp1 *net, const double *X, const double *T,
                           const ptrdiff_t *rows, ptrdiff_t n, double lr, double h,
                           int analytic, double *loss_sum, ptrdiff_t *hits)
{
    const ptrdiff_t N = net->n_in, H = net->n_hid, K = net->n_out;
    const int threads = omp_get_max_threads();
    /* Per thread: the series coefficients and one column's differences. */
    const ptrdiff_t per_thread = FM_NCOEF * K + N;
    double *buf = malloc(sizeof(double) * (size_t)(N * H + 4 * H + 3 * K + H * K +
                                                   threads * per_thread));
    *loss_sum = 0.0;
    *hits = 0;
    if (!buf)
        return -1;
    if (n == 0) {
        free(buf);
        return 0;
    }
    /* W1 is kept transposed while training, so that a hidden unit's weights (the
       ones a thread perturbs, steps and multiplies) lie together. */
    double *W1T = buf, *s1 = W1T + N * H, *s1_next = s1 + H, *a = s1_next + H;
    double *z2 = a + H, *y = z2 + K, *gb1 = y + K, *gW2 = gb1 + H, *gb2 = gW2 + H * K;
    double *scratch = gb2 + K;
    for (ptrdiff_t i = 0; i < N; i++)
        for (ptrdiff_t j = 0; j < H; j++)
            W1T[j * N + i] = net->W1[i * H + j];
    fm_unit_gradient_fn ug;
    fm_step_dot2_fn sd;
    pick_kernels(&ug, &sd);

    {
        const double *x0 = X + rows[0] * N;
        for (ptrdiff_t j = 0; j < H; j++) {
            double s = 0.0;
            for (ptrdiff_t i = 0; i < N; i++)
                s += x0[i] * W1T[j * N + i];
            s1[j] = s;
        }
    }

    ptrdiff_t done = 0;
    double total = 0.0;
    ptrdiff_t right = 0;
    int stop = 0;
    const double *x = NULL, *x_next = NULL, *t = NULL;
    double dmax = 0.0;

    fm_barrier barrier = {0, 0, 0};

    /* Per sample: thread 0 runs the forward pass, then every thread takes its
       share of the hidden units' W1 columns, then thread 0 steps b1, W2 and b2;
       a barrier after the first part and one after the second. */
#pragma omp parallel
    {
        const int tid = omp_get_thread_num(), team = omp_get_num_threads();
        double *mine = scratch + tid * per_thread;
        double *cy = mine, *g = mine + FM_NCOEF * K;
        const ptrdiff_t j_lo = H * tid / team, j_hi = H * (tid + 1) / team;
        int sense = 0;
        fm_point p;
        fm_barrier_join(&barrier, team);
        for (ptrdiff_t s = 0; s < n; s++) {
            if (tid == 0) {
                x = X + rows[s] * N;
                t = T + rows[s] * K;
                x_next = s + 1 < n ? X + rows[s + 1] * N : x;
                forward_top(net, s1, a, z2, y);
                double loss = sample_loss(K, z2, t);
                if (!isfinite(loss)) {
                    stop = 1;
                } else {
                    total += loss;
                    right += fm_hit_d(y, t, K);
                }
                dmax = max_abs(x, N) * h;
            }
            fm_barrier_wait(&barrier, &sense);
            if (stop)
                break;
            p.K = K;
            p.z2 = z2;
            p.y = y;
            p.t = t;
            p.h = h;
            /* W1, a hidden unit (a column) at a time: its differences are taken at
               the unperturbed point, which stepping another column does not move.
               The new weights' products with this sample and the next are formed
               in the same pass. */
            for (ptrdiff_t j = j_lo; j < j_hi; j++) {
                if (analytic) {
                    double dj = hidden_delta(&p, a, net->W2, j);
                    for (ptrdiff_t i = 0; i < N; i++)
                        g[i] = x[i] * dj;
                } else {
                    fm_unit u;
                    unit_setup(&p, a, net->W2, j, dmax, &u, cy);
                    ug(&p, &u, cy, x, N, g);
                }
                sd(W1T + j * N, g, N, lr, x, x_next, &s1[j], &s1_next[j]);
            }
            fm_barrier_wait(&barrier, &sense);
            if (tid == 0) {
                forward_top(net, s1, a, z2, y);
                if (analytic)
                    analytic_hidden_bias(&p, net, a, gb1);
                else
                    hidden_bias_gradients(ug, &p, net, a, cy, gb1);
                step(net->b1, gb1, H, lr);
                forward_top(net, s1, a, z2, y);
                if (analytic)
                    analytic_output_weights(&p, H, a, gW2);
                else
                    output_weight_gradients(&p, H, a, gW2);
                step(net->W2, gW2, H * K, lr);
                forward_top(net, s1, a, z2, y);
                if (analytic)
                    analytic_output_bias(&p, gb2);
                else
                    output_bias_gradients(&p, gb2);
                step(net->b2, gb2, K, lr);
                double *swap = s1;
                s1 = s1_next;
                s1_next = swap;
                done = s + 1;
            }
        }
    }

    for (ptrdiff_t i = 0; i < N; i++)
        for (ptrdiff_t j = 0; j < H; j++)
            net->W1[i * H + j] = W1T[j * N + i];
    *loss_sum = total;
    *hits = right;
    free(buf);
    return done;
}
