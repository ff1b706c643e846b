/* Row kernels: activations, their gradients, losses and hits; see rows.h. The
   type-generic code is in rows_impl.h. */
#include "rows.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fm_clones.h"
#include "fm_math.h"
#include "gemm.h"
#include "update.h"

/* x = e^x over n values, as softmax needs them: floats by fm_exp_to_float, in
   vectors (the same bits at every level: basic double operations only), doubles
   by the C library. */
FM_CLONE_BODY fm_exp_row_s_body(ptrdiff_t n, float *x)
{
    for (ptrdiff_t i = 0; i < n; i++)
        x[i] = fm_exp_to_float(x[i]);
}

FM_LEVEL_CLONES(fm_exp_row_s, (ptrdiff_t n, float *x), (n, x))

static void fm_exp_row_d(ptrdiff_t n, double *x)
{
    for (ptrdiff_t i = 0; i < n; i++)
        x[i] = exp(x[i]);
}

#define T float
#define SUF _s
#define FM_SIGMOID_FN fm_sigmoid_sd  /* through double (see fm_math.h) */
#define FM_TANH_FN tanh
#define FM_SOFTPLUS_FN fm_softplus_s
#include "rows_impl.h"
#undef T
#undef SUF
#undef FM_SIGMOID_FN
#undef FM_TANH_FN
#undef FM_SOFTPLUS_FN

#define T double
#define SUF _d
#define FM_SIGMOID_FN fm_sigmoid_d
#define FM_TANH_FN tanh
#define FM_SOFTPLUS_FN fm_softplus_d
#include "rows_impl.h"
#undef T
#undef SUF
#undef FM_SIGMOID_FN
#undef FM_TANH_FN
#undef FM_SOFTPLUS_FN

long fm_exp_mismatches(uint32_t first, uint32_t last, uint32_t step)
{
    long count = 0;
    long n = ((long)last - (long)first) / (long)step + 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 65536) reduction(+ : count)
#endif
    for (long i = 0; i < n; i++) {
        uint32_t b = first + (uint32_t)i * step;
        float x, ours, lib;
        memcpy(&x, &b, sizeof x);
        ours = fm_exp_to_float(x);
        lib = (float)exp((double)x);
        count += memcmp(&ours, &lib, sizeof x) != 0;
    }
    return count;
}
