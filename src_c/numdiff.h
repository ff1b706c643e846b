/* Training by the numerical derivative: central differences on every parameter.

   The network has one sigmoid hidden layer and sigmoid outputs, and the loss of
   one sample is the binary cross-entropy summed over the outputs:

       z1 = x W1 + b1,  a = sigmoid(z1),  z2 = a W2 + b2,  y = sigmoid(z2),
       L  = sum_k softplus(z2_k) - t_k z2_k
          = -sum_k t_k log(y_k) + (1 - t_k) log(1 - y_k)

   (W1 is n_in x n_hid and W2 is n_hid x n_out, row-major.) The derivative of L
   in each parameter p is (L(p + h) - L(p - h)) / 2h.

   Perturbing one parameter changes only what lies downstream of it, so the
   perturbed losses are computed from the unperturbed forward pass: W1[i, j]
   moves z1_j by x_i h, which moves a_j, which moves every z2_k by its change
   times W2[j, k]; b1 likewise with x_i = 1; W2[j, k] and b2_k move z2_k alone.
   The difference L(p + h) - L(p - h) is formed directly from those changes, so
   it does not cancel two large, nearly equal losses. Where every change is
   tiny (below 2^-10, as with h = 1e-4 and inputs in [0, 1]), exp(c) - 1 and the
   logarithm of a ratio near 1 come from their series, which are exact to
   double rounding there; otherwise the C library's functions are used.

   The functions trust their arguments. */
#ifndef FASTMLP_NUMDIFF_H
#define FASTMLP_NUMDIFF_H

#include <stddef.h>

typedef struct {
    ptrdiff_t n_in, n_hid, n_out;
    double *W1;   /* n_in x n_hid */
    double *b1;   /* n_hid */
    double *W2;   /* n_hid x n_out */
    double *b2;   /* n_out */
} fm_mlp1;

/* The central differences of the loss of one sample (x, t) in every parameter,
   all at the current weights. The gradients have the parameters' shapes.
   Returns 0, or -1 when memory could not be allocated. */
int fm_numdiff_gradients(const fm_mlp1 *net, const double *x, const double *t, double h,
                         double *gW1, double *gb1, double *gW2, double *gb2);

/* One step per sample, for the samples rows[0..n) of X (rows x n_in) and T
   (rows x n_out), in that order. Each step takes the central differences of one
   block after the other, W1, b1, W2, b2, and subtracts lr times them from the
   block before the next block's differences are taken.

   Returns the number of steps taken: n, or fewer when the loss of sample
   rows[returned] is not finite (that sample is not stepped), or -1 when memory
   could not be allocated (nothing is changed). *loss_sum gets the sum of the
   losses before each step taken, *hits how many of those samples the network
   classified right (largest output at the largest target; for one output,
   both on the same side of 0.5).

   The result is the same for any number of threads. */
ptrdiff_t fm_numdiff_train(fm_mlp1 *net, const double *X, const double *T,
                           const ptrdiff_t *rows, ptrdiff_t n, double lr, double h,
                           int analytic, double *loss_sum, ptrdiff_t *hits);

#endif
