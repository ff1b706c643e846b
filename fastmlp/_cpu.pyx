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


from libc.stdlib cimport malloc, free

ctypedef fused floating:
    float
    double

cdef extern from "cpu_features.h":
    const char *fm_simd_level() nogil
    int fm_have_openmp() nogil
    int fm_get_max_threads() nogil
    void fm_set_num_threads(int n) nogil
    double fm_fma_peak(int level, long iters, int threads, double *seconds) nogil
    double fm_root_peak(int level, long iters, int threads, double *seconds) nogil
    double fm_stream_bandwidth(const float *src, float *dst, float *aux, long n, int reps,
                               int threads, double *seconds) nogil

cdef extern from "fm_ids.h":
    int FM_LINEAR
    int FM_TABLE_ACTIVATIONS, FM_TABLE_LOSSES, FM_TABLE_RULES, FM_TABLE_LEVELS
    const char *fm_id_name(int table, int id) nogil


def _names(int table):
    cdef int i = 0
    names = []
    while fm_id_name(table, i) != NULL:
        names.append(fm_id_name(table, i).decode("ascii"))
        i += 1
    return tuple(names)


def id_tables():
    """The id tables of fm_ids.h, by name in id order (checked against
    fastmlp.functions by a test)."""
    return {"activations": _names(FM_TABLE_ACTIVATIONS), "losses": _names(FM_TABLE_LOSSES),
            "rules": _names(FM_TABLE_RULES), "simd_levels": _names(FM_TABLE_LEVELS),
            "hyper_parameters": hyper_parameter_names()}


def simd_level():
    return fm_simd_level().decode("ascii")


def have_openmp():
    return bool(fm_have_openmp())


def get_num_threads():
    return fm_get_max_threads()


def set_num_threads(int n):
    fm_set_num_threads(n)


cdef int _level_present(str level) except -1:
    """The id of SIMD level ``level``, which the CPU must have."""
    cdef int lv = GEMM_LEVELS.index(level)
    if lv > fm_gemm_best_level():
        raise ValueError(f"this CPU does not support {level!r}")
    return lv


def fma_peak(str level, long iters, int threads):
    """(flops, seconds) of ``threads`` threads each running ``iters`` iterations of 16
    independent float32 FMA chains in registers with the instructions of ``level``
    (at most ``gemm_best_level()``): the machine's arithmetic peak."""
    cdef double seconds = 0, flops
    cdef int lv = _level_present(level)
    with nogil:
        flops = fm_fma_peak(lv, iters, threads, &seconds)
    return flops, seconds


def root_peak(str level, long iters, int threads):
    """(elements, seconds) of ``threads`` threads each running ``iters`` iterations of 8
    independent float32 chains of ``x = 1 / (sqrt(x) + eps)`` in registers, with the
    instructions the optimizer's update uses at ``level`` (AVX2 from ``avx2`` up,
    else scalar): the rate of the square root and division that RMSprop and Adam
    take per parameter."""
    cdef double seconds = 0, elements
    cdef int lv = _level_present(level)
    with nogil:
        elements = fm_root_peak(lv, iters, threads, &seconds)
    return elements, seconds


def stream_bandwidth(const float[::1] src, float[::1] dst, float[::1] aux, int reps,
                     int threads):
    """(bytes, seconds) of ``threads`` threads streaming their shares of ``src``
    ``reps`` times in one parallel region: copied into ``dst``; with ``dst`` None
    only read; with ``aux`` too, ``src``, ``dst`` and ``aux`` read and ``dst`` and
    ``aux`` written, the optimizer's pattern (``dst`` = ``src``/2 + ``dst``, ``aux``
    += that). The bandwidth of the memory level that holds the arrays."""
    cdef double seconds = 0, nbytes
    cdef float *dp = NULL
    cdef float *ap = NULL
    if src.shape[0] == 0 or (dst is not None and dst.shape[0] < src.shape[0]) or (
            aux is not None and (dst is None or aux.shape[0] < src.shape[0])):
        raise ValueError("stream_bandwidth needs a non-empty src, and a dst as long (or "
                         "None), and an aux as long (or None) only with a dst")
    if dst is not None:
        dp = &dst[0]
    if aux is not None:
        ap = &aux[0]
    with nogil:
        nbytes = fm_stream_bandwidth(&src[0], dp, ap, src.shape[0], reps, threads, &seconds)
    return nbytes, seconds


# --------------------------------------------------------------------------
# Dense layer products
# --------------------------------------------------------------------------

cdef extern from "gemm.h":
    ctypedef struct fm_epilogue:
        pass
    ctypedef struct fm_gemm_plan:
        pass
    void fm_sgemm_plan(fm_gemm_plan *pl, int trans_a, int trans_b, Py_ssize_t M,
                       Py_ssize_t N, Py_ssize_t K, const float *A, Py_ssize_t lda,
                       const float *B, Py_ssize_t ldb, float *C, Py_ssize_t ldc,
                       const fm_epilogue *ep) nogil
    void fm_bgemm_plan(fm_gemm_plan *pl, int trans_a, int trans_b, Py_ssize_t M,
                       Py_ssize_t N, Py_ssize_t K, const float *A, Py_ssize_t lda,
                       const float *B, Py_ssize_t ldb, float *C, Py_ssize_t ldc,
                       const fm_epilogue *ep) nogil
    void fm_dgemm_plan(fm_gemm_plan *pl, int trans_a, int trans_b, Py_ssize_t M,
                       Py_ssize_t N, Py_ssize_t K, const double *A, Py_ssize_t lda,
                       const double *B, Py_ssize_t ldb, double *C, Py_ssize_t ldc,
                       const fm_epilogue *ep) nogil
    int fm_gemm_a_rows(fm_gemm_plan *pl, const void *rows) nogil
    int fm_gemm_alone(fm_gemm_plan *pl) nogil
    int fm_sgemm(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                 const float *A, Py_ssize_t lda, const float *B, Py_ssize_t ldb,
                 float *C, Py_ssize_t ldc, const fm_epilogue *ep) nogil
    int fm_dgemm(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                 const double *A, Py_ssize_t lda, const double *B, Py_ssize_t ldb,
                 double *C, Py_ssize_t ldc, const fm_epilogue *ep) nogil
    int fm_bgemm(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                 const float *A, Py_ssize_t lda, const float *B, Py_ssize_t ldb,
                 float *C, Py_ssize_t ldc, const fm_epilogue *ep) nogil
    int fm_gemm_best_level() nogil
    int fm_gemm_level() nogil
    void fm_gemm_set_level(int level) nogil
    void fm_gemm_set_shares(const double *w, int team) nogil
    void fm_gemm_set_a_in_place(int mode) nogil
    void fm_gemm_set_all_k(int on) nogil
    void fm_gemm_set_shallow(int on) nogil
    void fm_gemm_set_stream(int mode) nogil
    int fm_flush_denormals
    int fm_flush_supported() nogil
    enum: FM_SHARE_TEAM
    int fm_bf16_hardware_supported() nogil
    int fm_bf16_hardware() nogil
    void fm_bf16_set_hardware(int on) nogil


# Microkernel levels of gemm.h, lowest first.
GEMM_LEVELS = _names(FM_TABLE_LEVELS)


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


def _set_tile_shares(shares=None):
    """For the tests: a team of ``len(shares)`` threads splits every product's tiles
    by these fixed shares (summing to 1) instead of the adaptive ones; ``None``
    restores those."""
    cdef double w[FM_SHARE_TEAM]
    cdef int i, n = 0
    if shares is not None:
        n = len(shares)
        if not 2 <= n <= FM_SHARE_TEAM or abs(sum(shares) - 1) > 1e-9 or min(shares) <= 0:
            raise ValueError(f"shares must be 2 to {FM_SHARE_TEAM} positive values "
                             f"summing to 1, got {shares!r}")
        for i in range(n):
            w[i] = shares[i]
    fm_gemm_set_shares(w, n)


def set_flush_denormals(bint on):
    """Flush subnormal floats to zero in the kernels from now on (on), or not
    (off, the default); returns whether this CPU can (x86), as with nothing set
    where it cannot."""
    global fm_flush_denormals
    fm_flush_denormals = 1 if on and fm_flush_supported() else 0
    return bool(fm_flush_supported())


def flush_denormals():
    """Whether the kernels flush subnormal floats to zero."""
    return bool(fm_flush_denormals)


def _set_a_in_place(int mode):
    """For the tests: the matrix products read A's panels where they lie by their
    rule (0), never (1: always packed) or wherever they can (2). The bits are the
    same."""
    fm_gemm_set_a_in_place(mode)


def _set_shallow(bint on):
    """For the tests: whether a shallow product with relu's derivative (an input
    gradient from at most 12 classes) may run its strips through a strip kernel (True,
    at start; float at AVX-512 and AVX2, bfloat16 on vdpbf16ps) or always through the
    tiles. The bits are the same."""
    fm_gemm_set_shallow(on)


def _set_stream(int mode):
    """For the tests: the shallow products' strip kernel writes its output with
    non-temporal stores by its rule (0: an output above 8 MiB), never (1) or wherever
    the output's rows start on cache lines (2). The bits are the same."""
    fm_gemm_set_stream(mode)


def _set_all_k(bint on):
    """For the tests: whether the matrix products may pack B for all of K first and
    take each block of rows through every block of k (True, at start) or never. The
    bits are the same."""
    fm_gemm_set_all_k(on)


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


def bf16_hardware_supported():
    """Whether this CPU has the avx512_bf16 instruction set (and this build its kernel)."""
    return bool(fm_bf16_hardware_supported())


def bf16_hardware():
    """1 when bfloat16 products run on vdpbf16ps now (switched on, at level avx512),
    2 in the instruction's paired layout with a portable kernel in its place (for
    tests), 0 when the float microkernels emulate it; the bits are the same."""
    return fm_bf16_hardware()


def set_bf16_hardware(int mode):
    """0: emulation; 1: the vdpbf16ps kernel (only where supported); 2: its paired
    layout with a portable kernel."""
    fm_bf16_set_hardware(mode)


cdef int _packed(int rc) except -1:
    # The kernels return -1 when their packing buffers could not be allocated.
    if rc != 0:
        raise MemoryError("fastmlp: no memory for the matrix product's packing buffers")
    return 0


cdef bint _overlap(const floating[:, :] x, floating[:, ::1] out):
    # Whether x's span of memory meets out's: from its lowest to its highest
    # address, the first and last elements in each dimension (a stride may be
    # negative: rows taken in reverse).
    cdef const char *x0 = <const char *>&x[0, 0]
    cdef Py_ssize_t r = (x.shape[0] - 1) * x.strides[0], c = (x.shape[1] - 1) * x.strides[1]
    cdef const char *lo = x0 + min(r, 0) + min(c, 0)
    cdef const char *hi = x0 + max(r, 0) + max(c, 0)
    cdef const char *o0 = <const char *>&out[0, 0]
    cdef const char *o1 = <const char *>&out[out.shape[0] - 1, out.shape[1] - 1]
    return lo <= o1 and o0 <= hi


def matmul(const floating[:, :] a, const floating[:, :] b, floating[:, ::1] out,
           bint bf16=False):
    """out = a @ b for row-major a and b, or transposed views of row-major arrays
    (one stride 1 in each); the kernel under the dense layers, exposed for tests
    and benchmarks. With ``bf16`` (float32 only), the operands are rounded to
    bfloat16 and their products summed in float32 pairwise, as the vdpbf16ps
    instruction does (see :mod:`fastmlp.bf16`)."""
    cdef bint ta = a.strides[1] != sizeof(floating)
    cdef bint tb = b.strides[1] != sizeof(floating)
    cdef Py_ssize_t lda = (a.strides[1] if ta else a.strides[0]) // sizeof(floating)
    cdef Py_ssize_t ldb = (b.strides[1] if tb else b.strides[0]) // sizeof(floating)
    if (ta and a.strides[0] != sizeof(floating)) or (tb and b.strides[0] != sizeof(floating)):
        raise ValueError("matmul needs row-major arrays or transposes of them")
    if a.shape[0] == 0 or out.shape[1] == 0:
        return
    # (The operands are read while out is written.)
    if (a.shape[1] and _overlap(a, out)) or (b.shape[0] and _overlap(b, out)):
        raise ValueError("matmul's out must not share memory with its operands")
    cdef int rc
    with nogil:
        if floating is float:
            if bf16:
                rc = fm_bgemm(ta, tb, a.shape[0], b.shape[1], a.shape[1], &a[0, 0], lda,
                              &b[0, 0], ldb, &out[0, 0], out.shape[1], NULL)
            else:
                rc = fm_sgemm(ta, tb, a.shape[0], b.shape[1], a.shape[1], &a[0, 0], lda,
                              &b[0, 0], ldb, &out[0, 0], out.shape[1], NULL)
        else:
            rc = fm_dgemm(ta, tb, a.shape[0], b.shape[1], a.shape[1], &a[0, 0], lda,
                          &b[0, 0], ldb, &out[0, 0], out.shape[1], NULL)
    _packed(rc)


cdef extern from "step.h":
    void fm_take_rows_s(const float *src, const Py_ssize_t *rows, Py_ssize_t m, Py_ssize_t w,
                        float *out) nogil
    void fm_take_rows_d(const double *src, const Py_ssize_t *rows, Py_ssize_t m,
                        Py_ssize_t w, double *out) nogil
    int fm_dense_forward_s(Py_ssize_t n, Py_ssize_t K, Py_ssize_t M, const float *x,
                           const float *W, const float *b, float *out, int act,
                           int bf16) nogil
    int fm_dense_forward_d(Py_ssize_t n, Py_ssize_t K, Py_ssize_t M, const double *x,
                           const double *W, const double *b, double *out, int act,
                           int bf16) nogil
    int fm_dense_backward_input_s(Py_ssize_t n, Py_ssize_t K, Py_ssize_t M, const float *g,
                                  const float *W, float *gx, int act, const float *a,
                                  int bf16) nogil
    int fm_dense_backward_input_d(Py_ssize_t n, Py_ssize_t K, Py_ssize_t M, const double *g,
                                  const double *W, double *gx, int act,
                                  const double *a, int bf16) nogil
    int fm_dense_backward_weight_s(Py_ssize_t n, Py_ssize_t K, Py_ssize_t M, const float *x,
                                   const float *g, float *gW, float *gb, int bf16) nogil
    int fm_dense_backward_weight_d(Py_ssize_t n, Py_ssize_t K, Py_ssize_t M,
                                   const double *x, const double *g, double *gW,
                                   double *gb, int bf16) nogil


# The dense layer's kernels are src_c/step.c's, which the compiled training step calls.
def dense_forward(const floating[:, ::1] x, const floating[:, ::1] W,
                  const floating[::1] b, floating[:, ::1] out, int act=FM_LINEAR,
                  bint bf16=False):
    """out = act(x @ W + b); bias and an elementwise activation are applied to each
    output tile as the product finishes it."""
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], M = W.shape[1]
    cdef int rc
    if n == 0 or M == 0:
        return
    with nogil:
        if floating is float:
            rc = fm_dense_forward_s(n, K, M, &x[0, 0], &W[0, 0], &b[0], &out[0, 0], act,
                                    bf16)
        else:
            rc = fm_dense_forward_d(n, K, M, &x[0, 0], &W[0, 0], &b[0], &out[0, 0], act, 0)
    _packed(rc)


def dense_backward_input(const floating[:, ::1] g, const floating[:, ::1] W,
                         floating[:, ::1] gx, int act=FM_LINEAR, a=None, bint bf16=False):
    """gx = (g @ W.T) * act'(z): the gradient with respect to the pre-activation of the
    layer below, written with that layer's output a = act(z) (needed unless act is
    linear). The derivative of an elementwise activation is applied per tile."""
    cdef Py_ssize_t n = g.shape[0], M = g.shape[1], K = W.shape[0]
    cdef const floating[:, ::1] av
    cdef const floating *ap = NULL
    cdef int rc
    if n == 0 or K == 0:
        return
    if act != FM_LINEAR:
        av = a
        ap = &av[0, 0]
    with nogil:
        if floating is float:
            rc = fm_dense_backward_input_s(n, K, M, &g[0, 0], &W[0, 0], &gx[0, 0], act, ap,
                                           bf16)
        else:
            rc = fm_dense_backward_input_d(n, K, M, &g[0, 0], &W[0, 0], &gx[0, 0], act, ap,
                                           0)
    _packed(rc)


def dense_backward_weight(const floating[:, ::1] x, const floating[:, ::1] g,
                          floating[:, ::1] gW, floating[::1] gb, bint bf16=False):
    """gW = x.T @ g and gb = g.sum(axis=0): the parameter gradients."""
    cdef Py_ssize_t n = x.shape[0], K = x.shape[1], M = g.shape[1]
    cdef const floating *xp = &x[0, 0] if n else NULL
    cdef const floating *gp = &g[0, 0] if n else NULL
    cdef int rc
    if K == 0 or M == 0:
        return
    with nogil:
        if floating is float:
            rc = fm_dense_backward_weight_s(n, K, M, xp, gp, &gW[0, 0], &gb[0], bf16)
        else:
            rc = fm_dense_backward_weight_d(n, K, M, xp, gp, &gW[0, 0], &gb[0], 0)
    _packed(rc)


def take_rows(const floating[:, ::1] src, const Py_ssize_t[::1] idx, floating[:, ::1] out):
    """out[i] = src[idx[i]]: a batch gathered from the training set (idx in range)."""
    cdef Py_ssize_t n = idx.shape[0], m = src.shape[1]
    if m == 0 or n == 0:
        return
    with nogil:
        if floating is float:
            fm_take_rows_s(&src[0, 0], &idx[0], n, m, &out[0, 0])
        else:
            fm_take_rows_d(&src[0, 0], &idx[0], n, m, &out[0, 0])


def _matmul_rows(const floating[:, ::1] x, const Py_ssize_t[::1] rows,
                 const floating[:, ::1] b, floating[:, ::1] out, bint trans=False,
                 bint bf16=False):
    """For the tests: ``out = x[rows] @ b`` (``x[rows].T @ b`` with ``trans``),
    the rows read where they lie in ``x`` through their pointers (gemm.h's
    fm_gemm_a_rows), as the compiled step reads a large batch; with ``bf16``
    (float32 only) the bfloat16 product of :func:`matmul`. Returns whether the
    product took them so (else it read ``x[rows]`` gathered, the path it has for
    such a shape); the bits are the same either way."""
    cdef Py_ssize_t m = rows.shape[0], K = x.shape[1], i
    cdef Py_ssize_t M = K if trans else m, depth = m if trans else K
    if b.shape[0] != depth or out.shape[0] != M or out.shape[1] != b.shape[1]:
        raise ValueError("_matmul_rows: shapes do not match")
    if m == 0 or K == 0 or b.shape[1] == 0:
        raise ValueError("_matmul_rows needs non-empty operands")
    for i in range(m):
        if rows[i] < 0 or rows[i] >= x.shape[0]:
            raise IndexError(f"_matmul_rows: row {rows[i]} is outside x's {x.shape[0]} rows")
    # The gathered rows too (take_rows' kernel), which the product reads where it
    # cannot take pointers.
    cdef const floating **ptr = <const floating **>malloc(m * sizeof(void *))
    cdef floating *g = <floating *>malloc(m * K * sizeof(floating))
    cdef fm_gemm_plan pl
    cdef int took, rc
    try:
        if ptr == NULL or g == NULL:
            raise MemoryError("no memory for the gathered rows")
        for i in range(m):
            ptr[i] = &x[rows[i], 0]
        with nogil:
            if floating is float:
                fm_take_rows_s(&x[0, 0], &rows[0], m, K, g)
                if bf16:
                    fm_bgemm_plan(&pl, trans, 0, M, b.shape[1], depth, g, K, &b[0, 0],
                                  b.shape[1], &out[0, 0], out.shape[1], NULL)
                else:
                    fm_sgemm_plan(&pl, trans, 0, M, b.shape[1], depth, g, K, &b[0, 0],
                                  b.shape[1], &out[0, 0], out.shape[1], NULL)
            else:
                fm_take_rows_d(&x[0, 0], &rows[0], m, K, g)
                fm_dgemm_plan(&pl, trans, 0, M, b.shape[1], depth, g, K, &b[0, 0],
                              b.shape[1], &out[0, 0], out.shape[1], NULL)
            took = fm_gemm_a_rows(&pl, ptr)
            rc = fm_gemm_alone(&pl)
    finally:
        free(ptr)
        free(g)
    _packed(rc)
    return bool(took)


# --------------------------------------------------------------------------
# Activations and losses (src_c/rows.c)
# --------------------------------------------------------------------------

cdef extern from "rows.h":
    void fm_activation_forward_s(int act, Py_ssize_t n, Py_ssize_t M, const float *z,
                                 float *a) nogil
    void fm_activation_forward_d(int act, Py_ssize_t n, Py_ssize_t M, const double *z,
                                 double *a) nogil
    void fm_activation_backward_s(int act, Py_ssize_t n, Py_ssize_t M, const float *a,
                                  float *g) nogil
    void fm_activation_backward_d(int act, Py_ssize_t n, Py_ssize_t M, const double *a,
                                  double *g) nogil
    void fm_loss_grad_s(int loss, int act, Py_ssize_t n, Py_ssize_t M, const float *z,
                        float *a, const float *y, float *g, float *row_loss, double *total,
                        long *hits) nogil
    void fm_loss_grad_d(int loss, int act, Py_ssize_t n, Py_ssize_t M, const double *z,
                        double *a, const double *y, double *g, double *row_loss,
                        double *total, long *hits) nogil
    long fm_exp_mismatches(unsigned int first, unsigned int last, unsigned int step) nogil


def exp_mismatches(unsigned int first=0, unsigned int last=0xFFFFFFFF, unsigned int step=1):
    """How many of the floats with bit patterns first, first + step, ... up to last
    get a different float from softmax's exp (fm_exp_to_float) than from the C
    library's ``(float)exp((double)x)``."""
    cdef long n
    if step == 0 or last < first:
        raise ValueError("need step > 0 and last >= first")
    with nogil:
        n = fm_exp_mismatches(first, last, step)
    return n


def activation_forward(int act, const floating[:, ::1] z, floating[:, ::1] a):
    """a = act(z), row by row; a may be z itself."""
    cdef Py_ssize_t n = z.shape[0], M = z.shape[1]
    if n == 0 or M == 0:
        return
    with nogil:
        if floating is float:
            fm_activation_forward_s(act, n, M, &z[0, 0], &a[0, 0])
        else:
            fm_activation_forward_d(act, n, M, &z[0, 0], &a[0, 0])


def activation_backward(int act, const floating[:, ::1] a, floating[:, ::1] g):
    """g <- g * act'(z) in place, from the activation's output a."""
    cdef Py_ssize_t n = a.shape[0], M = a.shape[1]
    if n == 0 or M == 0:
        return
    with nogil:
        if floating is float:
            fm_activation_backward_s(act, n, M, &a[0, 0], &g[0, 0])
        else:
            fm_activation_backward_d(act, n, M, &a[0, 0], &g[0, 0])


def loss_grad(int loss, int act, const floating[:, ::1] z, floating[:, ::1] a,
              const floating[:, ::1] y, floating[:, ::1] g, floating[::1] row_loss):
    """a = act(z) (the output layer's activation of its logits z), the per-sample
    losses into row_loss and g = d(mean loss)/dz; returns (sum of losses, hits).

    The sum runs serially in sample order so that it does not depend on the
    thread count."""
    cdef Py_ssize_t n = z.shape[0], M = z.shape[1]
    cdef double total = 0
    cdef long hits = 0
    if n == 0:
        return 0.0, 0
    with nogil:
        if floating is float:
            fm_loss_grad_s(loss, act, n, M, &z[0, 0], &a[0, 0], &y[0, 0], &g[0, 0],
                           &row_loss[0], &total, &hits)
        else:
            fm_loss_grad_d(loss, act, n, M, &z[0, 0], &a[0, 0], &y[0, 0], &g[0, 0],
                           &row_loss[0], &total, &hits)
    return total, hits


# --------------------------------------------------------------------------
# Optimizer updates, fused with L2 (the gradient of l2/2 * ||p||^2)
# --------------------------------------------------------------------------

cdef extern from "update.h":
    ctypedef struct fm_hyper:
        pass
    int FM_N_HYPER
    void fm_hyper_set(fm_hyper *h, const double *values, double l2) nogil
    const char *fm_hyper_name(int i) nogil
    void fm_update_s(int rule, Py_ssize_t n, Py_ssize_t n_decayed, const float *p,
                     const float *g, float *s1, float *s2, float *out,
                     const fm_hyper *h) nogil
    void fm_update_d(int rule, Py_ssize_t n, Py_ssize_t n_decayed, const double *p,
                     const double *g, double *s1, double *s2, double *out,
                     const fm_hyper *h) nogil


ctypedef const char *(*_name_of)(int) noexcept nogil


cdef tuple _listed(_name_of name):
    # name(0), name(1), ... up to the first NULL: a C table's names in order.
    names = []
    while name(len(names)) != NULL:
        names.append(name(len(names)).decode("ascii"))
    return tuple(names)


def hyper_parameter_names():
    """The hyper-parameters an update takes, in order (update.h)."""
    return _listed(fm_hyper_name)


def update(int rule, floating[::1] p, const floating[::1] g, s1, s2, hyper, double l2,
           Py_ssize_t n_decayed, out=None):
    """One optimizer step of rule ``rule`` (fm_ids.h) on the flat parameters p; L2 on
    p[:n_decayed]. ``hyper`` holds fastmlp.functions.HYPER_PARAMETERS in order; s1 and
    s2 are the state arrays the rule uses (None otherwise). With ``out``, the new
    parameters go there and p is left as it was."""
    cdef floating[::1] o = p if out is None else out
    cdef floating[::1] v1, v2
    cdef floating *q1 = NULL
    cdef floating *q2 = NULL
    cdef Py_ssize_t n = p.shape[0], i
    cdef double values[16]
    cdef fm_hyper h
    if len(hyper) != FM_N_HYPER or FM_N_HYPER > 16:
        raise ValueError(f"update takes {FM_N_HYPER} hyper-parameters, got {len(hyper)}")
    for i in range(FM_N_HYPER):
        values[i] = hyper[i]
    fm_hyper_set(&h, values, l2)
    if n == 0:
        return
    if s1 is not None:
        v1 = s1
        q1 = &v1[0]
    if s2 is not None:
        v2 = s2
        q2 = &v2[0]
    with nogil:
        if floating is float:
            fm_update_s(rule, n, n_decayed, &p[0], &g[0], q1, q2, &o[0], &h)
        else:
            fm_update_d(rule, n, n_decayed, &p[0], &g[0], q1, q2, &o[0], &h)


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


# --------------------------------------------------------------------------
# The whole training step in one call (src_c/step.c)
# --------------------------------------------------------------------------

from cpython.exc cimport PyErr_CheckSignals
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID

cdef extern from "step.h":
    ctypedef struct fm_step_net:
        int n_layers
        const Py_ssize_t *sizes
        const int *act
        int loss
        int rule
        Py_ssize_t n_weights
        Py_ssize_t n_params
        int bf16
    ctypedef struct fm_step_ws:
        void *x
        void *y
        void **a
        void **g
        void *z
        void *row_loss
        void *grad
        void *s1
        void *s2
        double *phase
        int phase_threads
        int panels
    enum: FM_N_PHASES
    int fm_step_panel_width(const fm_step_net *net, int dbl, Py_ssize_t batch) nogil
    void fm_step_panels_s(const fm_step_net *net, float **vec, int n, int nr, int to_panels,
                          float *tmp) nogil
    void fm_step_panels_d(const fm_step_net *net, double **vec, int n, int nr,
                          int to_panels, double *tmp) nogil
    void fm_step_set_panels(int on) nogil
    void fm_step_set_bias_sums(int on) nogil
    const char *fm_phase_name(int i) nogil
    int fm_train_step_s(const fm_step_net *net, const fm_step_ws *ws, const float *X,
                        const float *Y, const Py_ssize_t *rows, Py_ssize_t m, const float *p,
                        float *out, const fm_hyper *h, double *total, long *hits) nogil
    int fm_train_step_d(const fm_step_net *net, const fm_step_ws *ws, const double *X,
                        const double *Y, const Py_ssize_t *rows, Py_ssize_t m,
                        const double *p, double *out, const fm_hyper *h, double *total,
                        long *hits) nogil


def _set_weight_panels(bint on):
    """For the tests: whether a compiled run of steps keeps the first layer's
    weights in the panels its forward product reads (the default, where the
    layer allows it) or in rows. The bits are the same either way."""
    fm_step_set_panels(on)


def _set_bias_sums(bint on):
    """For the tests: whether a layer's bias gradient is summed as its weight
    gradient's product packs the layer's gradient, where it can (the default), or in
    a pass of its own. The bits are the same either way."""
    fm_step_set_bias_sums(on)


def step_phases():
    """The names of the parts of a compiled step that ``Stepper.run`` can time,
    in the order of its ``phase`` array's columns."""
    return _listed(fm_phase_name)


cdef void *_data(arr) except NULL:
    # The buffer of a non-empty C-contiguous array (its dtype is the caller's check).
    if not arr.flags.c_contiguous or arr.size == 0:
        raise ValueError("the training step needs non-empty C-contiguous arrays")
    cdef const unsigned char[::1] view = arr.reshape(-1).view("u1")
    return <void *>&view[0]


cdef double _clock(int which) noexcept nogil:
    cdef timespec ts
    clock_gettime(which, &ts)
    return ts.tv_sec + 1e-9 * ts.tv_nsec


cdef enum:
    # Consecutive windows of low CPU use that lower the thread count where no
    # sharing was seen just before: one is not enough, as a stall of one thread for
    # 10-25 ms (the hypervisor, the kernel) in a 20 ms window looks like sharing,
    # and a drop costs 0.25 s at one thread, 0.1 s of a 0.45 s keras-recipe epoch.
    # Once sharing was seen, one window is enough when the full count is tried
    # again: two trainings at once would each spend twice as long at the full count.
    _SHARING_WINDOWS = 2


cdef class _Sharing:
    """Threads for the next steps, lowered when the cores are shared (in the spirit
    of OMP_DYNAMIC). Over each window of about 20 ms it compares the process's CPU
    time with the wall time its threads had: well below it in two windows in a row
    (one, while it is trying the full count again), another program is running on
    the same cores, and OpenMP's spinning barriers would make each thread wait for a
    descheduled one. Then the steps run on one thread (the results do not depend on
    the thread count), and the full count is tried again after a pause that
    doubles, from 0.25 s to 4 s, while the sharing lasts. ``observe`` (for the
    tests) feeds it clock readings and returns the count it chose, without setting
    it."""

    cdef int full, now, low
    cdef double wall0, cpu0, retry_at, pause

    def __cinit__(self, int full):
        self.full = self.now = full
        self.pause = 0.25
        self.retry_at = 0
        self.low = 0
        self.restart(_clock(CLOCK_MONOTONIC), _clock(CLOCK_PROCESS_CPUTIME_ID))

    cdef void restart(self, double wall, double cpu) noexcept nogil:
        self.wall0 = wall
        self.cpu0 = cpu

    cdef int decide(self, double wall, double cpu) noexcept nogil:
        """The thread count after a step that ended at ``wall`` with the process's
        CPU time at ``cpu`` (both in seconds)."""
        cdef double used
        if self.full < 2:
            return self.now
        if self.now == 1:
            if wall >= self.retry_at:
                self.now = self.full
                self.low = 0
                self.restart(wall, cpu)
            return self.now
        if wall - self.wall0 < 0.02:
            return self.now
        used = (cpu - self.cpu0) / ((wall - self.wall0) * self.now)
        if used < 0.7:
            self.low += 1
        else:
            self.low = 0
            self.pause = 0.25
        if self.low >= (_SHARING_WINDOWS if self.pause == 0.25 else 1):
            self.low = 0
            self.now = 1
            self.retry_at = wall + self.pause
            self.pause = min(2 * self.pause, 4.0)
        self.restart(wall, cpu)
        return self.now

    cdef void after_step(self) noexcept nogil:
        cdef int before = self.now
        if self.decide(_clock(CLOCK_MONOTONIC), _clock(CLOCK_PROCESS_CPUTIME_ID)) != before:
            fm_set_num_threads(self.now)

    def observe(self, double wall, double cpu):
        """Testing entry: the thread count after a step ending at these clock
        readings (seconds of wall time and of the process's CPU time)."""
        return self.decide(wall, cpu)

    def begin(self, double wall, double cpu):
        """Testing entry: starts the window at these clock readings."""
        self.restart(wall, cpu)


# A run of fewer steps keeps the first layer's weights in rows: laying them out in
# panels and back costs about as much as a few steps gain.
cdef enum:
    _PANELS_MIN_STEPS = 32


cdef class Stepper:
    """A network's whole training step as one compiled call (fastmlp.training's
    CompiledRunner): made once per fit from the network's ids and the workspace,
    gradient and optimizer-state arrays, which it keeps alive."""

    cdef fm_step_net net
    cdef fm_step_ws ws
    cdef Py_ssize_t *sizes
    cdef int *acts
    cdef void **ptrs
    cdef bint is_double
    cdef object keep

    def __cinit__(self):
        self.sizes = NULL
        self.acts = NULL
        self.ptrs = NULL

    def __init__(self, layers, act_ids, int loss, int rule, Py_ssize_t n_weights,
                 bint is_double, x, y, a, g, z, row_loss, grad, s1, s2, bint bf16=False):
        cdef int L = len(act_ids), i
        self.sizes = <Py_ssize_t *>malloc((L + 1) * sizeof(Py_ssize_t))
        self.acts = <int *>malloc(L * sizeof(int))
        self.ptrs = <void **>malloc(2 * L * sizeof(void *))
        if self.sizes == NULL or self.acts == NULL or self.ptrs == NULL:
            raise MemoryError("no memory for the training step's tables")
        for i in range(L + 1):
            self.sizes[i] = layers[i]
        for i in range(L):
            self.acts[i] = act_ids[i]
            self.ptrs[i] = _data(a[i])
            self.ptrs[L + i] = _data(g[i])
        self.net.n_layers = L
        self.net.sizes = self.sizes
        self.net.act = self.acts
        self.net.loss = loss
        self.net.rule = rule
        self.net.n_weights = n_weights
        self.net.n_params = grad.shape[0]
        self.net.bf16 = bf16 and not is_double
        self.ws.x = _data(x)
        self.ws.y = _data(y)
        self.ws.a = self.ptrs
        self.ws.g = self.ptrs + L
        self.ws.z = _data(z)
        self.ws.row_loss = _data(row_loss)
        self.ws.grad = _data(grad)
        self.ws.s1 = _data(s1) if s1 is not None else NULL
        self.ws.s2 = _data(s2) if s2 is not None else NULL
        self.ws.phase = NULL
        self.ws.phase_threads = 0
        self.ws.panels = 0
        self.is_double = is_double
        self.keep = (x, y, list(a), list(g), z, row_loss, grad, s1, s2)

    def __dealloc__(self):
        free(self.sizes)
        free(self.acts)
        free(self.ptrs)

    def run(self, X, Y, const Py_ssize_t[::1] rows, Py_ssize_t batch, bufs, int cur,
            const double[:, ::1] hyper, double l2, double[::1] stats, phase=None):
        """Steps over ``rows`` in batches of ``batch`` rows, the parameters moving
        between the two flat arrays ``bufs`` (step s reads ``bufs[cur]`` and writes
        the other; the next reads that one). ``hyper[s]`` holds step s's
        hyper-parameters. After each step, ``stats`` (steps, loss sum, hits,
        samples) is brought up to date before a pending Ctrl-C is raised. Returns
        0, or 1 when a step's loss was not finite (``stats[4]`` holds it; that step
        updated nothing). ``phase``, a float64 array of ``threads x
        len(step_phases())``, gets each step's seconds per thread and phase added
        (threads past its rows are not timed). During a run of 32 steps or more the
        first layer's weights (in both buffers and in the state arrays) may lie in
        the panels its forward product reads (step.h's fm_step_panels); they are
        in rows again when ``run`` returns or raises."""
        cdef void *Xp = _data(X)
        cdef void *Yp = _data(Y)
        cdef void *P[2]
        cdef double[:, ::1] ph
        cdef _Sharing sharing = _Sharing(fm_get_max_threads())
        P[0] = _data(bufs[0])
        P[1] = _data(bufs[1])
        if phase is not None:
            ph = phase
            if ph.shape[1] != FM_N_PHASES or ph.shape[0] < 1:
                raise ValueError(f"phase must be threads x {FM_N_PHASES}, got "
                                 f"{ph.shape[0]} x {ph.shape[1]}")
            self.ws.phase = &ph[0, 0]
            self.ws.phase_threads = <int>ph.shape[0]
        # The first layer's weights in panels for the run (both buffers, for the
        # rollback, and the state): laid out once, and back in rows at the end.
        cdef int nr = 0
        cdef void *tmp = NULL
        cdef void *vec[4]
        vec[0] = P[0]
        vec[1] = P[1]
        vec[2] = self.ws.s1
        vec[3] = self.ws.s2
        # (The kernels read the panels with aligned loads.)
        if (rows.shape[0] >= _PANELS_MIN_STEPS * batch and <size_t>P[0] % 64 == 0
                and <size_t>P[1] % 64 == 0):
            nr = fm_step_panel_width(&self.net, self.is_double, batch)
        if nr:
            tmp = malloc(self.sizes[0] * self.sizes[1] * (8 if self.is_double else 4))
            if tmp == NULL:
                nr = 0
        if nr:
            self._panels(vec, nr, 1, tmp)
        try:
            return self._run(Xp, Yp, P, rows, batch, cur, hyper, l2, stats, sharing)
        finally:
            if nr:
                self._panels(vec, nr, 0, tmp)
            free(tmp)
            self.ws.phase = NULL
            self.ws.phase_threads = 0
            fm_set_num_threads(sharing.full)

    cdef void _panels(self, void **vec, int nr, int to_panels, void *tmp) noexcept:
        self.ws.panels = nr if to_panels else 0
        if self.is_double:
            fm_step_panels_d(&self.net, <double **>vec, 4, nr, to_panels, <double *>tmp)
        else:
            fm_step_panels_s(&self.net, <float **>vec, 4, nr, to_panels, <float *>tmp)

    def panel_width(self, Py_ssize_t batch):
        """The width of the panels in which a long enough run of steps of ``batch``
        rows keeps the first layer's weights, or 0 where it keeps them in rows."""
        return fm_step_panel_width(&self.net, self.is_double, batch)

    cdef int _run(self, void *Xp, void *Yp, void **P, const Py_ssize_t[::1] rows,
                  Py_ssize_t batch, int cur, const double[:, ::1] hyper, double l2,
                  double[::1] stats, _Sharing sharing) except -1:
        cdef Py_ssize_t n = rows.shape[0], start, m, k
        cdef int rc = 0, s = 0
        cdef double total
        cdef long hits
        cdef double values[16]
        cdef fm_hyper h
        for start in range(0, n, batch):
            m = min(batch, n - start)
            for k in range(FM_N_HYPER):
                values[k] = hyper[s, k]
            fm_hyper_set(&h, values, l2)
            with nogil:
                if self.is_double:
                    rc = fm_train_step_d(&self.net, &self.ws, <const double *>Xp,
                                         <const double *>Yp, &rows[start], m,
                                         <const double *>P[cur], <double *>P[1 - cur], &h,
                                         &total, &hits)
                else:
                    rc = fm_train_step_s(&self.net, &self.ws, <const float *>Xp,
                                         <const float *>Yp, &rows[start], m,
                                         <const float *>P[cur], <float *>P[1 - cur], &h,
                                         &total, &hits)
            if rc < 0:
                _packed(rc)
            if rc > 0:
                stats[4] = total
                stats[5] = m
                return 1
            cur = 1 - cur
            s += 1
            stats[0] += 1
            stats[1] += total
            stats[2] += hits
            stats[3] += m
            sharing.after_step()
            PyErr_CheckSignals()
        return 0
