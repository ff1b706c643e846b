/* Row kernels of the dense layers: activations, their gradients, and the losses
   with their gradients and hits. Rows are (n, M), row-major and contiguous.

     fm_activation_forward   a = act(z), row by row; a may be z
     fm_activation_backward  g <- g * act'(z), given a = act(z) (softmax: its
                             Jacobian-vector product a * (g - <g, a>))
     fm_loss_grad            a = act(z); row_loss[i] = the loss of row i;
                             g = d(mean loss)/dz, its values below the gradient
                             floor (update.h) as zero; *total = the sum of row_loss in
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

/* A thread's part of the above, for a team that runs several kernels in one
   parallel region (the compiled step): rows [i0, i1) of a batch of n (best in
   runs of FM_ROWS_UNIT rows, which the softmax kernels take at once).
   fm_loss_grad_rows returns its rows' hits, and fm_loss_sum gives *total from all
   of row_loss once every part is done. */
#define FM_ROWS_UNIT 64
#define FM_ROWS_DECLARE(T, SUF)                                                         \
    void fm_activation_forward_rows##SUF(int act, ptrdiff_t i0, ptrdiff_t i1,          \
                                         ptrdiff_t M, const T *z, T *a);               \
    void fm_activation_backward_rows##SUF(int act, ptrdiff_t i0, ptrdiff_t i1,         \
                                          ptrdiff_t M, const T *a, T *g);              \
    long fm_loss_grad_rows##SUF(int loss, int act, ptrdiff_t n, ptrdiff_t i0,          \
                                ptrdiff_t i1, ptrdiff_t M, const T *z, T *a, const T *y, \
                                T *g, T *row_loss);                                    \
    double fm_loss_sum##SUF(ptrdiff_t n, const T *row_loss);
FM_ROWS_DECLARE(float, _s)
FM_ROWS_DECLARE(double, _d)
#undef FM_ROWS_DECLARE

/* The floats whose bit patterns are first, first + step, ... up to last for which
   fm_exp_to_float (fm_math.h) and the C library's (float)exp((double)x) differ
   (for the tests: none are known). */
long fm_exp_mismatches(uint32_t first, uint32_t last, uint32_t step);

#endif
