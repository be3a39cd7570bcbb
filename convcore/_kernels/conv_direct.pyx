"""Direct convolution: no column buffer, zero scratch.

Each worker owns a disjoint slice of its output (one output plane, one input
plane, or one filter), so prange needs no reduction and the result does not
depend on the thread count. Inner loops run along an output row over the
taps that read real data (valid_range), so they hold no bounds test and the
compiler vectorises them.
"""
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from convcore._kernels._openmp cimport omp_get_thread_num
from convcore._kernels.conv_geometry cimport ConvGeometry, check_shapes
from convcore._kernels.conv_params cimport ConvParams, valid_range
from convcore._kernels._simd cimport (
    convcore_daxpy, convcore_dmuladd, convcore_dsum, convcore_saxpy,
    convcore_smuladd, convcore_ssum)


cdef void direct_forward_nk(const floating* x, const floating* w,
                            const floating* bias, floating* y,
                            const ConvParams* p, Py_ssize_t n,
                            Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t Cg = p.C // p.groups, Kg = p.K // p.groups
    cdef Py_ssize_t H = p.H, W = p.W, R = p.R, S = p.S
    cdef Py_ssize_t OH = p.OH, OW = p.OW, sw = p.stride_w
    cdef Py_ssize_t g = k // Kg, c, r, s, oh, ow, ih
    cdef Py_ssize_t oh_lo, oh_hi, ow_lo, ow_hi
    cdef floating* yk = y + (n * p.K + k) * OH * OW
    cdef floating b = bias[k] if bias != NULL else 0
    cdef floating wv
    cdef floating* yrow
    cdef const floating* xrow
    cdef const floating* xc
    cdef const floating* wk
    for oh in range(OH * OW):
        yk[oh] = b
    for c in range(Cg):
        xc = x + (n * p.C + g * Cg + c) * H * W
        wk = w + (k * Cg + c) * R * S
        for r in range(R):
            valid_range(OH, H, p.stride_h, r * p.dil_h - p.pad_h, &oh_lo, &oh_hi)
            for s in range(S):
                valid_range(OW, W, sw, s * p.dil_w - p.pad_w, &ow_lo, &ow_hi)
                wv = wk[r * S + s]
                for oh in range(oh_lo, oh_hi):
                    ih = oh * p.stride_h - p.pad_h + r * p.dil_h
                    xrow = xc + ih * W + s * p.dil_w - p.pad_w
                    yrow = yk + oh * OW
                    if sw == 1:
                        if floating is float:
                            convcore_saxpy(yrow + ow_lo, xrow + ow_lo, wv, ow_hi - ow_lo)
                        else:
                            convcore_daxpy(yrow + ow_lo, xrow + ow_lo, wv, ow_hi - ow_lo)
                    else:
                        for ow in range(ow_lo, ow_hi):
                            yrow[ow] += wv * xrow[ow * sw]


cdef void direct_backward_data_nc(const floating* grad_y, const floating* w,
                                  floating* grad_x, const ConvParams* p,
                                  Py_ssize_t n, Py_ssize_t ci) noexcept nogil:
    cdef Py_ssize_t Cg = p.C // p.groups, Kg = p.K // p.groups
    cdef Py_ssize_t H = p.H, W = p.W, R = p.R, S = p.S
    cdef Py_ssize_t OH = p.OH, OW = p.OW, sw = p.stride_w
    cdef Py_ssize_t g = ci // Cg, c = ci % Cg, kk, k, r, s, oh, ow, ih
    cdef Py_ssize_t oh_lo, oh_hi, ow_lo, ow_hi
    cdef floating* gxc = grad_x + (n * p.C + ci) * H * W
    cdef floating wv
    cdef floating* gxrow
    cdef const floating* gyrow
    cdef const floating* gyk
    cdef const floating* wk
    memset(gxc, 0, H * W * sizeof(floating))
    for kk in range(Kg):
        k = g * Kg + kk
        gyk = grad_y + (n * p.K + k) * OH * OW
        wk = w + (k * Cg + c) * R * S
        for r in range(R):
            valid_range(OH, H, p.stride_h, r * p.dil_h - p.pad_h, &oh_lo, &oh_hi)
            for s in range(S):
                valid_range(OW, W, sw, s * p.dil_w - p.pad_w, &ow_lo, &ow_hi)
                wv = wk[r * S + s]
                for oh in range(oh_lo, oh_hi):
                    ih = oh * p.stride_h - p.pad_h + r * p.dil_h
                    gxrow = gxc + ih * W + s * p.dil_w - p.pad_w
                    gyrow = gyk + oh * OW
                    if sw == 1:
                        if floating is float:
                            convcore_saxpy(gxrow + ow_lo, gyrow + ow_lo, wv, ow_hi - ow_lo)
                        else:
                            convcore_daxpy(gxrow + ow_lo, gyrow + ow_lo, wv, ow_hi - ow_lo)
                    else:
                        for ow in range(ow_lo, ow_hi):
                            gxrow[ow * sw] += wv * gyrow[ow]


cdef void direct_backward_weight_kc(const floating* grad_y, const floating* x,
                                    floating* grad_w, const ConvParams* p,
                                    Py_ssize_t k, Py_ssize_t c,
                                    floating* acc) noexcept nogil:
    # A dot product per tap and output row would end every short row in a
    # horizontal sum. Instead each tap (r, s) keeps a row of partial sums,
    # acc[(r*S + s)*OW + ow], updated by the same contiguous multiply-add
    # the forward uses (it vectorises), and reduced once at the end.
    cdef Py_ssize_t Cg = p.C // p.groups, Kg = p.K // p.groups
    cdef Py_ssize_t H = p.H, W = p.W, R = p.R, S = p.S
    cdef Py_ssize_t OH = p.OH, OW = p.OW, sw = p.stride_w
    cdef Py_ssize_t g = k // Kg, n, r, s, oh, ow, ih, t
    cdef Py_ssize_t oh_lo, oh_hi, ow_lo, ow_hi
    cdef floating* gw = grad_w + (k * Cg + c) * R * S
    cdef floating* arow
    cdef const floating* gyrow
    cdef const floating* gyk
    cdef const floating* xc
    cdef const floating* xrow
    memset(acc, 0, R * S * OW * sizeof(floating))
    for n in range(p.N):
        gyk = grad_y + (n * p.K + k) * OH * OW
        xc = x + (n * p.C + g * Cg + c) * H * W
        for r in range(R):
            valid_range(OH, H, p.stride_h, r * p.dil_h - p.pad_h, &oh_lo, &oh_hi)
            for s in range(S):
                valid_range(OW, W, sw, s * p.dil_w - p.pad_w, &ow_lo, &ow_hi)
                arow = acc + (r * S + s) * OW
                for oh in range(oh_lo, oh_hi):
                    ih = oh * p.stride_h - p.pad_h + r * p.dil_h
                    xrow = xc + ih * W + s * p.dil_w - p.pad_w
                    gyrow = gyk + oh * OW
                    if sw == 1:
                        if floating is float:
                            convcore_smuladd(arow + ow_lo, gyrow + ow_lo, xrow + ow_lo, ow_hi - ow_lo)
                        else:
                            convcore_dmuladd(arow + ow_lo, gyrow + ow_lo, xrow + ow_lo, ow_hi - ow_lo)
                    else:
                        for ow in range(ow_lo, ow_hi):
                            arow[ow] += gyrow[ow] * xrow[ow * sw]
    for t in range(R * S):
        if floating is float:
            gw[t] = convcore_ssum(acc + t * OW, OW)
        else:
            gw[t] = convcore_dsum(acc + t * OW, OW)


# ---------------------------------------------------------------------------
# Drivers: plan the parallel loop; called by convcore.algorithms once
# convcore.functional has checked every shape and allocated the outputs.
# geom: the call's ConvGeometry (ConvSpec.params).

def scratch_bytes(ConvGeometry geom, int num_threads, bint backward,
                  Py_ssize_t itemsize):
    """Bytes that one forward (or full backward) call with these arguments
    allocates: backward_weight's row sums, one block per thread."""
    if not backward:
        return 0
    return num_threads * _weight_scratch_size(&geom.params) * itemsize


def forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
            const floating[::1] bias, floating[:, :, :, ::1] y,
            ConvGeometry geom, int num_threads):
    """y = conv(x, w) + bias. bias has size K, or 0 for no bias.   OUT: y"""
    cdef ConvParams p = geom.params
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t nk
    check_shapes(&p, x.shape, w.shape, y.shape)
    with nogil:
        for nk in prange(p.N * p.K, schedule='static', num_threads=num_threads):
            direct_forward_nk(&x[0, 0, 0, 0], &w[0, 0, 0, 0], b,
                              &y[0, 0, 0, 0], &p, nk // p.K, nk % p.K)


def backward_data(const floating[:, :, :, ::1] grad_y,
                  const floating[:, :, :, ::1] w,
                  floating[:, :, :, ::1] grad_x, ConvGeometry geom, int num_threads):
    """grad_x (N, C, H, W), overwritten.                         OUT: grad_x"""
    cdef ConvParams p = geom.params
    cdef Py_ssize_t nc
    check_shapes(&p, grad_x.shape, w.shape, grad_y.shape)
    with nogil:
        for nc in prange(p.N * p.C, schedule='static', num_threads=num_threads):
            direct_backward_data_nc(&grad_y[0, 0, 0, 0], &w[0, 0, 0, 0],
                                    &grad_x[0, 0, 0, 0], &p, nc // p.C, nc % p.C)


def backward_weight(const floating[:, :, :, ::1] grad_y,
                    const floating[:, :, :, ::1] x,
                    floating[:, :, :, ::1] grad_w, ConvGeometry geom, int num_threads):
    """grad_w (K, C/groups, R, S), overwritten.                  OUT: grad_w"""
    cdef ConvParams p = geom.params
    cdef Py_ssize_t Cg = grad_w.shape[1], kc
    cdef Py_ssize_t accsize = _weight_scratch_size(&p)
    cdef floating* scratch
    check_shapes(&p, x.shape, grad_w.shape, grad_y.shape)
    # One row-sum buffer per thread, allocated with the GIL so that a
    # failure is a MemoryError, not a crash in the loop.
    scratch = <floating*> malloc(num_threads * accsize * sizeof(floating))
    if scratch == NULL:
        raise MemoryError(f"convcore: cannot allocate {num_threads} x {accsize} weight-gradient scratch")
    try:
        with nogil:
            for kc in prange(p.K * Cg, schedule='static', num_threads=num_threads):
                direct_backward_weight_kc(&grad_y[0, 0, 0, 0], &x[0, 0, 0, 0],
                                          &grad_w[0, 0, 0, 0], &p, kc // Cg, kc % Cg,
                                          scratch + omp_get_thread_num() * accsize)
    finally:
        free(scratch)


def bias_grad(const floating[:, :, :, ::1] grad_y, floating[::1] grad_b,
              int num_threads):
    """grad_b[k] = sum over n, oh, ow of grad_y[n, k] (image order, so the
    sum is the same at any thread count). Serves every algorithm. OUT: grad_b"""
    cdef Py_ssize_t N = grad_y.shape[0], K = grad_y.shape[1]
    cdef Py_ssize_t P = grad_y.shape[2] * grad_y.shape[3], k, n
    cdef const floating* gy = &grad_y[0, 0, 0, 0]
    cdef floating acc
    with nogil:
        for k in prange(K, schedule='static', num_threads=num_threads):
            acc = 0
            for n in range(N):
                if floating is float:
                    acc = acc + convcore_ssum(gy + (n * K + k) * P, P)
                else:
                    acc = acc + convcore_dsum(gy + (n * K + k) * P, P)
            grad_b[k] = acc
