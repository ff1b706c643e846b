/* Row kernels of the dense layers: activations, their gradients, and the losses
   with their gradients and hits. Rows are (n, M), row-major and contiguous.

     fm_activation_forward   a = act(z), row by row; a may be z
     fm_activation_backward  g <- g * act'(z), given a = act(z) (softmax: its
                             Jacobian-vector product a * (g - <g, a>))
     fm_loss_grad            a = act(z); row_loss[i] = the loss of row i;
                             g = d(mean loss)/dz; *total = the sum of row_loss in
                             row order; *hits = rows whose prediction (argmax, or
                             a >= 0.5 for one output) matches the target's

   Rows are split between threads; each row is computed by one thread in a
   fixed order, and the sums run serially in row order, so the results are
   bitwise identical for any number of threads. exp, log and tanh are taken in
   double (see fm_math.h), softmax's exp of a float by fm_exp_to_float (the same
   floats). The functions trust their arguments. */
#ifndef FASTMLP_ROWS_H
#define FASTMLP_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_ids.h"

void fm_activation_forward_s(int act, ptrdiff_t n, ptrdiff_t M, const float *z, float *a);
void fm_activation_forward_d(int act, ptrdiff_t n, ptrdiff_t M, const double *z, double *a);
void fm_activation_backward_s(int act, ptrdiff_t n, ptrdiff_t M, const float *a, float *g);
void fm_activation_backward_d(int act, ptrdiff_t n, ptrdiff_t M, const double *a, double *g);
void fm_loss_grad_s(int loss, int act, ptrdiff_t n, ptrdiff_t M, const float *z, float *a,
                    const float *y, float *g, float *row_loss, double *total, long *hits);
void fm_loss_grad_d(int loss, int act, ptrdiff_t n, ptrdiff_t M, const double *z,
                    double *a, const double *y, double *g, double *row_loss, double *total,
                    long *hits);

/* The floats whose bit patterns are first, first + step, ... up to last for which
   fm_exp_to_float (fm_math.h) and the C library's (float)exp((double)x) differ
   (for the tests: none are known). */
long fm_exp_mismatches(uint32_t first, uint32_t last, uint32_t step);

#endif
