/* The type-generic part of step.c (the dense layer's kernels and the step), included
   once per type with T, SUF and FM_GEMM defined. Not a public header. */

#define FM_SCAT_(a, b) a##b
#define FM_SCAT(a, b) FM_SCAT_(a, b)
#define FM_SFN(name) FM_SCAT(name, SUF)

void FM_SFN(fm_take_rows)(const T *src, const ptrdiff_t *rows, ptrdiff_t m, ptrdiff_t w,
                          T *out)
{
    ptrdiff_t i;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (m * w >= 65536)
#endif
    for (i = 0; i < m; i++)
        memcpy(out + i * w, src + rows[i] * w, (size_t)w * sizeof(T));
}

int FM_SFN(fm_dense_forward)(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M, const T *x,
                             const T *W, const T *b, T *out, int act, int bf16)
{
    fm_epilogue ep = {.kind = FM_EPI_BIAS_ACT, .act = act == FM_SOFTMAX ? FM_LINEAR : act,
                      .bias = b};
    if (FM_GEMM(bf16, 0, 0, n, M, K, x, K, W, M, out, M, &ep) != 0)
        return -1;
    if (act == FM_SOFTMAX)
        FM_SFN(fm_activation_forward)(act, n, M, out, out);
    return 0;
}

int FM_SFN(fm_dense_backward_input)(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M, const T *g,
                                    const T *W, T *gx, int act, const T *a, int bf16)
{
    fm_epilogue ep = {.kind = FM_EPI_NONE, .act = act, .ldo = K};
    if (act != FM_LINEAR) {
        ep.act_out = a;
        if (act != FM_SOFTMAX)
            ep.kind = FM_EPI_MUL_DACT;
    }
    if (FM_GEMM(bf16, 0, 1, n, K, M, g, M, W, M, gx, K, &ep) != 0)
        return -1;
    if (act == FM_SOFTMAX)
        FM_SFN(fm_activation_backward)(act, n, K, a, gx);
    return 0;
}

/* gb[j] = the sum of g[i][j] over the n rows, i ascending. */
FM_CLONE_BODY FM_SCAT(FM_SFN(fm_column_sums), _body)(ptrdiff_t n, ptrdiff_t M, const T *g,
                                                     T *gb)
{
    for (ptrdiff_t j = 0; j < M; j++)
        gb[j] = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *gi = g + i * M;
        for (ptrdiff_t j = 0; j < M; j++)
            gb[j] += gi[j];
    }
}

FM_LEVEL_CLONES(FM_SFN(fm_column_sums), (ptrdiff_t n, ptrdiff_t M, const T *g, T *gb),
                (n, M, g, gb))

/* fm_dense_backward_weight with an epilogue on gW as its product finishes it. */
static int FM_SFN(fm_weight_grad)(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M, const T *x,
                                  const T *g, T *gW, T *gb, int bf16, const fm_epilogue *ep)
{
    if (FM_GEMM(bf16, 1, 0, K, M, n, x, K, g, M, gW, M, ep) != 0)
        return -1;
    FM_SFN(fm_column_sums)(n, M, g, gb);
    return 0;
}

int FM_SFN(fm_dense_backward_weight)(ptrdiff_t n, ptrdiff_t K, ptrdiff_t M, const T *x,
                                     const T *g, T *gW, T *gb, int bf16)
{
    return FM_SFN(fm_weight_grad)(n, K, M, x, g, gW, gb, bf16, NULL);
}

/* The optimizer's update of one block of parameters (a weight matrix of ld
   columns, or a bias), fused into the weight gradient's product: each finished
   block of the gradient (an epilogue hook, gemm.h) updates its own parameters
   while it is in cache. */
typedef struct {
    int rule;
    ptrdiff_t ld;
    const T *p;
    T *s1, *s2, *out;
    const fm_hyper *h;
} FM_SFN(fm_update_block);

static void FM_SFN(fm_update_rows)(const void *ctx, ptrdiff_t i0, ptrdiff_t j0, ptrdiff_t m,
                                   ptrdiff_t n, const void *blk, ptrdiff_t ldb)
{
    const FM_SFN(fm_update_block) *u = ctx;
    for (ptrdiff_t r = 0; r < m; r++) {
        ptrdiff_t at = (i0 + r) * u->ld + j0;
        FM_SFN(fm_update_span)(u->rule, 0, n, u->p + at, (const T *)blk + r * ldb,
                               u->s1 ? u->s1 + at : NULL, u->s2 ? u->s2 + at : NULL,
                               u->out + at, u->h);
    }
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

int FM_SFN(fm_train_step)(const fm_step_net *net, const fm_step_ws *ws, const T *X,
                          const T *Y, const ptrdiff_t *rows, ptrdiff_t m, const T *p,
                          T *out, const fm_hyper *h, double *total, long *hits)
{
    const int L = net->n_layers, last = L - 1;
    const ptrdiff_t *sz = net->sizes;
    T *const *a = (T *const *)ws->a;
    T *const *g = (T *const *)ws->g;
    T *xb = (T *)ws->x, *yb = (T *)ws->y, *z = (T *)ws->z, *grad = (T *)ws->grad;
    if (L < 1)
        return 0;
    /* The update is fused into the backward pass: no product may fail there. */
    if (fm_gemm_reserve(sizeof(T)) != 0)
        return -1;
    FM_SFN(fm_take_rows)(X, rows, m, sz[0], xb);
    FM_SFN(fm_take_rows)(Y, rows, m, sz[L], yb);
    /* Forward: hidden layers fused with their activation, the last keeps its logits. */
    for (int i = 0; i < L; i++) {
        const T *inp = i == 0 ? xb : a[i - 1];
        const T *W = p + FM_SFN(fm_w_at)(net, i), *b = p + FM_SFN(fm_b_at)(net, i);
        if (FM_SFN(fm_dense_forward)(m, sz[i], sz[i + 1], inp, W, b, i < last ? a[i] : z,
                                     i < last ? net->act[i] : FM_LINEAR, net->bf16))
            return -1;
    }
    *total = 0;
    *hits = 0;
    FM_SFN(fm_loss_grad)(net->loss, net->act[last], m, sz[L], z, a[last], yb, g[last],
                         (T *)ws->row_loss, total, hits);
    if (!isfinite(*total))
        return 1;
    const fm_hyper plain = fm_hyper_undecayed(h);
    /* Backward, from the output layer down, each layer's parameters updated as
       soon as their gradient is known: a weight matrix block by block in its
       gradient's epilogue, then the bias (each element as fm_update_* computes
       it; the layer's input gradient reads the old weights, which stay in p). */
    for (int i = last; i >= 0; i--) {
        const T *inp = i == 0 ? xb : a[i - 1];
        ptrdiff_t w_at = FM_SFN(fm_w_at)(net, i), b_at = FM_SFN(fm_b_at)(net, i);
        FM_SFN(fm_update_block) uw =
            FM_SFN(fm_block)(net, ws, w_at, sz[i + 1], p, out, h, &plain);
        FM_SFN(fm_update_block) ub = FM_SFN(fm_block)(net, ws, b_at, 0, p, out, h, &plain);
        fm_epilogue ep = {.kind = FM_EPI_HOOK, .hook = FM_SFN(fm_update_rows), .ctx = &uw,
                          .c_unused = 1};
        if (FM_SFN(fm_weight_grad)(m, sz[i], sz[i + 1], inp, g[i], grad + w_at, grad + b_at,
                                   net->bf16, &ep))
            return -1;
        FM_SFN(fm_update_rows)(&ub, 0, 0, 1, sz[i + 1], grad + b_at, 0);
        if (i > 0 && FM_SFN(fm_dense_backward_input)(m, sz[i], sz[i + 1], g[i], p + w_at,
                                                     g[i - 1], net->act[i - 1], a[i - 1],
                                                     net->bf16))
            return -1;
    }
    return 0;
}

#undef FM_SFN
#undef FM_SCAT
#undef FM_SCAT_
