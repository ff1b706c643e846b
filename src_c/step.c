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

const char *fm_phase_name(int i)
{
#define FM_PHASE_NAME_(id, name) name,
    static const char *const names[] = {FM_PHASE_LIST(FM_PHASE_NAME_)};
#undef FM_PHASE_NAME_
    return i >= 0 && i < FM_N_PHASES ? names[i] : NULL;
}

/* Adds the time since *t0 to thread t's phase k when the step is timed, and
   restarts the clock there. */
static inline void fm_phase_add(const fm_step_ws *ws, int t, int k, double *t0)
{
    if (ws->phase == NULL || t >= ws->phase_threads)
        return;
    double now = fm_now();
    ws->phase[t * FM_N_PHASES + k] += now - *t0;
    *t0 = now;
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
