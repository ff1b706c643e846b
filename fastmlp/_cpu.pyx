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
from libc.math cimport exp, log, log1p, sqrt, tanh, fabs

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

cdef enum:
    # Rows of the output handled together, so each row of W is read once per block.
    ROW_BLOCK = 4


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

cdef void _forward_rows(const floating *x, const floating *W, const floating *b,
                        floating *out, Py_ssize_t rows, Py_ssize_t K,
                        Py_ssize_t M) noexcept nogil:
    # out[r, :] = b + sum_k x[r, k] * W[k, :], k ascending, for `rows` <= ROW_BLOCK rows.
    cdef Py_ssize_t r, k, j
    cdef floating xv
    cdef floating *o
    cdef const floating *w
    for r in range(rows):
        o = out + r * M
        for j in range(M):
            o[j] = b[j]
    for k in range(K):
        w = W + k * M
        for r in range(rows):
            xv = x[r * K + k]
            o = out + r * M
            for j in range(M):
                o[j] += xv * w[j]


def dense_forward(const floating[:, ::1] x, const floating[:, ::1] W,
                  const floating[::1] b, floating[:, ::1] out):
    """out = x @ W + b."""
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], M = W.shape[1]
    cdef Py_ssize_t blocks = (n + ROW_BLOCK - 1) // ROW_BLOCK, blk, r0, rows
    if n == 0:
        return
    for blk in prange(blocks, nogil=True, schedule="static"):
        r0 = blk * ROW_BLOCK
        rows = n - r0
        if rows > ROW_BLOCK:
            rows = ROW_BLOCK
        _forward_rows(&x[r0, 0], &W[0, 0], &b[0], &out[r0, 0], rows, K, M)


def dense_backward_input(const floating[:, ::1] g, const floating[:, ::1] W,
                         floating[:, ::1] gx):
    """gx = g @ W.T: the gradient with respect to the layer's input."""
    cdef Py_ssize_t n = g.shape[0], M = g.shape[1], K = W.shape[0], i, k, j
    cdef floating s
    cdef const floating *gi
    cdef const floating *w
    for i in prange(n, nogil=True, schedule="static"):
        gi = &g[i, 0]
        for k in range(K):
            w = &W[k, 0]
            s = 0
            for j in range(M):
                s = s + gi[j] * w[j]
            gx[i, k] = s


cdef void _weight_grad_rows(const floating *x, const floating *g, floating *gW,
                            Py_ssize_t k0, Py_ssize_t rows, Py_ssize_t n,
                            Py_ssize_t K, Py_ssize_t M) noexcept nogil:
    # gW[k0 + r, :] = sum_i x[i, k0 + r] * g[i, :], i ascending.
    cdef Py_ssize_t r, i, j
    cdef floating xv
    cdef floating *o
    cdef const floating *gi
    for r in range(rows):
        o = gW + (k0 + r) * M
        for j in range(M):
            o[j] = 0
    for i in range(n):
        gi = g + i * M
        for r in range(rows):
            xv = x[i * K + k0 + r]
            o = gW + (k0 + r) * M
            for j in range(M):
                o[j] += xv * gi[j]


def dense_backward_weight(const floating[:, ::1] x, const floating[:, ::1] g,
                          floating[:, ::1] gW, floating[::1] gb):
    """gW = x.T @ g and gb = g.sum(axis=0): the parameter gradients."""
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], M = g.shape[1]
    cdef Py_ssize_t blocks = (K + ROW_BLOCK - 1) // ROW_BLOCK, blk, k0, rows, i, j
    for blk in prange(blocks, nogil=True, schedule="static"):
        k0 = blk * ROW_BLOCK
        rows = K - k0
        if rows > ROW_BLOCK:
            rows = ROW_BLOCK
        if n > 0:
            _weight_grad_rows(&x[0, 0], &g[0, 0], &gW[0, 0], k0, rows, n, K, M)
        else:
            for i in range(k0, k0 + rows):
                for j in range(M):
                    gW[i, j] = 0
    with nogil:
        for j in range(M):
            gb[j] = 0
        for i in range(n):
            for j in range(M):
                gb[j] += g[i, j]


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

def sgd_update(floating[::1] p, const floating[::1] g, double lr, double l2):
    """p -= lr * (g + l2 p)"""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating lr_ = lr, l2_ = l2
    for i in prange(n, nogil=True, schedule="static"):
        p[i] = p[i] - lr_ * (g[i] + l2_ * p[i])


def momentum_update(floating[::1] p, const floating[::1] g, floating[::1] v,
                    double lr, double mu, double l2):
    """v = mu v - lr (g + l2 p); p += v"""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating lr_ = lr, mu_ = mu, l2_ = l2
    for i in prange(n, nogil=True, schedule="static"):
        v[i] = mu_ * v[i] - lr_ * (g[i] + l2_ * p[i])
        p[i] = p[i] + v[i]


def nesterov_update(floating[::1] p, const floating[::1] g, floating[::1] v,
                    double lr, double mu, double l2):
    """v = mu v - lr d; p += mu v - lr d, with d = g + l2 p"""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating lr_ = lr, mu_ = mu, l2_ = l2, d
    for i in prange(n, nogil=True, schedule="static"):
        d = g[i] + l2_ * p[i]
        v[i] = mu_ * v[i] - lr_ * d
        p[i] = p[i] + mu_ * v[i] - lr_ * d


def rmsprop_update(floating[::1] p, const floating[::1] g, floating[::1] s,
                   double lr, double rho, double eps, double l2):
    """s = rho s + (1 - rho) d^2; p -= lr d / (sqrt(s) + eps), with d = g + l2 p"""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating lr_ = lr, rho_ = rho, eps_ = eps, l2_ = l2, d
    for i in prange(n, nogil=True, schedule="static"):
        d = g[i] + l2_ * p[i]
        s[i] = rho_ * s[i] + (1 - rho_) * d * d
        p[i] = p[i] - lr_ * d / (<floating>sqrt(s[i]) + eps_)


def adam_update(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
                double lr, double beta1, double beta2, double eps, double l2,
                double c1, double c2):
    """Adam with bias corrections c1 = 1/(1 - beta1^t), c2 = 1/(1 - beta2^t):
    m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2; p -= lr c1 m / (sqrt(c2 v) + eps)"""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating lr_ = lr, b1 = beta1, b2 = beta2, eps_ = eps, l2_ = l2
    cdef floating c1_ = c1, c2_ = c2, d
    for i in prange(n, nogil=True, schedule="static"):
        d = g[i] + l2_ * p[i]
        m[i] = b1 * m[i] + (1 - b1) * d
        v[i] = b2 * v[i] + (1 - b2) * d * d
        p[i] = p[i] - lr_ * c1_ * m[i] / (<floating>sqrt(c2_ * v[i]) + eps_)
