/* Fused optimizer updates over flat parameter vectors, with L2 (the gradient of
   l2/2 * ||p||^2) folded into the gradient d = g + l2 * p of the leading
   n_decayed entries (the weights; the biases follow them and are not decayed).

   Each update reads the parameters from p and writes the new ones to out, which
   may be p itself (in place) or another buffer, so that the old parameters can
   be kept at no extra cost. The state arrays are updated in place. Work is split
   into contiguous ranges, one per thread; every element is computed the same
   way by any thread. SIMD (AVX2) is used when the microkernel level allows it. */
#ifndef FASTMLP_UPDATE_H
#define FASTMLP_UPDATE_H

#include <stddef.h>

#include "fm_ids.h"

/* The rules' hyper-parameters, in the order fastmlp.functions.HYPER_PARAMETERS
   lists them (a test checks the two): each rule reads those it uses. c1 and c2
   are Adam's bias corrections 1/(1 - beta^t), wd AdamW's decoupled weight decay. */
#define FM_HYPER_LIST(X) X(lr) X(mu) X(rho) X(eps) X(beta1) X(beta2) X(c1) X(c2) X(wd)

#define FM_HYPER_FIELD_(name) double name;
#define FM_HYPER_COUNT_(name) +1
typedef struct {
    FM_HYPER_LIST(FM_HYPER_FIELD_)
    double l2;
} fm_hyper;
enum { FM_N_HYPER = 0 FM_HYPER_LIST(FM_HYPER_COUNT_) };
#undef FM_HYPER_FIELD_
#undef FM_HYPER_COUNT_

/* The gradient floor: every rule reads a gradient value d (with its L2 term) of
   |d| below it as zero, so that neither d * d, scaled by a rule's 1 - rho or
   1 - beta2 down to 2^-14, nor lr * d is subnormal; the loss gradient's values
   below it are zero too (rows.h). It is 2^7 times the square root of the type's
   smallest normal number (fastmlp.functions.GRAD_FLOOR, which the Python backends
   use; the tests check that every backend reads the same floor). */
#define FM_GRAD_FLOOR_S 0x1p-56f
#define FM_GRAD_FLOOR_D 0x1p-504

/* x of type T, or zero where |x| is below BOUND (the state's smallest normal number,
   the gradient floor). */
#define FM_FLUSH(x, T, BOUND) (((x) > -(BOUND) && (x) < (BOUND)) ? (T)0 : (x))

/* h for the entries that are not decayed (the biases): no L2, no weight decay. */
fm_hyper fm_hyper_undecayed(const fm_hyper *h);

/* h from the FM_N_HYPER values in list order, and l2. */
void fm_hyper_set(fm_hyper *h, const double *values, double l2);

/* The name of hyper-parameter i of the list, or NULL past its end. */
const char *fm_hyper_name(int i);

/* rule is an FM_RULE_LIST id of fm_ids.h. s1 and s2 are the state arrays
   (velocity; mean square; first and second moments), NULL where the rule has
   fewer. */
void fm_update_s(int rule, ptrdiff_t n, ptrdiff_t n_decayed, const float *p, const float *g,
                 float *s1, float *s2, float *out, const fm_hyper *h);
void fm_update_d(int rule, ptrdiff_t n, ptrdiff_t n_decayed, const double *p,
                 const double *g, double *s1, double *s2, double *out, const fm_hyper *h);

/* The same update of `runs` runs of w elements, on the calling thread (every entry
   with h's l2): element i of run r at p + r * ldp + i (likewise in s1, s2 and out)
   and at g + r * ldg + i. The update fused into the epilogue of the weight
   gradient's product computes each element as fm_update_* does. */
void fm_update_runs_s(int rule, ptrdiff_t runs, ptrdiff_t w, ptrdiff_t ldp, ptrdiff_t ldg,
                      const float *p, const float *g, float *s1, float *s2, float *out,
                      const fm_hyper *h);
void fm_update_runs_d(int rule, ptrdiff_t runs, ptrdiff_t w, ptrdiff_t ldp, ptrdiff_t ldg,
                      const double *p, const double *g, double *s1, double *s2,
                      double *out, const fm_hyper *h);

#endif
