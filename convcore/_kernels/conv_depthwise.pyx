"""Depthwise convolution (one input channel per group): any kernel size,
stride, dilation and channel multiplier.

The generic direct kernel (conv_direct) makes R*S passes over every output
plane, one short axpy per tap and row. Here a 3x3 output row is computed in
one pass with the nine weights in registers and stored once, reading a
zero-padded copy of the input plane that the thread keeps in L1: the inner
loop has no bounds test and vectorises (omp simd). Other kernels go a kernel
row at a time, up to three taps per pass (R * ceil(S/3) passes). Narrow
outputs (< 16 columns, stride 1) are computed as one long row at the padded
buffer's row length and copied out, so short rows do not end in scalar
remainders.

Backward-data is the same correlation run on the output gradient laid out
for a "full" correlation with the flipped kernel (for strides > 1 the
gradient is spread onto a zero grid, so one kernel serves every stride).
The weight gradient reduces each (image, channel) plane to R*S sums in
vector accumulators (nine at once for 3x3), then adds the images in order.

Each worker owns one output plane (or the R*S partial sums of one), so the
results do not depend on the thread count. The padded buffer is zeroed once
per thread; each plane overwrites only the positions that hold data, which
are the same for every plane of a call, so the padding stays zero.

Padding is multiplied like data, as PyTorch and the reference do (an Inf
weight gives NaN where it meets the forward's padding), except in
backward-data, whose padded gradient positions are not data: there a plane
whose weights are not all finite runs the generic worker, which multiplies
real data only, as PyTorch does.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport calloc, malloc, free
from convcore._kernels._openmp cimport omp_get_thread_num
from convcore._kernels.conv_geometry cimport ConvGeometry, check_shapes
from convcore._kernels.conv_params cimport ConvParams, valid_range
from convcore._kernels.conv_direct cimport direct_backward_data_nc
from convcore._kernels.finite cimport all_finite


# The row loops: 3x3 (nine taps in registers, two output rows at once) and
# other kernels a kernel row at a time, with their weight-gradient sums.
cdef extern from "convcore/_kernels/depthwise.h":
    void convcore_dw_pass_f(float* y, Py_ssize_t ypitch, const float* base, Py_ssize_t bpitch,
                            const float* x, Py_ssize_t xpitch, Py_ssize_t rows, Py_ssize_t cols,
                            Py_ssize_t sw, Py_ssize_t dw, const float* w, Py_ssize_t nt) noexcept nogil
    void convcore_dw_pass_d(double* y, Py_ssize_t ypitch, const double* base, Py_ssize_t bpitch,
                            const double* x, Py_ssize_t xpitch, Py_ssize_t rows, Py_ssize_t cols,
                            Py_ssize_t sw, Py_ssize_t dw, const double* w, Py_ssize_t nt) noexcept nogil
    void convcore_dw_wpass_f(const float* g, Py_ssize_t gpitch, const float* x, Py_ssize_t xpitch,
                             Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t sw, Py_ssize_t dw,
                             float* out, Py_ssize_t nt) noexcept nogil
    void convcore_dw_wpass_d(const double* g, Py_ssize_t gpitch, const double* x, Py_ssize_t xpitch,
                             Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t sw, Py_ssize_t dw,
                             double* out, Py_ssize_t nt) noexcept nogil
    void convcore_dw_copy_f(float* d, Py_ssize_t dpitch, const float* s, Py_ssize_t spitch,
                            Py_ssize_t rows, Py_ssize_t n, float b) noexcept nogil
    void convcore_dw_copy_d(double* d, Py_ssize_t dpitch, const double* s, Py_ssize_t spitch,
                            Py_ssize_t rows, Py_ssize_t n, double b) noexcept nogil
    void convcore_dw_unpitch_f(float* d, Py_ssize_t dpitch, const float* s, Py_ssize_t spitch,
                               Py_ssize_t rows, Py_ssize_t n, float b) noexcept nogil
    void convcore_dw_unpitch_d(double* d, Py_ssize_t dpitch, const double* s, Py_ssize_t spitch,
                               Py_ssize_t rows, Py_ssize_t n, double b) noexcept nogil
    void convcore_dw_rows3_f(float* y, Py_ssize_t ypitch, const float* base, Py_ssize_t bpitch,
                             const float* x, Py_ssize_t xpitch, Py_ssize_t rows, Py_ssize_t cols,
                             Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                             const float* w) noexcept nogil
    void convcore_dw_rows3_d(double* y, Py_ssize_t ypitch, const double* base, Py_ssize_t bpitch,
                             const double* x, Py_ssize_t xpitch, Py_ssize_t rows, Py_ssize_t cols,
                             Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                             const double* w) noexcept nogil
    void convcore_dw_wgrad3_f(const float* g, Py_ssize_t gpitch, const float* x,
                              Py_ssize_t xpitch, Py_ssize_t rows, Py_ssize_t cols,
                              Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                              float* out) noexcept nogil
    void convcore_dw_wgrad3_d(const double* g, Py_ssize_t gpitch, const double* x,
                              Py_ssize_t xpitch, Py_ssize_t rows, Py_ssize_t cols,
                              Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                              double* out) noexcept nogil


cdef struct Layout:
    # A plane of shape (SH, SW) placed in a zero buffer of (rows, cols):
    # source (i, j) goes to (i*rstep + row0, j*cstep + col0); source
    # positions that land outside the buffer are never read by the kernel.
    Py_ssize_t SH, SW, rows, cols, row0, col0, rstep, cstep


cdef Layout forward_layout(const ConvParams* p) noexcept nogil:
    """The padded input plane the forward (and weight gradient) reads."""
    cdef Layout L
    L.SH = p.H
    L.SW = p.W
    L.rows = (p.OH - 1) * p.stride_h + p.dil_h * (p.R - 1) + 1
    L.cols = (p.OW - 1) * p.stride_w + p.dil_w * (p.S - 1) + 1
    L.row0 = p.pad_h
    L.col0 = p.pad_w
    L.rstep = 1
    L.cstep = 1
    return L


cdef Layout backward_layout(const ConvParams* p) noexcept nogil:
    """grad_y placed for a stride-1 "full" correlation with the flipped
    kernel giving grad_x: gy[oh, ow] at (oh*sh + dh*(R-1) - pad_h,
    ow*sw + dw*(S-1) - pad_w), zeros between (strides) and around."""
    cdef Layout L
    L.SH = p.OH
    L.SW = p.OW
    L.rows = p.H + p.dil_h * (p.R - 1)
    L.cols = p.W + p.dil_w * (p.S - 1)
    L.row0 = p.dil_h * (p.R - 1) - p.pad_h
    L.col0 = p.dil_w * (p.S - 1) - p.pad_w
    L.rstep = p.stride_h
    L.cstep = p.stride_w
    return L


cdef void load_plane(const floating* src, floating* buf,
                     const Layout* L) noexcept nogil:
    """Copy the data positions of one source plane into buf (its padding
    positions are zero already and stay so)."""
    cdef Py_ssize_t i, j, ilo, ihi, jlo, jhi
    cdef const floating* s
    cdef floating* d
    valid_range(L.SH, L.rows, L.rstep, L.row0, &ilo, &ihi)
    valid_range(L.SW, L.cols, L.cstep, L.col0, &jlo, &jhi)
    if ihi <= ilo or jhi <= jlo:
        return
    s = src + ilo * L.SW + jlo
    d = buf + (ilo * L.rstep + L.row0) * L.cols + L.col0 + jlo * L.cstep
    if L.cstep == 1:
        if floating is float:
            convcore_dw_copy_f(d, L.rstep * L.cols, s, L.SW, ihi - ilo, jhi - jlo, 0)
        else:
            convcore_dw_copy_d(d, L.rstep * L.cols, s, L.SW, ihi - ilo, jhi - jlo, 0)
        return
    for i in range(ihi - ilo):   # strided backward-data: spread the row
        for j in range(jhi - jlo):
            d[i * L.rstep * L.cols + j * L.cstep] = s[i * L.SW + j]


cdef const floating* plane_view(const floating* src, Py_ssize_t plane,
                                floating* buf, Py_ssize_t* loaded,
                                const Layout* L, Py_ssize_t* pitch) noexcept nogil:
    """src laid out as L says: src itself when that needs no padding (no
    offset, unit steps, the plane covers the buffer), else buf, loaded
    unless it holds this plane already (loaded[0]: the plane number it
    holds; a channel multiplier > 1 reads each input plane Kg times in a
    row). pitch receives the row length."""
    if (L.row0 == 0 and L.col0 == 0 and L.rstep == 1 and L.cstep == 1
            and L.rows <= L.SH and L.cols <= L.SW):
        pitch[0] = L.SW
        return src
    if loaded[0] != plane:
        load_plane(src, buf, L)
        loaded[0] = plane
    pitch[0] = L.cols
    return buf


cdef void correlate(floating* y, Py_ssize_t ypitch, const floating* base,
                    Py_ssize_t bpitch, const floating* x, Py_ssize_t xpitch,
                    Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t R, Py_ssize_t S,
                    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                    const floating* w) noexcept nogil:
    """y = base + the correlation of the padded plane x (row length
    xpitch) with the R x S kernel w, for a block of output rows."""
    cdef Py_ssize_t r, s0, nt
    if R == 3 and S == 3:
        if floating is float:
            convcore_dw_rows3_f(y, ypitch, base, bpitch, x, xpitch, rows, cols, sh, sw, dh, dw, w)
        else:
            convcore_dw_rows3_d(y, ypitch, base, bpitch, x, xpitch, rows, cols, sh, sw, dh, dw, w)
        return
    for r in range(R):
        for s0 in range(0, S, 3):
            nt = S - s0 if S - s0 < 3 else 3
            if floating is float:
                convcore_dw_pass_f(y, ypitch, base, bpitch, x + r * dh * xpitch + s0 * dw,
                                   sh * xpitch, rows, cols, sw, dw, w + r * S + s0, nt)
            else:
                convcore_dw_pass_d(y, ypitch, base, bpitch, x + r * dh * xpitch + s0 * dw,
                                   sh * xpitch, rows, cols, sw, dw, w + r * S + s0, nt)
            base = y  # later passes add to what the first one wrote
            bpitch = ypitch


cdef void tap_sums(const floating* g, Py_ssize_t gpitch, const floating* x,
                   Py_ssize_t xpitch, Py_ssize_t rows, Py_ssize_t cols,
                   Py_ssize_t R, Py_ssize_t S, Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t dh, Py_ssize_t dw, floating* out) noexcept nogil:
    """out[r*S + s] = sum over the output block of g times the input tap
    (r, s) reads: the weight gradient of one plane."""
    cdef Py_ssize_t r, s0, nt
    if R == 3 and S == 3:
        if floating is float:
            convcore_dw_wgrad3_f(g, gpitch, x, xpitch, rows, cols, sh, sw, dh, dw, out)
        else:
            convcore_dw_wgrad3_d(g, gpitch, x, xpitch, rows, cols, sh, sw, dh, dw, out)
        return
    for r in range(R):
        for s0 in range(0, S, 3):
            nt = S - s0 if S - s0 < 3 else 3
            if floating is float:
                convcore_dw_wpass_f(g, gpitch, x + r * dh * xpitch + s0 * dw, sh * xpitch,
                                    rows, cols, sw, dw, out + r * S + s0, nt)
            else:
                convcore_dw_wpass_d(g, gpitch, x + r * dh * xpitch + s0 * dw, sh * xpitch,
                                    rows, cols, sw, dw, out + r * S + s0, nt)


# Outputs narrower than this are computed as one long row at the padded
# buffer's row length (the columns past the output's edge are computed and
# dropped), then copied out: row by row, a 7- or 14-wide row would be mostly
# scalar remainder. Needs stride 1, so that output rows step like input rows.
cdef enum:
    FLAT_COLS = 16


cdef inline bint flat(Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t cols) noexcept nogil:
    return sh == 1 and sw == 1 and cols < FLAT_COLS


cdef inline void unpitch(floating* y, Py_ssize_t ypitch, const floating* t,
                         Py_ssize_t tpitch, Py_ssize_t rows, Py_ssize_t cols,
                         floating b) noexcept nogil:
    if floating is float:
        convcore_dw_unpitch_f(y, ypitch, t, tpitch, rows, cols, b)
    else:
        convcore_dw_unpitch_d(y, ypitch, t, tpitch, rows, cols, b)


cdef void dw_forward_nk(const floating* x, const floating* w, const floating* bias,
                        floating* y, const ConvParams* p, const Layout* L,
                        Py_ssize_t n, Py_ssize_t k, floating* buf, floating* tmp,
                        floating* row, Py_ssize_t* loaded) noexcept nogil:
    """y[n, k]. buf: the thread's padded plane; tmp: room for a result at
    its row length; row: zeros (narrow outputs), else room for a bias row."""
    cdef Py_ssize_t plane = n * p.C + k // (p.K // p.groups), pitch, j
    cdef const floating* wk = w + k * p.R * p.S
    cdef const floating* xb
    cdef floating* yk = y + (n * p.K + k) * p.OH * p.OW
    cdef floating b = bias[k] if bias != NULL else 0
    xb = plane_view(x + plane * p.H * p.W, plane, buf, loaded, L, &pitch)
    if flat(p.stride_h, p.stride_w, p.OW):
        correlate(tmp, 0, row, 0, xb, pitch, 1, (p.OH - 1) * pitch + p.OW,
                  p.R, p.S, 1, 1, p.dil_h, p.dil_w, wk)
        unpitch(yk, p.OW, tmp, pitch, p.OH, p.OW, b)
        return
    for j in range(p.OW):
        row[j] = b
    correlate(yk, p.OW, row, 0, xb, pitch, p.OH, p.OW,
              p.R, p.S, p.stride_h, p.stride_w, p.dil_h, p.dil_w, wk)


cdef void dw_backward_data_nc(const floating* grad_y, const floating* w,
                              floating* grad_x, const ConvParams* p,
                              const Layout* L, Py_ssize_t n, Py_ssize_t c,
                              floating* buf, floating* tmp, const floating* zeros,
                              floating* wf, Py_ssize_t* loaded) noexcept nogil:
    """grad_x[n, c] = sum over the channel's Kg outputs k of the full
    correlation of grad_y[n, k] with w[k] flipped. buf, tmp as in the
    forward; zeros: a zero row; wf: room for the R*S flipped taps."""
    cdef Py_ssize_t Kg = p.K // p.groups, RS = p.R * p.S, kk, k, t, pitch
    cdef floating* gx = grad_x + (n * p.C + c) * p.H * p.W
    cdef const floating* gb
    cdef bint narrow = flat(1, 1, p.W)
    if not all_finite(w + c * Kg * RS, Kg * RS):
        direct_backward_data_nc(grad_y, w, grad_x, p, n, c)
        return
    for kk in range(Kg):
        k = c * Kg + kk
        for t in range(RS):
            wf[t] = w[k * RS + RS - 1 - t]
        gb = plane_view(grad_y + (n * p.K + k) * p.OH * p.OW, n * p.K + k,
                        buf, loaded, L, &pitch)
        # The first output channel writes, the others add to it.
        if narrow:
            correlate(tmp, 0, zeros if kk == 0 else tmp, 0, gb, pitch, 1,
                      (p.H - 1) * pitch + p.W, p.R, p.S, 1, 1, p.dil_h, p.dil_w, wf)
        else:
            correlate(gx, p.W, zeros if kk == 0 else gx, 0 if kk == 0 else p.W, gb, pitch,
                      p.H, p.W, p.R, p.S, 1, 1, p.dil_h, p.dil_w, wf)
    if narrow:
        unpitch(gx, p.W, tmp, pitch, p.H, p.W, 0)


cdef void dw_backward_weight_nk(const floating* grad_y, const floating* x,
                                const ConvParams* p, const Layout* L,
                                Py_ssize_t n, Py_ssize_t k, floating* buf,
                                Py_ssize_t* loaded, floating* out) noexcept nogil:
    """out[0:R*S] = the tap sums of grad_y[n, k] against its input plane."""
    cdef Py_ssize_t plane = n * p.C + k // (p.K // p.groups), pitch
    cdef const floating* xb = plane_view(x + plane * p.H * p.W, plane, buf,
                                         loaded, L, &pitch)
    tap_sums(grad_y + (n * p.K + k) * p.OH * p.OW, p.OW, xb, pitch, p.OH, p.OW,
             p.R, p.S, p.stride_h, p.stride_w, p.dil_h, p.dil_w, out)


# ---------------------------------------------------------------------------
# Drivers, called by convcore.algorithms.DirectConv for groups with one
# input channel (supports()); the functional floor has
# checked the shapes and allocated the outputs. geom: the call's
# ConvGeometry (ConvSpec.params).

def supports(Py_ssize_t Cg, Py_ssize_t R, Py_ssize_t S):
    """Whether these kernels serve a convolution of this shape: one input
    channel per group (3x3 has its own fast path, other kernels go a
    kernel row at a time)."""
    return Cg == 1


cdef Py_ssize_t _parts(const ConvParams* p, bint backward, Py_ssize_t* tmp,
                       Py_ssize_t* row) noexcept nogil:
    """Scratch per thread, in order: the padded plane (the largest of the
    call's passes; the size returned), a result at its row length (tmp[0]
    elements: narrow outputs only), a row of zeros or the bias (row[0]),
    the flipped kernel (R*S)."""
    cdef Layout f = forward_layout(p)
    cdef Layout b = backward_layout(p)
    cdef Py_ssize_t m = f.rows * f.cols
    cdef bint narrow = flat(1, 1, p.W) if backward else flat(p.stride_h, p.stride_w, p.OW)
    if backward and b.rows * b.cols > m:
        m = b.rows * b.cols
    tmp[0] = m if narrow else 0
    row[0] = m if narrow else (p.OW if p.OW > p.W else p.W)
    return m


cdef Py_ssize_t _thread_elements(const ConvParams* p, bint backward) noexcept nogil:
    cdef Py_ssize_t tmp, row
    return _parts(p, backward, &tmp, &row) + tmp + row + p.R * p.S


cdef inline Py_ssize_t _weight_partials(const ConvParams* p) noexcept nogil:
    """backward_weight's R*S sums per (image, channel) plane."""
    return p.N * p.K * p.R * p.S


def scratch_bytes(ConvGeometry geom, int num_threads, bint backward,
                  Py_ssize_t itemsize):
    """Bytes that one forward (or full backward) call with these arguments
    allocates at most: a padded plane and its rows per thread, and
    backward_weight's partial sums."""
    cdef const ConvParams* p = &geom.params
    cdef Py_ssize_t elements = num_threads * _thread_elements(p, backward)
    if backward:
        elements += _weight_partials(p)
    return elements * itemsize


cdef class _Scratch:
    """Per-thread zeroed buffers and their "which plane is loaded" marks,
    allocated with the GIL so that a failure is a MemoryError."""
    cdef void* data
    cdef Py_ssize_t* loaded
    cdef Py_ssize_t size

    def __cinit__(self, int threads, Py_ssize_t size, Py_ssize_t itemsize):
        cdef int t
        self.size = size
        self.data = calloc(threads * size, itemsize)
        self.loaded = <Py_ssize_t*> malloc(threads * sizeof(Py_ssize_t))
        if self.data == NULL or self.loaded == NULL:
            raise MemoryError(f"convcore: cannot allocate {threads} x {size} "
                              "depthwise scratch elements")
        for t in range(threads):
            self.loaded[t] = -1

    def __dealloc__(self):
        free(self.data)
        free(self.loaded)


def forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
            const floating[::1] bias, floating[:, :, :, ::1] y,
            ConvGeometry geom, int num_threads):
    """y = conv(x, w) + bias. bias has size K, or 0 for no bias.   OUT: y"""
    cdef ConvParams p = geom.params
    cdef Layout L = forward_layout(&p)
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef _Scratch s
    cdef Py_ssize_t nk, tmp, row, m = _parts(&p, False, &tmp, &row)
    cdef floating* buf
    cdef int t
    check_shapes(&p, x.shape, w.shape, y.shape)
    s = _Scratch(num_threads, _thread_elements(&p, False), sizeof(floating))
    with nogil:
        for nk in prange(p.N * p.K, schedule='static', num_threads=num_threads):
            t = omp_get_thread_num()
            buf = <floating*> s.data + t * s.size
            dw_forward_nk(&x[0, 0, 0, 0], &w[0, 0, 0, 0], b, &y[0, 0, 0, 0], &p, &L,
                          nk // p.K, nk % p.K, buf, buf + m, buf + m + tmp, s.loaded + t)


def backward_data(const floating[:, :, :, ::1] grad_y,
                  const floating[:, :, :, ::1] w,
                  floating[:, :, :, ::1] grad_x, ConvGeometry geom, int num_threads):
    """grad_x (N, C, H, W), overwritten.                         OUT: grad_x"""
    cdef ConvParams p = geom.params
    cdef Layout L = backward_layout(&p)
    cdef _Scratch s
    cdef Py_ssize_t nc, tmp, row, m = _parts(&p, True, &tmp, &row)
    cdef floating* buf
    cdef int t
    check_shapes(&p, grad_x.shape, w.shape, grad_y.shape)
    s = _Scratch(num_threads, _thread_elements(&p, True), sizeof(floating))
    with nogil:
        for nc in prange(p.N * p.C, schedule='static', num_threads=num_threads):
            t = omp_get_thread_num()
            buf = <floating*> s.data + t * s.size
            dw_backward_data_nc(&grad_y[0, 0, 0, 0], &w[0, 0, 0, 0], &grad_x[0, 0, 0, 0],
                                &p, &L, nc // p.C, nc % p.C, buf, buf + m, buf + m + tmp,
                                buf + m + tmp + row, s.loaded + t)


def backward_weight(const floating[:, :, :, ::1] grad_y,
                    const floating[:, :, :, ::1] x,
                    floating[:, :, :, ::1] grad_w, ConvGeometry geom, int num_threads):
    """grad_w (K, 1, R, S), overwritten.                         OUT: grad_w"""
    cdef ConvParams p = geom.params
    cdef Layout L = forward_layout(&p)
    cdef _Scratch s
    # R*S sums per (image, channel) plane, added over the images in order
    # below: every plane is one work item whatever the thread count.
    cdef Py_ssize_t RS = p.R * p.S
    cdef floating* part
    cdef floating* gw = &grad_w[0, 0, 0, 0]
    cdef floating acc
    cdef Py_ssize_t nk, k, n, i
    cdef int t
    check_shapes(&p, x.shape, grad_w.shape, grad_y.shape)
    s = _Scratch(num_threads, _thread_elements(&p, True), sizeof(floating))
    part = <floating*> malloc(_weight_partials(&p) * sizeof(floating))
    if part == NULL:
        raise MemoryError(f"convcore: cannot allocate {p.N * p.K} x {RS} partial sums")
    try:
        with nogil:
            for nk in prange(p.N * p.K, schedule='static', num_threads=num_threads):
                t = omp_get_thread_num()
                dw_backward_weight_nk(&grad_y[0, 0, 0, 0], &x[0, 0, 0, 0], &p, &L,
                                      nk // p.K, nk % p.K, <floating*> s.data + t * s.size,
                                      s.loaded + t, part + nk * RS)
            for k in range(p.K):
                for i in range(RS):
                    acc = 0
                    for n in range(p.N):
                        acc = acc + part[(n * p.K + k) * RS + i]
                    gw[k * RS + i] = acc
    finally:
        free(part)
