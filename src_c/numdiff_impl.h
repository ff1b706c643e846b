/* The hot loops of numdiff.c, included once per instruction set with
   FM_ND_NAME(name) (the function's name), FM_ND_ATTR (its target attribute) and
   FM_VFMA(a, b, c) (a * b + c rounded once, on fm_vd vectors) defined. Not a
   public header. */

/* g[i] = (L(z1_j + xs_i h) - L(z1_j - xs_i h)) / 2h for i < n: the central
   differences of W1[i, j] (xs = x) or of b1_j (xs = {1}).

   FM_LANES inputs at a time: P+ and P- are the products over the outputs of
   (1 + y_k (exp(c_k) - 1)) for the two changes c_k = da W2[j,k] of z2_k,
   carried as P - 1 so that no digits are lost to the leading 1, and
   L(+) - L(-) = log(P+ / P-) - (da+ - da-) tau. A lane whose ratio falls
   outside the series' range is done again by unit_diff_exact. */
FM_ND_ATTR static void
FM_ND_NAME(unit_gradient)(const fm_point *p, const fm_unit *u, const double *cy,
                          const double *xs, ptrdiff_t n, double *g)
{
    const double h = p->h, inv2h = 0.5 / h;
    const ptrdiff_t K = p->K;
    if (!u->fast) {
        for (ptrdiff_t i = 0; i < n; i++)
            g[i] = unit_diff_exact(p, u, xs[i] * h) * inv2h;
        return;
    }
    for (ptrdiff_t i = 0; i < n; i += FM_LANES) {
        fm_vd x = {0.0};
        const ptrdiff_t lanes = n - i < FM_LANES ? n - i : FM_LANES;
        memcpy(&x, xs + i, (size_t)lanes * sizeof(double));
        fm_vd dp = x * h, dm = -dp;
        fm_vd ep = FM_VEXPM1_SMALL(dp), em = FM_VEXPM1_SMALL(dm);
        fm_vd dap = u->q * ep / FM_VFMA(fm_splat(u->a), ep, fm_splat(1.0));
        fm_vd dam = u->q * em / FM_VFMA(fm_splat(u->a), em, fm_splat(1.0));
        fm_vd up = {0.0}, um = up;
        for (ptrdiff_t k = 0; k < K; k++) {
            const double *f = cy + k * FM_NCOEF;
            /* Horner's rule for dap (f0 + dap (f1 + ... + dap f4)), fused. */
            fm_vd vp = fm_splat(f[4]), vm = vp;
            for (int c = 3; c >= 0; c--) {
                vp = FM_VFMA(dap, vp, fm_splat(f[c]));
                vm = FM_VFMA(dam, vm, fm_splat(f[c]));
            }
            vp = dap * vp;
            vm = dam * vm;
            up = FM_VFMA(up, vp, up + vp);   /* (1 + up)(1 + vp) - 1 */
            um = FM_VFMA(um, vm, um + vm);
        }
        fm_vd s = (up - um) / (2.0 + up + um), s2 = s * s;
        fm_vd r = FM_VFMA(dam - dap, fm_splat(u->tau), FM_VLOG_RATIO_SMALL(s, s2)) * inv2h;
        int outside = 0;
        for (int l = 0; l < FM_LANES; l++)
            outside |= !(FM_LANE(s2, l) <= FM_SMALL_S * FM_SMALL_S);
        if (!outside && lanes == FM_LANES) {
            memcpy(g + i, &r, sizeof r);
            continue;
        }
        for (ptrdiff_t l = 0; l < lanes; l++)
            g[i + l] = FM_LANE(s2, l) <= FM_SMALL_S * FM_SMALL_S
                           ? FM_LANE(r, l) : unit_diff_exact(p, u, xs[i + l] * h) * inv2h;
    }
}

/* w -= lr g over n entries; *sx = x . w and *sy = y . w with the new w, summed in
   FM_LANES interleaved partial sums (the same order on every thread). */
FM_ND_ATTR static void
FM_ND_NAME(step_dot2)(double *w, const double *g, ptrdiff_t n, double lr, const double *x,
                      const double *y, double *sx, double *sy)
{
    fm_vd ax = {0.0}, ay = ax;
    ptrdiff_t i = 0;
    for (; i + FM_LANES <= n; i += FM_LANES) {
        fm_vd wv, gv, xv, yv;
        memcpy(&wv, w + i, sizeof wv);
        memcpy(&gv, g + i, sizeof gv);
        memcpy(&xv, x + i, sizeof xv);
        memcpy(&yv, y + i, sizeof yv);
        wv = FM_VFMA(fm_splat(-lr), gv, wv);
        memcpy(w + i, &wv, sizeof wv);
        ax = FM_VFMA(xv, wv, ax);
        ay = FM_VFMA(yv, wv, ay);
    }
    double tx = 0.0, ty = 0.0;
    for (int l = 0; l < FM_LANES; l++) {
        tx += FM_LANE(ax, l);
        ty += FM_LANE(ay, l);
    }
    for (; i < n; i++) {
        w[i] = fma(-lr, g[i], w[i]);
        tx = fma(x[i], w[i], tx);
        ty = fma(y[i], w[i], ty);
    }
    *sx = tx;
    *sy = ty;
}
