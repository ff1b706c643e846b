/* A whole training step of mini-batch backprop in one call: gather the batch,
   forward, loss, backward, and the optimizer's update, with no Python between
   the kernels. It runs the same kernels as fastmlp.step.train_step on the cpu
   backend, except that the update is fused into the backward pass (each block of
   a weight gradient updates its weights as the product finishes it, each bias
   after its gradient) instead of a pass of its own; the update is elementwise,
   so the results are bitwise those of that loop. The kernels run in one OpenMP
   parallel region, each split between the threads as it splits alone
   (step_impl.h).

   A network of L weight layers has widths sizes[0..L] and activations act[0..L-1];
   its flat parameter vector is [W1, ..., WL, b1, ..., bL] with Wi of
   sizes[i-1] x sizes[i], row-major. The workspace holds the buffers of a batch
   of up to `batch` rows (fastmlp.network.Workspace). The functions trust their
   arguments. */
#ifndef FASTMLP_STEP_H
#define FASTMLP_STEP_H

#include <stddef.h>

#include "update.h"

typedef struct {
    int n_layers;            /* L */
    const ptrdiff_t *sizes;  /* L + 1 widths */
    const int *act;          /* L activation ids (fm_ids.h) */
    int loss;                /* loss id */
    int rule;                /* update rule id */
    ptrdiff_t n_weights;     /* entries of the flat vector that are weights (L2 applies) */
    ptrdiff_t n_params;
    int bf16;                /* bfloat16 products (float only; gemm.h's fm_bgemm) */
} fm_step_net;

/* The parts of a step that fm_train_step times when asked (fm_step_ws.phase),
   each summed over the layers: the batch's gather; the forward products; the row
   kernels (the loss and its gradient, a hidden softmax); thread 0's sum of the
   loss in sample order; the weight gradients with their fused updates; the bias
   gradients and updates; the input gradients; and the waits at the barriers
   between them. */
#define FM_PHASE_LIST(X)                                                                \
    X(FM_PHASE_GATHER, "gather")                                                        \
    X(FM_PHASE_FORWARD, "forward products")                                             \
    X(FM_PHASE_ROWS, "loss and softmax rows")                                           \
    X(FM_PHASE_LOSS_SUM, "loss sum")                                                    \
    X(FM_PHASE_WEIGHT, "weight gradients and updates")                                  \
    X(FM_PHASE_BIAS, "bias gradients and updates")                                      \
    X(FM_PHASE_INPUT, "input gradients")                                                \
    X(FM_PHASE_WAIT, "waiting at barriers")
#define FM_PHASE_ENUM_(id, name) id,
enum { FM_PHASE_LIST(FM_PHASE_ENUM_) FM_N_PHASES };
#undef FM_PHASE_ENUM_

/* The name of phase i, or NULL past the last. */
const char *fm_phase_name(int i);

/* Buffers of the step's type (float or double), as void pointers so that one
   struct serves both types. */
typedef struct {
    void *x, *y;             /* the gathered batch */
    void *const *a;          /* L activations, batch x sizes[i+1] */
    void *const *g;          /* L gradients at the pre-activations */
    void *z;                 /* the last layer's logits */
    void *row_loss;          /* batch */
    void *grad;              /* n_params: the gradient, laid out as the parameters */
    void *s1, *s2;           /* the optimizer's state arrays, or NULL */
    /* NULL, or where each step adds the seconds each thread spent in each phase:
       phase[t * FM_N_PHASES + k] for threads t < phase_threads (by the thread's own
       clock, from its entry into the step's parallel region) */
    double *phase;
    int phase_threads;
    /* 0, or the width of the panels in which the first layer's weights lie in p,
       out and the state arrays (fm_step_panels) */
    int panels;
} fm_step_ws;

/* The kernels of a dense layer (x: n x K, W: K x M, b: M; out, g: n x M), which the
   step calls and fastmlp._cpu binds. The int functions return 0, or -1 when
   scratch memory could not be allocated. With bf16 (float only) the product is
   fm_bgemm's, of bfloat16 operands (gemm.h).

     fm_take_rows             out[i] = src[rows[i]] for m rows of width w
     fm_dense_forward         out = act(x W + b); the bias and an elementwise
                              activation applied to each output tile, softmax after
     fm_dense_backward_input  gx = (g W^T) * act'(z), given a = act(z) (n x K) of
                              the layer below (unused for a linear act)
     fm_dense_backward_weight gW = x^T g and gb = the column sums of g, in row order */
#define FM_DENSE_DECLARE(T, SUF)                                                        \
    void fm_take_rows##SUF(const T *src, const ptrdiff_t *rows, ptrdiff_t m, ptrdiff_t w, \
                           T *out);                                                     \
    int fm_dense_forward##SUF(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M, const T *x,        \
                              const T *W, const T *b, T *out, int act, int bf16);       \
    int fm_dense_backward_input##SUF(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M, const T *g, \
                                     const T *W, T *gx, int act, const T *a, int bf16); \
    int fm_dense_backward_weight##SUF(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M,            \
                                      const T *x, const T *g, T *gW, T *gb, int bf16);
FM_DENSE_DECLARE(float, _s)
FM_DENSE_DECLARE(double, _d)
#undef FM_DENSE_DECLARE

/* The first layer's weights (sizes[0] x sizes[1], at the start of the parameter
   vectors and state arrays) may lie, for a run of steps, in the panels in which
   its forward product reads them (gemm.h's fm_gemm_b_panels): that product then
   packs nothing, and the update fused into the layer's weight gradient writes
   them there. fm_step_panel_width gives the panels' width for the net's steps of
   `batch` rows (its level's kernel's), or 0 where the weights stay in rows (or
   where fm_step_set_panels(0), for the tests, said so). fm_step_panels lays them
   out in each of the n vectors (NULL ones skipped) as panels of width nr
   (to_panels), or back in rows, through tmp, a buffer of sizes[0] * sizes[1]
   elements. The values, and every bit of a step's results, are the same either
   way. */
int fm_step_panel_width(const fm_step_net *net, int dbl, ptrdiff_t batch);
void fm_step_panels_s(const fm_step_net *net, float *const *vec, int n, int nr,
                      int to_panels, float *tmp);
void fm_step_panels_d(const fm_step_net *net, double *const *vec, int n, int nr,
                      int to_panels, double *tmp);
void fm_step_set_panels(int on);

/* A layer's bias gradient is summed as its weight gradient's product packs the
   layer's gradient, where every thread packs all of it (gemm.h's fm_gemm_b_sums),
   in fm_train_step and fm_dense_backward_weight; else in a pass of its own. For the
   tests, fm_step_set_bias_sums(0) makes it always the pass. The same bits either
   way. */
void fm_step_set_bias_sums(int on);

/* One step on the m rows rows[0..m-1] of X (n x sizes[0]) and Y (n x sizes[L]),
   from the parameters p into out (p is left as it was; the optimizer state
   advances). *total gets the batch's loss sum and *hits its hits. Returns 0;
   1 when the loss sum is not finite, in which case nothing is updated (out and
   the state are untouched: the loss is checked before the backward pass); -1,
   also with nothing updated, when scratch memory could not be allocated (it is
   reserved before the step starts), or when ws->panels is not the width of the
   panels the first forward product reads. The flat vector's first n_weights
   entries are the weight matrices (L2 and AdamW's decay apply to them), the
   biases follow. */
int fm_train_step_s(const fm_step_net *net, const fm_step_ws *ws, const float *X,
                    const float *Y, const ptrdiff_t *rows, ptrdiff_t m, const float *p,
                    float *out, const fm_hyper *h, double *total, long *hits);
int fm_train_step_d(const fm_step_net *net, const fm_step_ws *ws, const double *X,
                    const double *Y, const ptrdiff_t *rows, ptrdiff_t m, const double *p,
                    double *out, const fm_hyper *h, double *total, long *hits);

#endif
