/* The compiled training step; see step.h. The type-generic body is in
   step_impl.h. */
#include "step.h"

#include <math.h>
#include <string.h>

#include "gemm.h"
#include "rows.h"

#define T float
#define SUF _s
#define FM_GEMM fm_sgemm
#include "step_impl.h"
#undef T
#undef SUF
#undef FM_GEMM

#define T double
#define SUF _d
#define FM_GEMM fm_dgemm
#include "step_impl.h"
#undef T
#undef SUF
#undef FM_GEMM
