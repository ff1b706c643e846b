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

static int fm_panels_on = 1;

void fm_step_set_panels(int on)
{
    fm_panels_on = on != 0;
}

static int fm_bias_sums_on = 1;

void fm_step_set_bias_sums(int on)
{
    fm_bias_sums_on = on != 0;
}

int fm_step_panel_width(const fm_step_net *net, int dbl, ptrdiff_t batch)
{
    fm_gemm_plan pl;
    ptrdiff_t K, N;
    if (!fm_panels_on || net->n_layers < 1 || (net->bf16 && !dbl) || batch < 1)
        return 0;
    /* Only where the first forward product splits the weights' columns between the
       threads (the weight gradient then splits them alike, fm_gemm_split_as):
       where it splits its rows, each thread reads all the weights, which packing
       keeps in its second-level cache (at batch 1024 the panels took 1.005-1.01x
       the time). A run's shorter last batch takes the general path too, and
       fm_train_step checks each step's plan (fm_gemm_b_panels). */
    K = net->sizes[0], N = net->sizes[1];
    if (dbl)
        fm_dgemm_plan(&pl, 0, 0, batch, N, K, NULL, K, NULL, N, NULL, N, NULL);
    else
        fm_sgemm_plan(&pl, 0, 0, batch, N, K, NULL, K, NULL, N, NULL, N, NULL);
    if (!pl.split_n || !fm_gemm_b_panels(&pl))
        return 0;
    return pl.nr;
}

/* The batch is read where it lies in the training set (fm_gemm_a_rows) when its
   inputs take more than this many bytes, else gathered into the workspace first.
   Measured on the 2-core Xeon (Emerald Rapids, AVX-512), 2 threads, the fit's time
   read in place against gathered: 784 inputs at batch 8192 0.973x, 1024 0.988x,
   256 (784 KiB) 0.985x; but at batch 128 (392 KiB) 1.005-1.04x and 32 1.01x: a
   small batch, gathered by both threads, then stays in their caches, where each
   thread reading all of its rows in place first fetches them from memory itself. */
#define FM_STEP_ROWS_BYTES (512 << 10)

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
