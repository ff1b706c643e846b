# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Compiled kernels of the ``cpu`` backend (private: use ``fastmlp.backends``).

Shapes follow the dense layer ``out = act(x @ W + b)``:
x is (n, k), W is (k, m), b is (m,), out is (n, m).

Every kernel trusts its inputs (C-contiguous, matching shapes and dtype): the
Python layer above validates them. Work is split across threads only along
output elements, and every sum runs in a fixed order inside one thread, so the
results are bitwise identical for any number of threads.
"""

from cython.parallel cimport prange
from libc.math cimport exp, log, log1p, tanh, fabs
from libc.string cimport memcpy

ctypedef fused floating:
    float
    double

cdef extern from "cpu_features.h":
    const char *fm_simd_level() nogil
    int fm_have_openmp() nogil
    int fm_get_max_threads() nogil
    void fm_set_num_threads(int n) nogil

# Ids shared with fastmlp.functions (ACTIVATIONS and LOSSES are in this order).
cdef enum:
    LINEAR = 0
    RELU = 1
    SIGMOID = 2
    TANH = 3
    SOFTMAX = 4

cdef enum:
    CROSS_ENTROPY = 0
    BINARY_CROSS_ENTROPY = 1
    MSE = 2

def simd_level():
    return fm_simd_level().decode("ascii")


def have_openmp():
    return bool(fm_have_openmp())


def get_num_threads():
    return fm_get_max_threads()


def set_num_threads(int n):
    fm_set_num_threads(n)


# --------------------------------------------------------------------------
# Dense layer products
# --------------------------------------------------------------------------

cdef extern from "gemm.h":
    ctypedef struct fm_epilogue:
        int kind
        int act
        const void *bias
        const void *act_out
        Py_ssize_t ldo
    int FM_EPI_NONE, FM_EPI_BIAS_ACT, FM_EPI_MUL_DACT
    int fm_sgemm(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                 const float *A, Py_ssize_t lda, const float *B, Py_ssize_t ldb,
                 float *C, Py_ssize_t ldc, const fm_epilogue *ep) nogil
    int fm_dgemm(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                 const double *A, Py_ssize_t lda, const double *B, Py_ssize_t ldb,
                 double *C, Py_ssize_t ldc, const fm_epilogue *ep) nogil
    int fm_gemm_best_level() nogil
    int fm_gemm_level() nogil
    void fm_gemm_set_level(int level) nogil
    void fm_gemm_tile(int level, int is_double, int *mr, int *nr) nogil


# Microkernel levels of gemm.h, lowest first.
GEMM_LEVELS = ("scalar", "avx2", "avx512")


def gemm_best_level():
    """The best microkernel level this CPU supports: 'scalar', 'avx2' or 'avx512'."""
    return GEMM_LEVELS[fm_gemm_best_level()]


def gemm_level():
    """The microkernel level in use."""
    return GEMM_LEVELS[fm_gemm_level()]


def set_gemm_level(str level):
    """Use the microkernels of ``level`` (at most ``gemm_best_level()``)."""
    cdef int i = GEMM_LEVELS.index(level)
    if i > fm_gemm_best_level():
        raise ValueError(f"this CPU does not support {level!r} (best: {gemm_best_level()!r})")
    fm_gemm_set_level(i)


def _cap_from_environment():
    # FASTMLP_SIMD caps the microkernels' instruction set (for tests and comparisons).
    import os
    value = os.environ.get("FASTMLP_SIMD", "").strip().lower()
    if not value:
        return
    if value not in GEMM_LEVELS:
        raise ValueError(f"FASTMLP_SIMD={value!r} is not a SIMD level; valid levels are: "
                          f"{', '.join(GEMM_LEVELS)}")
    fm_gemm_set_level(min(GEMM_LEVELS.index(value), fm_gemm_best_level()))


_cap_from_environment()


def gemm_tile(str level, bint is_double):
    """(rows, columns) of the register tile of ``level``'s microkernel."""
    cdef int mr = 0, nr = 0
    fm_gemm_tile(GEMM_LEVELS.index(level), is_double, &mr, &nr)
    return mr, nr


cdef int _gemm(bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
               const floating *A, Py_ssize_t lda, const floating *B, Py_ssize_t ldb,
               floating *C, Py_ssize_t ldc, const fm_epilogue *ep) except -1 nogil:
    cdef int rc
    if floating is float:
        rc = fm_sgemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, ep)
    else:
        rc = fm_dgemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, ep)
    if rc != 0:
        with gil:
            raise MemoryError("fastmlp: no memory for the matrix product's packing buffers")
    return 0


def matmul(const floating[:, :] a, const floating[:, :] b, floating[:, ::1] out):
    """out = a @ b for row-major a and b, or transposed views of row-major arrays
    (one stride 1 in each); the kernel under the dense layers, exposed for tests
    and benchmarks."""
    cdef bint ta = a.strides[1] != sizeof(floating)
    cdef bint tb = b.strides[1] != sizeof(floating)
    cdef Py_ssize_t lda = (a.strides[1] if ta else a.strides[0]) // sizeof(floating)
    cdef Py_ssize_t ldb = (b.strides[1] if tb else b.strides[0]) // sizeof(floating)
    if (ta and a.strides[0] != sizeof(floating)) or (tb and b.strides[0] != sizeof(floating)):
        raise ValueError("matmul needs row-major arrays or transposes of them")
    if a.shape[0] == 0 or out.shape[1] == 0:
        return
    with nogil:
        _gemm(ta, tb, a.shape[0], b.shape[1], a.shape[1], &a[0, 0], lda, &b[0, 0], ldb,
              &out[0, 0], out.shape[1], NULL)


def dense_forward(const floating[:, ::1] x, const floating[:, ::1] W,
                  const floating[::1] b, floating[:, ::1] out, int act=LINEAR):
    """out = act(x @ W + b); bias and an elementwise activation are applied to each
    output tile as the product finishes it."""
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], M = W.shape[1], i
    cdef fm_epilogue ep
    if n == 0 or M == 0:
        return
    ep.kind = FM_EPI_BIAS_ACT
    ep.act = LINEAR if act == SOFTMAX else act
    ep.bias = &b[0]
    ep.act_out = NULL
    ep.ldo = 0
    with nogil:
        _gemm(False, False, n, M, K, &x[0, 0], K, &W[0, 0], M, &out[0, 0], M, &ep)
    if act == SOFTMAX:
        for i in prange(n, nogil=True, schedule="static"):
            _activate_row(act, &out[i, 0], &out[i, 0], M)


def dense_backward_input(const floating[:, ::1] g, const floating[:, ::1] W,
                         floating[:, ::1] gx, int act=LINEAR, a=None):
    """gx = (g @ W.T) * act'(z): the gradient with respect to the pre-activation of the
    layer below, written with that layer's output a = act(z) (needed unless act is
    linear). The derivative of an elementwise activation is applied per tile."""
    cdef Py_ssize_t n = g.shape[0], M = g.shape[1], K = W.shape[0], i
    cdef const floating[:, ::1] av
    cdef fm_epilogue ep
    if n == 0 or K == 0:
        return
    ep.kind = FM_EPI_NONE
    ep.act = act
    ep.bias = NULL
    ep.act_out = NULL
    ep.ldo = K
    if act != LINEAR:
        av = a
        ep.act_out = &av[0, 0]
        if act != SOFTMAX:
            ep.kind = FM_EPI_MUL_DACT
    with nogil:
        _gemm(False, True, n, K, M, &g[0, 0], M, &W[0, 0], M, &gx[0, 0], K, &ep)
    if act == SOFTMAX:
        for i in prange(n, nogil=True, schedule="static"):
            _activation_grad_row(act, &av[i, 0], &gx[i, 0], K)


def dense_backward_weight(const floating[:, ::1] x, const floating[:, ::1] g,
                          floating[:, ::1] gW, floating[::1] gb):
    """gW = x.T @ g and gb = g.sum(axis=0): the parameter gradients."""
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], M = g.shape[1], i, j
    if K == 0 or M == 0:
        return
    with nogil:
        # x.T is x read with the transposed flag: K x n with leading dimension K.
        _gemm(True, False, K, M, n, &x[0, 0] if n else NULL, K, &g[0, 0] if n else NULL,
              M, &gW[0, 0], M, NULL)
        for j in range(M):
            gb[j] = 0
        for i in range(n):
            for j in range(M):
                gb[j] += g[i, j]


def take_rows(const floating[:, ::1] src, const Py_ssize_t[::1] idx, floating[:, ::1] out):
    """out[i] = src[idx[i]]: a batch gathered from the training set (idx in range)."""
    cdef Py_ssize_t n = idx.shape[0], m = src.shape[1], i
    if m == 0:
        return
    for i in prange(n, nogil=True, schedule="static"):
        memcpy(&out[i, 0], &src[idx[i], 0], m * sizeof(floating))


# --------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------

cdef inline floating _sigmoid(floating z) noexcept nogil:
    cdef floating e
    if z >= 0:
        return 1 / (1 + <floating>exp(-z))
    e = <floating>exp(z)
    return e / (1 + e)


cdef inline floating _softplus(floating z) noexcept nogil:
    # log(1 + exp(z)) without overflow.
    cdef floating m = z if z > 0 else 0
    return m + <floating>log1p(exp(-fabs(z)))


cdef inline floating _row_max(const floating *z, Py_ssize_t M) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating mx = z[0]
    for j in range(1, M):
        if z[j] > mx:
            mx = z[j]
    return mx


cdef void _activate_row(int act, const floating *z, floating *a, Py_ssize_t M) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating mx, s
    if act == RELU:
        for j in range(M):
            a[j] = z[j] if z[j] > 0 else 0
    elif act == SIGMOID:
        for j in range(M):
            a[j] = _sigmoid(z[j])
    elif act == TANH:
        for j in range(M):
            a[j] = <floating>tanh(z[j])
    elif act == SOFTMAX:
        mx = _row_max(z, M)
        s = 0
        for j in range(M):
            a[j] = <floating>exp(z[j] - mx)
            s = s + a[j]
        s = 1 / s
        for j in range(M):
            a[j] = a[j] * s
    else:
        if a != z:
            for j in range(M):
                a[j] = z[j]


def activation_forward(int act, const floating[:, ::1] z, floating[:, ::1] a):
    """a = act(z), row by row; a may be z itself."""
    cdef Py_ssize_t n = z.shape[0], M = z.shape[1], i
    if M == 0:
        return
    for i in prange(n, nogil=True, schedule="static"):
        _activate_row(act, &z[i, 0], &a[i, 0], M)


cdef void _activation_grad_row(int act, const floating *a, floating *g,
                               Py_ssize_t M) noexcept nogil:
    # g <- g * act'(z), written with the activation's output a = act(z).
    cdef Py_ssize_t j
    cdef floating s
    if act == RELU:
        for j in range(M):
            if a[j] <= 0:
                g[j] = 0
    elif act == SIGMOID:
        for j in range(M):
            g[j] = g[j] * a[j] * (1 - a[j])
    elif act == TANH:
        for j in range(M):
            g[j] = g[j] * (1 - a[j] * a[j])
    elif act == SOFTMAX:
        # Jacobian-vector product of softmax: a * (g - <g, a>).
        s = 0
        for j in range(M):
            s = s + g[j] * a[j]
        for j in range(M):
            g[j] = a[j] * (g[j] - s)


def activation_backward(int act, const floating[:, ::1] a, floating[:, ::1] g):
    """g <- g * act'(z) in place, from the activation's output a."""
    cdef Py_ssize_t n = a.shape[0], M = a.shape[1], i
    if act == LINEAR or M == 0:
        return
    for i in prange(n, nogil=True, schedule="static"):
        _activation_grad_row(act, &a[i, 0], &g[i, 0], M)


# --------------------------------------------------------------------------
# Losses: value, gradient with respect to the last layer's logits, and hits
# --------------------------------------------------------------------------

cdef floating _loss_row(int loss, int act, const floating *z, const floating *a,
                        const floating *y, floating *g, Py_ssize_t M, floating scale,
                        floating clip) noexcept nogil:
    # Returns the sample's loss and writes g = scale * dloss/dz.
    cdef Py_ssize_t j
    cdef floating total = 0, mx, s, sum_y, p
    if loss == CROSS_ENTROPY and act == SOFTMAX:
        # -sum y log softmax(z), with log softmax(z) = z - logsumexp(z).
        mx = _row_max(z, M)
        s = 0
        for j in range(M):
            s = s + <floating>exp(z[j] - mx)
        s = mx + <floating>log(s)
        sum_y = 0
        for j in range(M):
            total = total + y[j] * (s - z[j])
            sum_y = sum_y + y[j]
        for j in range(M):
            g[j] = scale * (a[j] * sum_y - y[j])
        return total
    if loss == CROSS_ENTROPY and act == SIGMOID:
        # -sum y log sigmoid(z) = sum y softplus(-z)
        for j in range(M):
            total = total + y[j] * _softplus(-z[j])
            g[j] = scale * y[j] * (a[j] - 1)
        return total
    if loss == BINARY_CROSS_ENTROPY and act == SIGMOID:
        # -sum [y log a + (1 - y) log(1 - a)] = sum softplus(z) - y z
        for j in range(M):
            total = total + _softplus(z[j]) - y[j] * z[j]
            g[j] = scale * (a[j] - y[j])
        return total
    if loss == BINARY_CROSS_ENTROPY:
        # Any other output in (0, 1) (softmax): clip a away from 0 and 1.
        for j in range(M):
            p = a[j]
            if p < clip:
                p = clip
            elif p > 1 - clip:
                p = 1 - clip
            total = total - y[j] * <floating>log(p) - (1 - y[j]) * <floating>log(1 - p)
            g[j] = scale * (-y[j] / p + (1 - y[j]) / (1 - p))
        _activation_grad_row(act, a, g, M)
        return total
    # Mean squared error over the outputs.
    for j in range(M):
        p = a[j] - y[j]
        total = total + p * p
        g[j] = scale * 2 * p / M
    _activation_grad_row(act, a, g, M)
    return total / M


cdef inline bint _hit(const floating *a, const floating *y, Py_ssize_t M) noexcept nogil:
    # Does the prediction (argmax, or a >= 0.5 for one output) match the target's?
    cdef Py_ssize_t j, ja = 0, jy = 0
    if M == 1:
        return (a[0] >= 0.5) == (y[0] >= 0.5)
    for j in range(1, M):
        if a[j] > a[ja]:
            ja = j
        if y[j] > y[jy]:
            jy = j
    return ja == jy


def loss_grad(int loss, int act, const floating[:, ::1] z, const floating[:, ::1] a,
              const floating[:, ::1] y, floating[:, ::1] g, floating[::1] row_loss):
    """Per-sample losses into row_loss, g = d(mean loss)/dz; returns (sum of losses, hits).

    z holds the last layer's logits and a = act(z) its output. The sum runs
    serially in sample order so that it does not depend on the thread count.
    """
    cdef Py_ssize_t n = z.shape[0], M = z.shape[1], i
    cdef floating scale, clip, total = 0
    cdef long hits = 0
    if n == 0:
        return 0.0, 0
    scale = (<floating>1) / n
    clip = 1e-7 if floating is float else 1e-15
    for i in prange(n, nogil=True, schedule="static"):
        row_loss[i] = _loss_row(loss, act, &z[i, 0], &a[i, 0], &y[i, 0], &g[i, 0], M,
                                scale, clip)
    with nogil:
        for i in range(n):
            total = total + row_loss[i]
            if _hit(&a[i, 0], &y[i, 0], M):
                hits = hits + 1
    return float(total), hits


# --------------------------------------------------------------------------
# Optimizer updates, fused with L2 (the gradient of l2/2 * ||p||^2)
# --------------------------------------------------------------------------

cdef extern from "update.h":
    ctypedef struct fm_hyper:
        double lr, l2, mu, rho, eps, beta1, beta2, c1, c2
    int FM_SGD, FM_MOMENTUM, FM_NESTEROV, FM_RMSPROP, FM_ADAM
    void fm_update_s(int rule, Py_ssize_t n, const float *p, const float *g, float *s1,
                     float *s2, float *out, const fm_hyper *h) nogil
    void fm_update_d(int rule, Py_ssize_t n, const double *p, const double *g, double *s1,
                     double *s2, double *out, const fm_hyper *h) nogil


cdef void _update(int rule, floating[::1] p, const floating[::1] g, floating *s1,
                  floating *s2, out, fm_hyper *h):
    # out=None updates p in place; otherwise the new parameters go to out and p is kept.
    cdef floating[::1] o = p if out is None else out
    cdef Py_ssize_t n = p.shape[0]
    if n == 0:
        return
    with nogil:
        if floating is float:
            fm_update_s(rule, n, &p[0], &g[0], s1, s2, &o[0], h)
        else:
            fm_update_d(rule, n, &p[0], &g[0], s1, s2, &o[0], h)


def sgd_update(floating[::1] p, const floating[::1] g, double lr, double l2, out=None):
    """p -= lr * (g + l2 p)  (into out, if given, leaving p as it was)"""
    cdef fm_hyper h
    h.lr = lr
    h.l2 = l2
    _update(FM_SGD, p, g, NULL, NULL, out, &h)


def momentum_update(floating[::1] p, const floating[::1] g, floating[::1] v,
                    double lr, double mu, double l2, out=None):
    """v = mu v - lr (g + l2 p); p += v"""
    cdef fm_hyper h
    h.lr = lr
    h.mu = mu
    h.l2 = l2
    _update(FM_MOMENTUM, p, g, &v[0] if v.shape[0] else NULL, NULL, out, &h)


def nesterov_update(floating[::1] p, const floating[::1] g, floating[::1] v,
                    double lr, double mu, double l2, out=None):
    """v = mu v - lr d; p += mu v - lr d, with d = g + l2 p"""
    cdef fm_hyper h
    h.lr = lr
    h.mu = mu
    h.l2 = l2
    _update(FM_NESTEROV, p, g, &v[0] if v.shape[0] else NULL, NULL, out, &h)


def rmsprop_update(floating[::1] p, const floating[::1] g, floating[::1] s,
                   double lr, double rho, double eps, double l2, out=None):
    """s = rho s + (1 - rho) d^2; p -= lr d / (sqrt(s) + eps), with d = g + l2 p"""
    cdef fm_hyper h
    h.lr = lr
    h.rho = rho
    h.eps = eps
    h.l2 = l2
    _update(FM_RMSPROP, p, g, &s[0] if s.shape[0] else NULL, NULL, out, &h)


def adam_update(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
                double lr, double beta1, double beta2, double eps, double l2,
                double c1, double c2, out=None):
    """Adam with bias corrections c1 = 1/(1 - beta1^t), c2 = 1/(1 - beta2^t):
    m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2; p -= lr c1 m / (sqrt(c2 v) + eps)"""
    cdef fm_hyper h
    h.lr = lr
    h.beta1 = beta1
    h.beta2 = beta2
    h.eps = eps
    h.l2 = l2
    h.c1 = c1
    h.c2 = c2
    _update(FM_ADAM, p, g, &m[0] if m.shape[0] else NULL, &v[0] if v.shape[0] else NULL,
            out, &h)


# --------------------------------------------------------------------------
# Training by the numerical derivative (one sigmoid hidden layer, sigmoid
# outputs, summed binary cross-entropy), float64
# --------------------------------------------------------------------------

cdef extern from "numdiff.h":
    ctypedef struct fm_mlp1:
        Py_ssize_t n_in, n_hid, n_out
        double *W1
        double *b1
        double *W2
        double *b2
    int fm_numdiff_gradients(const fm_mlp1 *net, const double *x, const double *t, double h,
                             double *gW1, double *gb1, double *gW2, double *gb2) nogil
    Py_ssize_t fm_numdiff_train(fm_mlp1 *net, const double *X, const double *T,
                                const Py_ssize_t *rows, Py_ssize_t n, double lr, double h,
                                int analytic, double *loss_sum, Py_ssize_t *hits) nogil


cdef fm_mlp1 _mlp1(double[:, ::1] W1, double[::1] b1, double[:, ::1] W2, double[::1] b2):
    cdef fm_mlp1 net
    net.n_in = W1.shape[0]
    net.n_hid = W1.shape[1]
    net.n_out = W2.shape[1]
    net.W1 = &W1[0, 0]
    net.b1 = &b1[0]
    net.W2 = &W2[0, 0]
    net.b2 = &b2[0]
    return net


def numdiff_gradients(const double[::1] x, const double[::1] t, double[:, ::1] W1,
                      double[::1] b1, double[:, ::1] W2, double[::1] b2, double h,
                      double[:, ::1] gW1, double[::1] gb1, double[:, ::1] gW2,
                      double[::1] gb2):
    """Central differences (L(p + h) - L(p - h)) / 2h of one sample's loss in every
    parameter, all at the current weights, into gW1, gb1, gW2, gb2."""
    cdef fm_mlp1 net = _mlp1(W1, b1, W2, b2)
    cdef int status
    with nogil:
        status = fm_numdiff_gradients(&net, &x[0], &t[0], h, &gW1[0, 0], &gb1[0],
                                      &gW2[0, 0], &gb2[0])
    if status:
        raise MemoryError("no memory for the numerical derivative's buffers")


def numdiff_train(const double[:, ::1] X, const double[:, ::1] T, const Py_ssize_t[::1] rows,
                  double[:, ::1] W1, double[::1] b1, double[:, ::1] W2, double[::1] b2,
                  double lr, double h, bint analytic=False, double[::1] stats=None):
    """One numerical-derivative step per sample X[rows[i]], in order, updating the
    weights in place; returns the number of steps taken (fewer than the rows when
    the next sample's loss was not finite). analytic: derivatives by backprop, in
    the same block order.

    stats, if given, gets [steps, sum of the losses before each step, samples
    classified right] added to its first three entries before this returns, with
    no Python code in between: a Ctrl-C that arrives during the call is raised
    after the counts match the weights."""
    cdef fm_mlp1 net = _mlp1(W1, b1, W2, b2)
    cdef double loss_sum = 0
    cdef Py_ssize_t hits = 0, done = 0, n = rows.shape[0]
    if n:
        with nogil:
            done = fm_numdiff_train(&net, &X[0, 0], &T[0, 0], &rows[0], n, lr, h, analytic,
                                    &loss_sum, &hits)
    if done < 0:
        raise MemoryError("no memory for the numerical derivative's buffers")
    if stats is not None:
        stats[0] += done
        stats[1] += loss_sum
        stats[2] += hits
    return done
