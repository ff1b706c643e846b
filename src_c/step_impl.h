/* The type-generic part of step.c (the dense layer's kernels and the step), included
   once per type with T, SUF and FM_PLAN defined. Not a public header. */

#define FM_SCAT_(a, b) a##b
#define FM_SCAT(a, b) FM_SCAT_(a, b)
#define FM_SFN(name) FM_SCAT(name, SUF)

/* Rows [i0, i1) of fm_take_rows. */
static void FM_SFN(fm_take_rows_part)(const T *src, const ptrdiff_t *rows, ptrdiff_t i0,
                                      ptrdiff_t i1, ptrdiff_t w, T *out)
{
    for (ptrdiff_t i = i0; i < i1; i++)
        memcpy(out + i * w, src + rows[i] * w, (size_t)w * sizeof(T));
}

void FM_SFN(fm_take_rows)(const T *src, const ptrdiff_t *rows, ptrdiff_t m, ptrdiff_t w,
                          T *out)
{
    ptrdiff_t i;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (m * w >= 65536)
#endif
    for (i = 0; i < m; i++)
        FM_SFN(fm_take_rows_part)(src, rows, i, i + 1, w, out);
}

/* The products of a dense layer, planned (gemm.h): its forward product with the
   bias and an elementwise activation fused (softmax runs after it), its input
   gradient with act' fused (softmax's after it), and its weight gradient. */
static void FM_SFN(fm_plan_forward)(fm_gemm_plan *pl, fm_epilogue *ep, ptrdiff_t n,
                                    ptrdiff_t K, ptrdiff_t M, const T *x, const T *W,
                                    const T *b, T *out, int act, int bf16)
{
    *ep = (fm_epilogue){.kind = FM_EPI_BIAS_ACT,
                        .act = act == FM_SOFTMAX ? FM_LINEAR : act, .bias = b};
    FM_PLAN(bf16, pl, 0, 0, n, M, K, x, K, W, M, out, M, ep);
}

static void FM_SFN(fm_plan_input)(fm_gemm_plan *pl, fm_epilogue *ep, ptrdiff_t n,
                                  ptrdiff_t K, ptrdiff_t M, const T *g, const T *W, T *gx,
                                  int act, const T *a, int bf16)
{
    *ep = (fm_epilogue){.kind = FM_EPI_NONE, .act = act, .ldo = K};
    if (act != FM_LINEAR) {
        ep->act_out = a;
        if (act != FM_SOFTMAX)
            ep->kind = FM_EPI_MUL_DACT;
    }
    FM_PLAN(bf16, pl, 0, 1, n, K, M, g, M, W, M, gx, K, ep);
}

static void FM_SFN(fm_plan_weight)(fm_gemm_plan *pl, ptrdiff_t n, ptrdiff_t K, ptrdiff_t M,
                                   const T *x, const T *g, T *gW, int bf16,
                                   const fm_epilogue *ep)
{
    FM_PLAN(bf16, pl, 1, 0, K, M, n, x, K, g, M, gW, M, ep);
}

int FM_SFN(fm_dense_forward)(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M, const T *x,
                             const T *W, const T *b, T *out, int act, int bf16)
{
    fm_gemm_plan pl;
    fm_epilogue ep;
    FM_SFN(fm_plan_forward)(&pl, &ep, n, K, M, x, W, b, out, act, bf16);
    if (fm_gemm_alone(&pl) != 0)
        return -1;
    if (act == FM_SOFTMAX)
        FM_SFN(fm_activation_forward)(act, n, M, out, out);
    return 0;
}

int FM_SFN(fm_dense_backward_input)(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M, const T *g,
                                    const T *W, T *gx, int act, const T *a, int bf16)
{
    fm_gemm_plan pl;
    fm_epilogue ep;
    FM_SFN(fm_plan_input)(&pl, &ep, n, K, M, g, W, gx, act, a, bf16);
    if (fm_gemm_alone(&pl) != 0)
        return -1;
    if (act == FM_SOFTMAX)
        FM_SFN(fm_activation_backward)(act, n, K, a, gx);
    return 0;
}

int FM_SFN(fm_dense_backward_weight)(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M, const T *x,
                                     const T *g, T *gW, T *gb, int bf16)
{
    fm_gemm_plan pl;
    FM_SFN(fm_plan_weight)(&pl, n, K, M, x, g, gW, bf16, NULL);
    /* The bias gradient summed as the product packs g, where it can. */
    int summed = fm_bias_sums_on && fm_gemm_b_sums(&pl, gb);
    if (fm_gemm_alone(&pl) != 0)
        return -1;
    if (!summed) {
        unsigned csr = fm_flush_enter();
        FM_SFN(fm_gemm_column_sums)(g, M, n, 0, M, gb);
        fm_flush_leave(csr);
    }
    return 0;
}

/* The optimizer's update of one block of parameters (a weight matrix of ld
   columns, or a bias), fused into the weight gradient's product: each finished
   block of the gradient (an epilogue hook, gemm.h) updates its own parameters
   while it is in cache. */
typedef struct {
    int rule;
    /* The matrix's rows are ld apart; or, with nr, it lies in panels of nr
       columns and `depth` rows (fm_step_panels). */
    ptrdiff_t ld, nr, depth;
    const T *p;
    T *s1, *s2, *out;
    const fm_hyper *h;
} FM_SFN(fm_update_block);

/* The update of the parameters at entry `at` of the block's vectors, `runs` runs
   of w of them ldp apart, from the gradient's runs at g, ldg apart. */
static void FM_SFN(fm_update_at)(const FM_SFN(fm_update_block) *u, ptrdiff_t at,
                                 ptrdiff_t runs, ptrdiff_t w, ptrdiff_t ldp, const T *g,
                                 ptrdiff_t ldg)
{
    FM_SFN(fm_update_runs)(u->rule, runs, w, ldp, ldg, u->p + at, g,
                           u->s1 ? u->s1 + at : NULL, u->s2 ? u->s2 + at : NULL,
                           u->out + at, u->h);
}

static void FM_SFN(fm_update_rows)(const void *ctx, ptrdiff_t i0, ptrdiff_t j0, ptrdiff_t m,
                                   ptrdiff_t n, const void *blk, ptrdiff_t ldb)
{
    const FM_SFN(fm_update_block) *u = ctx;
    const ptrdiff_t nr = u->nr;
    if (nr == 0) {
        FM_SFN(fm_update_at)(u, i0 * u->ld + j0, m, n, u->ld, blk, ldb);
        return;
    }
    /* In panels (j0 and n are whole panels): rows i0.. of a panel lie one after
       another. */
    for (ptrdiff_t q = j0 / nr; q < (j0 + n) / nr; q++)
        FM_SFN(fm_update_at)(u, (q * u->depth + i0) * nr, m, nr, nr,
                             (const T *)blk + q * nr - j0, ldb);
}

/* The same for a block of whole panels laid out as the weights are (gemm.h's
   hook_panels): each panel's gradient and parameters in one run of m * nr. */
static void FM_SFN(fm_update_panels)(const void *ctx, ptrdiff_t i0, ptrdiff_t j0,
                                     ptrdiff_t m, ptrdiff_t n, const void *blk)
{
    const FM_SFN(fm_update_block) *u = ctx;
    const ptrdiff_t nr = u->nr;
    for (ptrdiff_t q = j0 / nr; q < (j0 + n) / nr; q++)
        FM_SFN(fm_update_at)(u, (q * u->depth + i0) * nr, 1, m * nr, 0,
                             (const T *)blk + (q - j0 / nr) * m * nr, 0);
}

/* The block of the flat vectors that starts at entry `at`, updated with h if it is
   among the first n_weights entries (decayed), else with plain. */
static FM_SFN(fm_update_block)
    FM_SFN(fm_block)(const fm_step_net *net, const fm_step_ws *ws, ptrdiff_t at,
                     ptrdiff_t ld, const T *p, T *out, const fm_hyper *h,
                     const fm_hyper *plain)
{
    T *s1 = (T *)ws->s1, *s2 = (T *)ws->s2;
    FM_SFN(fm_update_block) u = {.rule = net->rule, .ld = ld, .p = p + at,
                                 .s1 = s1 ? s1 + at : NULL,
                                 .s2 = s2 ? s2 + at : NULL, .out = out + at,
                                 .h = at < net->n_weights ? h : plain};
    return u;
}

/* Where weight matrix i and bias i start in the flat parameter vector. */
static ptrdiff_t FM_SFN(fm_w_at)(const fm_step_net *net, int i)
{
    ptrdiff_t at = 0;
    for (int j = 0; j < i; j++)
        at += net->sizes[j] * net->sizes[j + 1];
    return at;
}

static ptrdiff_t FM_SFN(fm_b_at)(const fm_step_net *net, int i)
{
    ptrdiff_t at = net->n_weights;
    for (int j = 0; j < i; j++)
        at += net->sizes[j + 1];
    return at;
}

/* A layer's part of a step: its three products planned, with their epilogues and
   the update of its weights and bias. */
typedef struct {
    fm_gemm_plan fwd, wgt, inp;
    fm_epilogue ef, ew, ei;
    FM_SFN(fm_update_block) uw, ub;
    int bias_sums; /* the bias gradient summed by the weight gradient (fm_gemm_b_sums) */
} FM_SFN(fm_layer_step);

/* The step runs in one parallel region: every product is planned first (gemm.h),
   then the team takes each kernel in turn, split as it would split it alone (the
   same tiles, rows and columns, so the same bits), with a barrier (fm_team.h)
   wherever a kernel reads what the one before wrote; thread 0 sums the loss in
   sample order. A layer's weight gradient, its bias gradient and update and its
   input gradient read nothing the others write, so they follow one another
   without a barrier. */
int FM_SFN(fm_train_step)(const fm_step_net *net, const fm_step_ws *ws, const T *X,
                          const T *Y, const ptrdiff_t *rows, ptrdiff_t m, const T *p,
                          T *out, const fm_hyper *h, double *total, long *hits)
{
    const int L = net->n_layers, last = L - 1;
    const ptrdiff_t *sz = net->sizes;
    const int *act = net->act;
    T *const *a = (T *const *)ws->a;
    T *const *g = (T *const *)ws->g;
    T *xb = (T *)ws->x, *yb = (T *)ws->y, *z = (T *)ws->z, *grad = (T *)ws->grad;
    FM_SFN(fm_layer_step) *ls;
    fm_barrier bar = {0, 0, 0};
    long hit_sum = 0;
    /* 0 while the step goes on; 1 when the loss is not finite, -1 when a forward
       product failed (both before anything is updated). */
    int state = 0, failed = 0;
    int team = 1;
    if (L < 1)
        return 0;
    /* The update is fused into the backward pass: no product may fail there. */
    if (fm_gemm_reserve(sizeof(T)) != 0)
        return -1;
    ls = fm_step_memory((size_t)L * sizeof *ls + (size_t)m * sizeof(const T *));
    if (ls == NULL)
        return -1;
    /* The batch's rows in X, where the first layer's products read them as they lie
       instead of gathered into xb (fm_gemm_a_rows): the same values, the same sums. */
    const T **xr = (const T **)(void *)(ls + L);
    const fm_hyper plain = fm_hyper_undecayed(h);
    for (int i = 0; i < L; i++) {
        const T *inp = i == 0 ? xb : a[i - 1];
        ptrdiff_t w_at = FM_SFN(fm_w_at)(net, i), b_at = FM_SFN(fm_b_at)(net, i);
        FM_SFN(fm_layer_step) *l = &ls[i];
        /* Forward: hidden layers fused with their activation, the last keeps its
           logits. */
        FM_SFN(fm_plan_forward)(&l->fwd, &l->ef, m, sz[i], sz[i + 1], inp, p + w_at,
                                p + b_at, i < last ? a[i] : z,
                                i < last ? act[i] : FM_LINEAR, net->bf16);
        /* Backward: the weights updated block by block in their gradient's
           epilogue, the bias after its gradient (each element as fm_update_*
           computes it); the input gradient reads the old weights, which stay in
           p. */
        l->uw = FM_SFN(fm_block)(net, ws, w_at, sz[i + 1], p, out, h, &plain);
        l->ub = FM_SFN(fm_block)(net, ws, b_at, 0, p, out, h, &plain);
        if (i == 0 && ws->panels) {
            /* The weights in panels: read as they lie, updated there. */
            if (l->fwd.nr != ws->panels || !fm_gemm_b_panels(&l->fwd))
                return -1;
            l->uw.nr = ws->panels;
            l->uw.depth = sz[0];
        }
        l->ew = (fm_epilogue){.kind = FM_EPI_HOOK, .hook = FM_SFN(fm_update_rows),
                              .ctx = &l->uw, .c_unused = 1};
        FM_SFN(fm_plan_weight)(&l->wgt, m, sz[i], sz[i + 1], inp, g[i], grad + w_at,
                               net->bf16, &l->ew);
        /* Each thread updating the columns of the weights that it reads next. */
        if (i == 0 && ws->panels) {
            fm_gemm_split_as(&l->wgt, &l->fwd);
            /* Its blocks summed in panels as the weights lie, where they are whole
               panels of the same width. */
            if (l->wgt.nr == ws->panels)
                l->ew.hook_panels = FM_SFN(fm_update_panels);
        }
        /* The bias gradient summed as the weight gradient packs the layer's gradient
           (the columns each thread updates below), where it packs all of it. */
        l->bias_sums = fm_bias_sums_on && fm_gemm_b_sums(&l->wgt, grad + b_at);
        if (i > 0)
            FM_SFN(fm_plan_input)(&l->inp, &l->ei, m, sz[i], sz[i + 1], g[i], p + w_at,
                                  g[i - 1], act[i - 1], a[i - 1], net->bf16);
    }
    /* Both of the first layer's products that read the batch, or neither; and only
       a batch too large to stay in cache once gathered (FM_STEP_ROWS_BYTES). */
    int x_rows = (size_t)m * (size_t)sz[0] * sizeof(T) > FM_STEP_ROWS_BYTES &&
                 fm_gemm_a_rows(&ls[0].fwd, xr);
    if (x_rows && !fm_gemm_a_rows(&ls[0].wgt, xr)) {
        fm_gemm_a_rows(&ls[0].fwd, NULL);
        x_rows = 0;
    }
#ifdef _OPENMP
    team = omp_get_max_threads();
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
        int t = 0, nt = 1, sense = 0;
        ptrdiff_t lo, hi;
        unsigned csr = fm_flush_enter();
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        /* The phase clock (fm_phase_add), read only when the step is timed. */
        double t0 = ws->phase != NULL ? fm_now() : 0;
#define FM_PHASE(k) fm_phase_add(ws, t, FM_PHASE_##k, &t0)
#define FM_WAIT()                                                                      \
    do {                                                                               \
        fm_barrier_wait(&bar, &sense);                                                 \
        FM_PHASE(WAIT);                                                                \
    } while (0)
        fm_barrier_join(&bar, nt);
        fm_team_share(m, 1, t, nt, &lo, &hi);
        if (x_rows) {
            for (ptrdiff_t r = lo; r < hi; r++)
                xr[r] = X + rows[r] * sz[0];
        } else {
            FM_SFN(fm_take_rows_part)(X, rows, lo, hi, sz[0], xb);
        }
        FM_SFN(fm_take_rows_part)(Y, rows, lo, hi, sz[L], yb);
        FM_PHASE(GATHER);
        FM_WAIT();
        for (int i = 0; i < L; i++) {
            fm_gemm_run(&ls[i].fwd, t, nt);
            FM_PHASE(FORWARD);
            FM_WAIT();
            if (i < last && act[i] == FM_SOFTMAX) {
                fm_team_share(m, FM_ROWS_UNIT, t, nt, &lo, &hi);
                FM_SFN(fm_activation_forward_rows)(act[i], lo, hi, sz[i + 1], a[i], a[i]);
                FM_PHASE(ROWS);
                FM_WAIT();
            }
        }
        fm_team_share(m, FM_ROWS_UNIT, t, nt, &lo, &hi);
        __atomic_fetch_add(&hit_sum,
                           FM_SFN(fm_loss_grad_rows)(net->loss, act[last], m, lo, hi, sz[L],
                                                     z, a[last], yb, g[last],
                                                     (T *)ws->row_loss),
                           __ATOMIC_RELAXED);
        FM_PHASE(ROWS);
        FM_WAIT();
        if (t == 0) {
            *total = FM_SFN(fm_loss_sum)(m, (const T *)ws->row_loss);
            *hits = hit_sum;
            for (int i = 0; i < L; i++)
                if (ls[i].fwd.failed)
                    state = -1;
            if (state == 0 && !isfinite(*total))
                state = 1;
            FM_PHASE(LOSS_SUM);
        }
        FM_WAIT();
        for (int i = last; state == 0 && i >= 0; i--) {
            FM_SFN(fm_layer_step) *l = &ls[i];
            ptrdiff_t b_at = FM_SFN(fm_b_at)(net, i);
            fm_gemm_run(&l->wgt, t, nt);
            FM_PHASE(WEIGHT);
            /* The bias: this thread's columns, whole cache lines of them. */
            fm_team_share(sz[i + 1], 64 / sizeof(T), t, nt, &lo, &hi);
            if (lo < hi) {
                if (!l->bias_sums)
                    FM_SFN(fm_gemm_column_sums)(g[i], sz[i + 1], m, lo, hi,
                                                grad + b_at);
                FM_SFN(fm_update_rows)(&l->ub, 0, lo, 1, hi - lo, grad + b_at + lo, 0);
            }
            FM_PHASE(BIAS);
            if (i > 0) {
                fm_gemm_run(&l->inp, t, nt);
                FM_PHASE(INPUT);
                FM_WAIT();
                if (act[i - 1] == FM_SOFTMAX) {
                    fm_team_share(m, FM_ROWS_UNIT, t, nt, &lo, &hi);
                    FM_SFN(fm_activation_backward_rows)(act[i - 1], lo, hi, sz[i], a[i - 1],
                                                        g[i - 1]);
                    FM_PHASE(ROWS);
                    FM_WAIT();
                }
            }
        }
#undef FM_WAIT
#undef FM_PHASE
        fm_flush_leave(csr);
    }
    /* The threads' shares of the products move toward the speeds just seen. */
    for (int i = 0; i < L; i++) {
        failed |= fm_gemm_done(&ls[i].fwd) != 0;
        failed |= fm_gemm_done(&ls[i].wgt) != 0;
        if (i > 0)
            failed |= fm_gemm_done(&ls[i].inp) != 0;
    }
    if (state != 0)
        return state;
    return failed ? -1 : 0;
}

void FM_SFN(fm_step_panels)(const fm_step_net *net, T *const *vec, int n, int nr,
                            int to_panels, T *tmp)
{
    const ptrdiff_t K = net->sizes[0], N = net->sizes[1];
    const size_t run = (size_t)nr * sizeof(T);
    for (int v = 0; v < n; v++) {
        T *w = vec[v];
        if (w == NULL)
            continue;
        memcpy(tmp, w, (size_t)(K * N) * sizeof(T));
        for (ptrdiff_t q = 0; q < N / nr; q++)
            for (ptrdiff_t k = 0; k < K; k++) {
                ptrdiff_t in_rows = k * N + q * nr, in_panels = (q * K + k) * nr;
                if (to_panels)
                    memcpy(w + in_panels, tmp + in_rows, run);
                else
                    memcpy(w + in_rows, tmp + in_panels, run);
            }
    }
}

#undef FM_SFN
#undef FM_SCAT
#undef FM_SCAT_
