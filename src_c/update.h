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

typedef struct {
    double lr, l2;
    double mu;             /* momentum, nesterov */
    double rho, eps;       /* rmsprop (eps also adam) */
    double beta1, beta2;   /* adam */
    double c1, c2;         /* adam bias corrections 1/(1 - beta^t) */
} fm_hyper;

/* rule is an FM_RULE_LIST id of fm_ids.h. s1 and s2 are the state arrays
   (velocity; mean square; first and second moments), NULL where the rule has
   fewer. */
void fm_update_s(int rule, ptrdiff_t n, ptrdiff_t n_decayed, const float *p, const float *g,
                 float *s1, float *s2, float *out, const fm_hyper *h);
void fm_update_d(int rule, ptrdiff_t n, ptrdiff_t n_decayed, const double *p,
                 const double *g, double *s1, double *s2, double *out, const fm_hyper *h);

#endif
