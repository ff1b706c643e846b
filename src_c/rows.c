/* Row kernels: activations, their gradients, losses and hits; see rows.h. The
   type-generic code is in rows_impl.h. */
#include "rows.h"

#include <math.h>

#include "fm_math.h"

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
