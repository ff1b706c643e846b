/* The compiled training step; see step.h. The type-generic body is in
   step_impl.h. */
#include "step.h"

#include <math.h>
#include <string.h>

#include <stdlib.h>

#include "fm_clones.h"
#include "fm_team.h"
#include "gemm.h"
#include "rows.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Memory for a step's tables (its layers' plans), grown when needed and kept
   between steps: a step allocates nothing once the first has run. */
static _Thread_local void *fm_step_buf;
static _Thread_local size_t fm_step_cap;

static void *fm_step_memory(size_t bytes)
{
    if (bytes > fm_step_cap) {
        free(fm_step_buf);
        fm_step_buf = malloc(bytes);
        fm_step_cap = fm_step_buf != NULL ? bytes : 0;
    }
    return fm_step_buf;
}

#define T float
#define SUF _s
/* bf: bfloat16 products (mixed_bfloat16), for float only. */
#define FM_PLAN(bf, ...) ((bf) ? fm_bgemm_plan : fm_sgemm_plan)(__VA_ARGS__)
#include "step_impl.h"
#undef T
#undef SUF
#undef FM_PLAN

#define T double
#define SUF _d
#define FM_PLAN(bf, ...) ((void)(bf), fm_dgemm_plan(__VA_ARGS__))
#include "step_impl.h"
#undef T
#undef SUF
#undef FM_PLAN
