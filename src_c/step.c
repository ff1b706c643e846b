/* The compiled training step; see step.h. The type-generic body is in
   step_impl.h. */
#include "step.h"

#include <math.h>
#include <string.h>

#include "fm_clones.h"
#include "gemm.h"
#include "rows.h"

#define T float
#define SUF _s
/* bf: bfloat16 products (mixed_bfloat16), for float only. */
#define FM_GEMM(bf, ...) ((bf) ? fm_bgemm : fm_sgemm)(__VA_ARGS__)
#include "step_impl.h"
#undef T
#undef SUF
#undef FM_GEMM

#define T double
#define SUF _d
#define FM_GEMM(bf, ...) ((void)(bf), fm_dgemm(__VA_ARGS__))
#include "step_impl.h"
#undef T
#undef SUF
#undef FM_GEMM
