/* Fused optimizer updates; see update.h. */
#include "update.h"

#include <float.h>
#include <math.h>

#include "gemm.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FM_UPD_X86 1
#else
#define FM_UPD_X86 0
#endif

/* Below this many elements an update runs on one thread. */
#define FM_UPDATE_PARALLEL_MIN 32768

/* The update of elements [lo, hi) of each of `runs` runs (FM_RUNS), once per type
   and instruction set. The fused multiply-adds are written out (FMA): each level
   computes the same expression, one instruction where the CPU has FMA and C99
   fma() where it has not, and the extension is compiled with -ffp-contract=off so
   that nothing else is fused. (These are the products the compiler used to fuse
   on its own in the AVX2 loop, so its results are bitwise as before; lr * d, used
   twice by Nesterov, is rounded once.) The rule is a loop-invariant switch, so
   each case's loop vectorizes on its own. out may be p: element i is read before it
   is written and no other element is touched, which is what `ivdep` promises.

   A state value below the type's smallest normal number (TINY) is stored, and
   used, as zero (FM_FLUSH): a parameter whose gradient stays zero (a dead unit,
   an input pixel that is always blank) would otherwise have its state decay
   through the subnormal numbers, which some CPUs compute a hundred times slower.
   Likewise a gradient value (with its L2 term) below FLOOR in magnitude (update.h's
   FM_GRAD_FLOOR) is read as zero, so that no square or product of it in the rule
   is subnormal: a confident model has many such values (in the keras recipe's 20th
   epoch a million squares were subnormal), and each would move its weight by at
   most lr / eps times the floor. */
/* Each element i in [lo, hi) of each of `runs` runs, run r's at p + r * ldp (and
   likewise in s1, s2 and out) and at g + r * ldg. */
#define FM_RUNS(T, ...)                                                                \
    for (ptrdiff_t r = 0; r < runs; r++) {                                             \
        const ptrdiff_t o = r * ldp;                                                   \
        const T *gr = g + r * ldg;                                                     \
        _Pragma("GCC ivdep") for (ptrdiff_t i = lo; i < hi; i++) __VA_ARGS__           \
    }
/* Element i's gradient with its L2 term, read as zero below the floor. */
#define FM_GRAD(T, FMA, FLOOR) FM_FLUSH(FMA(l2, p[o + i], gr[i]), T, FLOOR)
#define FM_UPDATE_RANGE(NAME, T, SQRT, FMA, TINY, FLOOR, ATTR)                         \
    ATTR static void NAME(int rule, ptrdiff_t runs, ptrdiff_t lo, ptrdiff_t hi,        \
                          ptrdiff_t ldp, ptrdiff_t ldg, const T *p,                    \
                          const T *restrict g, T *restrict s1, T *restrict s2,         \
                          T *out, const fm_hyper *h)                                   \
    {                                                                                  \
        const T lr = (T)h->lr, l2 = (T)h->l2, mu = (T)h->mu, rho = (T)h->rho;          \
        const T eps = (T)h->eps, b1 = (T)h->beta1, b2 = (T)h->beta2;                   \
        const T c1 = (T)h->c1, c2 = (T)h->c2;                                          \
        /* (p * 1 is p exactly: Adam is not changed by it.) */                         \
        const T keep = rule == FM_ADAMW ? (T)(1 - h->lr * h->wd) : 1;                  \
        switch (rule) {                                                                \
        case FM_SGD:                                                                   \
            FM_RUNS(T, out[o + i] = FMA(-lr, FM_GRAD(T, FMA, FLOOR), p[o + i]);)       \
            break;                                                                     \
        case FM_MOMENTUM:                                                              \
            FM_RUNS(T, {                                                               \
                T v = FMA(mu, s1[o + i], -(lr * FM_GRAD(T, FMA, FLOOR)));              \
                v = FM_FLUSH(v, T, TINY);                                              \
                s1[o + i] = v;                                                         \
                out[o + i] = p[o + i] + v;                                             \
            })                                                                         \
            break;                                                                     \
        case FM_NESTEROV:                                                              \
            FM_RUNS(T, {                                                               \
                T step = lr * FM_GRAD(T, FMA, FLOOR);                                  \
                T v = FMA(mu, s1[o + i], -step);                                       \
                v = FM_FLUSH(v, T, TINY);                                              \
                s1[o + i] = v;                                                         \
                out[o + i] = FMA(mu, v, p[o + i]) - step;                              \
            })                                                                         \
            break;                                                                     \
        case FM_RMSPROP:                                                               \
            FM_RUNS(T, {                                                               \
                T d = FM_GRAD(T, FMA, FLOOR);                                          \
                T s = FMA(rho, s1[o + i], (1 - rho) * d * d);                          \
                s = FM_FLUSH(s, T, TINY);                                              \
                s1[o + i] = s;                                                         \
                out[o + i] = p[o + i] - lr * d / (SQRT(s) + eps);                      \
            })                                                                         \
            break;                                                                     \
        case FM_ADAM:                                                                  \
        case FM_ADAMW: /* AdamW: the weights shrink by keep, then Adam's step */       \
            FM_RUNS(T, {                                                               \
                T d = FM_GRAD(T, FMA, FLOOR);                                          \
                T m = FMA(b1, s1[o + i], (1 - b1) * d);                                \
                T v = FMA(b2, s2[o + i], (1 - b2) * d * d);                            \
                m = FM_FLUSH(m, T, TINY);                                              \
                v = FM_FLUSH(v, T, TINY);                                              \
                s1[o + i] = m;                                                         \
                s2[o + i] = v;                                                         \
                out[o + i] = p[o + i] * keep - lr * c1 * m / (SQRT(c2 * v) + eps);     \
            })                                                                         \
            break;                                                                     \
        }                                                                              \
    }

FM_UPDATE_RANGE(fm_update_range_s, float, sqrtf, fmaf, FLT_MIN, FM_GRAD_FLOOR_S, )
FM_UPDATE_RANGE(fm_update_range_d, double, sqrt, fma, DBL_MIN, FM_GRAD_FLOOR_D, )
#if FM_UPD_X86
FM_UPDATE_RANGE(fm_update_range_avx2_s, float, sqrtf, fmaf, FLT_MIN, FM_GRAD_FLOOR_S,
                __attribute__((target("avx2,fma"))))
FM_UPDATE_RANGE(fm_update_range_avx2_d, double, sqrt, fma, DBL_MIN, FM_GRAD_FLOOR_D,
                __attribute__((target("avx2,fma"))))
#endif
void fm_hyper_set(fm_hyper *h, const double *values, double l2)
{
    int i = 0;
#define FM_HYPER_SET_(name) h->name = values[i++];
    FM_HYPER_LIST(FM_HYPER_SET_)
#undef FM_HYPER_SET_
    h->l2 = l2;
}

fm_hyper fm_hyper_undecayed(const fm_hyper *h)
{
    fm_hyper plain = *h;
    plain.l2 = plain.wd = 0;
    return plain;
}

const char *fm_hyper_name(int i)
{
#define FM_HYPER_NAME_(name) #name,
    static const char *const names[] = {FM_HYPER_LIST(FM_HYPER_NAME_)};
#undef FM_HYPER_NAME_
    return i >= 0 && i < FM_N_HYPER ? names[i] : NULL;
}

typedef void (*fm_range_s)(int, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                           const float *, const float *, float *, float *, float *,
                           const fm_hyper *);
typedef void (*fm_range_d)(int, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                           const double *, const double *, double *, double *, double *,
                           const fm_hyper *);

/* Split [0, n) into one contiguous range per thread, boundaries on 64-byte lines. */
#ifdef _OPENMP
#define FM_PARALLEL_RANGES(n, BODY)                                                    \
    do {                                                                               \
        int nt_ = (n) < FM_UPDATE_PARALLEL_MIN ? 1 : omp_get_max_threads();            \
        _Pragma("omp parallel num_threads(nt_) if (nt_ > 1)")                          \
        {                                                                              \
            int t_ = omp_get_thread_num(), team_ = omp_get_num_threads();              \
            ptrdiff_t chunk_ = ((n) / team_ + 15) / 16 * 16;                           \
            ptrdiff_t lo = chunk_ * t_, hi = lo + chunk_;                              \
            if (t_ == team_ - 1 || hi > (n))                                           \
                hi = (n);                                                              \
            unsigned csr_ = fm_flush_enter();                                          \
            if (lo < hi)                                                               \
                BODY;                                                                  \
            fm_flush_leave(csr_);                                                      \
        }                                                                              \
    } while (0)
#else
#define FM_PARALLEL_RANGES(n, BODY)                                                    \
    do {                                                                               \
        ptrdiff_t lo = 0, hi = (n);                                                    \
        unsigned csr_ = fm_flush_enter();                                              \
        BODY;                                                                          \
        fm_flush_leave(csr_);                                                          \
    } while (0)
#endif

/* The decayed entries, then the others with l2 = 0, each range split between the
   threads on its own. */
#define FM_UPDATE_BOTH(f, T)                                                           \
    do {                                                                               \
        fm_hyper plain_ = fm_hyper_undecayed(h);                                       \
        ptrdiff_t d_ = n_decayed, r_ = n - n_decayed;                                  \
        FM_PARALLEL_RANGES(d_, f(rule, 1, lo, hi, 0, 0, p, g, s1, s2, out, h));        \
        FM_PARALLEL_RANGES(r_, f(rule, 1, lo, hi, 0, 0, p + d_, g + d_,                \
                                 s1 ? s1 + d_ : NULL,                                  \
                                 s2 ? s2 + d_ : NULL, out + d_, &plain_));             \
    } while (0)

/* The range function of the level in use, per type. */
#if FM_UPD_X86
#define FM_RANGE_FOR(SUF)                                                              \
    (fm_gemm_level() >= FM_LEVEL_AVX2 ? fm_update_range_avx2##SUF : fm_update_range##SUF)
#else
#define FM_RANGE_FOR(SUF) fm_update_range##SUF
#endif

void fm_update_s(int rule, ptrdiff_t n, ptrdiff_t n_decayed, const float *p, const float *g,
                 float *s1, float *s2, float *out, const fm_hyper *h)
{
    fm_range_s f = FM_RANGE_FOR(_s);
    FM_UPDATE_BOTH(f, float);
}

void fm_update_d(int rule, ptrdiff_t n, ptrdiff_t n_decayed, const double *p,
                 const double *g, double *s1, double *s2, double *out, const fm_hyper *h)
{
    fm_range_d f = FM_RANGE_FOR(_d);
    FM_UPDATE_BOTH(f, double);
}

void fm_update_runs_s(int rule, ptrdiff_t runs, ptrdiff_t w, ptrdiff_t ldp, ptrdiff_t ldg,
                      const float *p, const float *g, float *s1, float *s2, float *out,
                      const fm_hyper *h)
{
    FM_RANGE_FOR(_s)(rule, runs, 0, w, ldp, ldg, p, g, s1, s2, out, h);
}

void fm_update_runs_d(int rule, ptrdiff_t runs, ptrdiff_t w, ptrdiff_t ldp, ptrdiff_t ldg,
                      const double *p, const double *g, double *s1, double *s2,
                      double *out, const fm_hyper *h)
{
    FM_RANGE_FOR(_d)(rule, runs, 0, w, ldp, ldg, p, g, s1, s2, out, h);
}
