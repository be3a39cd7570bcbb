"""Pooling kernels: max, average, adaptive average and adaptive max over
each (n, c) plane of an NCHW array, forward and backward.

Every worker owns one input plane and its output plane, so the drivers run
prange over N*C planes with no reduction: results do not depend on the
thread count. Window rules follow PyTorch's CPU kernels (MaxPoolKernel.cpp,
AvgPoolKernel.cpp, AdaptiveAveragePooling.cpp) line for line, since the
edge cases (ceil_mode windows running into padding, divisors, NaN) are
defined by them:

max     window [oh*sh - ph, ... + (kh-1)*dh] clipped to taps inside the
        input (padding is -inf); a value wins if it is > the current max or
        NaN, so ties keep the first index and NaN propagates. A window with
        no tap inside the input (possible only with dilation) gives -inf and
        index -1, which the backward skips.
avg     window [oh*sh - ph, min(oh*sh - ph + kh, H + ph)); the divisor counts
        the padded window (count_include_pad) or only the input taps.
adaptive  rows [floor(i*H/OH), ceil((i+1)*H/OH)), columns likewise.
"""
from cython cimport floating
# PoolParams and the plane workers' signatures are in pool.pxd (public).
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from libc.math cimport INFINITY
from convcore._kernels.conv_params cimport valid_range


# Window sums: the row reductions the norms use (double, fixed order); short
# rows (window rows) use the inlined one-accumulator sum.
from convcore._kernels._row_reductions cimport (
    convcore_row_sum_f, convcore_row_sum_d, convcore_short_row_sum_f,
    convcore_short_row_sum_d)


# Max pooling's branch-free tap sweep (values and argmax together).
cdef extern from "convcore/_kernels/pool.h":
    void pool_max_tap_f(const float* x, Py_ssize_t sw, float* y, int64_t* idx,
                        Py_ssize_t lo, Py_ssize_t hi, int64_t base) noexcept nogil
    void pool_max_tap_d(const double* x, Py_ssize_t sw, double* y, int64_t* idx,
                        Py_ssize_t lo, Py_ssize_t hi, int64_t base) noexcept nogil
    void pool_max_tap_id_f(const float* x, Py_ssize_t sw, float* y, int32_t* tap,
                           Py_ssize_t lo, Py_ssize_t hi, int32_t id) noexcept nogil
    void pool_max_tap_id_d(const double* x, Py_ssize_t sw, double* y, int64_t* tap,
                           Py_ssize_t lo, Py_ssize_t hi, int64_t id) noexcept nogil


cdef inline double _window_sum(const floating* x, Py_ssize_t W, Py_ssize_t h0,
                               Py_ssize_t h1, Py_ssize_t w0,
                               Py_ssize_t w1) noexcept nogil:
    """Sum of x[h0:h1, w0:w1] in double, row by row, inlined (no call in
    the window loop: a call there slows the whole loop down)."""
    cdef Py_ssize_t h
    cdef double acc = 0
    for h in range(h0, h1):
        if floating is float:
            acc += convcore_short_row_sum_f(x + h * W + w0, w1 - w0)
        else:
            acc += convcore_short_row_sum_d(x + h * W + w0, w1 - w0)
    return acc


cdef inline double _rows_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """Sum of n contiguous elements (whole rows of the plane) in double:
    the norms' long-row reduction."""
    if floating is float:
        return convcore_row_sum_f(x, n)
    else:
        return convcore_row_sum_d(x, n)


cdef PoolParams _params(Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                        Py_ssize_t OW, tuple geom):
    """geom = (kh, kw, sh, sw, ph, pw, dh, dw)."""
    cdef PoolParams p
    p.H = H; p.W = W; p.OH = OH; p.OW = OW
    p.kh, p.kw, p.sh, p.sw, p.ph, p.pw, p.dh, p.dw = geom
    return p


cdef inline Py_ssize_t _adaptive_start(Py_ssize_t i, Py_ssize_t out_size,
                                       Py_ssize_t in_size) noexcept nogil:
    return (i * in_size) // out_size


cdef inline Py_ssize_t _adaptive_end(Py_ssize_t i, Py_ssize_t out_size,
                                     Py_ssize_t in_size) noexcept nogil:
    return ((i + 1) * in_size + out_size - 1) // out_size


cdef inline void _window_max(const floating* x, Py_ssize_t W,
                             Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t dh,
                             Py_ssize_t w0, Py_ssize_t w1, Py_ssize_t dw,
                             floating* y, int64_t* idx) noexcept nogil:
    """Max of x[h0:h1:dh, w0:w1:dw] (all inside the plane) and its flat
    index; an empty window gives -inf and -1."""
    cdef floating best = -INFINITY, v
    cdef Py_ssize_t h, w, best_i = -1
    if h0 < h1 and w0 < w1:
        best_i = h0 * W + w0
        h = h0
        while h < h1:
            w = w0
            while w < w1:
                v = x[h * W + w]
                # `v != v` is NaN: the NaN wins, as in PyTorch.
                if v > best or v != v:
                    best = v
                    best_i = h * W + w
                w += dw
            h += dh
    y[0] = best
    if idx != NULL:
        idx[0] = best_i


cdef void max_pool_plane(const floating* x, floating* y, int64_t* idx,
                         const PoolParams* p) noexcept nogil:
    """One plane: y (OH, OW) and, when idx is not NULL, flat argmax indices.

    Taps outer, output columns inner: each output row is swept once per tap
    with a branch-free select (random data would mispredict a branch per
    comparison), and each output still sees its taps in row-major window
    order, so ties and NaNs resolve as in PyTorch's per-window scan. The
    index starts at -1 and the first tap inside the input always takes it
    (PyTorch starts at the first valid tap with -inf), so an all -inf window
    reports its first tap, and a window with no tap inside keeps -1."""
    cdef Py_ssize_t oh, ow, i, j, h, off, lo, hi, tp, row0, sw = p.sw
    cdef floating v
    cdef floating* yrow
    cdef int64_t* irow
    cdef const floating* xrow
    # The winning tap's number per output of the row (see pool.h); without
    # this buffer the indices are kept directly, more slowly.
    cdef void* taps = malloc(p.OW * sizeof(int64_t)) if idx != NULL else NULL
    cdef int32_t* tap32
    cdef int64_t* tap64
    # Tap number -> its offset from the window's corner: no division by kw
    # per output in the loop that makes the flat indices.
    cdef Py_ssize_t* tap_off = NULL
    if taps != NULL:
        tap_off = <Py_ssize_t*> malloc(p.kh * p.kw * sizeof(Py_ssize_t))
        if tap_off == NULL:
            free(taps)
            taps = NULL
        else:
            for tp in range(p.kh * p.kw):
                tap_off[tp] = (tp // p.kw) * p.dh * p.W + (tp % p.kw) * p.dw
    tap32 = <int32_t*> taps
    tap64 = <int64_t*> taps
    for oh in range(p.OH):
        yrow = y + oh * p.OW
        irow = idx + oh * p.OW if idx != NULL else NULL
        for ow in range(p.OW):
            yrow[ow] = -INFINITY
        if irow != NULL:
            for ow in range(p.OW):
                irow[ow] = -1
                if taps != NULL:
                    if floating is float:
                        tap32[ow] = -1
                    else:
                        tap64[ow] = -1
        for i in range(p.kh):
            h = oh * p.sh - p.ph + i * p.dh
            if h < 0 or h >= p.H:
                continue
            for j in range(p.kw):
                off = j * p.dw - p.pw
                valid_range(p.OW, p.W, sw, off, &lo, &hi)
                xrow = x + h * p.W + off
                if irow == NULL:
                    for ow in range(lo, hi):
                        v = xrow[ow * sw]
                        # `v != v` is NaN: the NaN wins, as in PyTorch.
                        yrow[ow] = v if ((v > yrow[ow]) | (v != v)) else yrow[ow]
                elif taps != NULL:
                    if floating is float:
                        pool_max_tap_id_f(xrow, sw, yrow, tap32, lo, hi, i * p.kw + j)
                    else:
                        pool_max_tap_id_d(xrow, sw, yrow, tap64, lo, hi, i * p.kw + j)
                elif floating is float:
                    pool_max_tap_f(xrow, sw, yrow, irow, lo, hi, h * p.W + off)
                else:
                    pool_max_tap_d(xrow, sw, yrow, irow, lo, hi, h * p.W + off)
        if irow != NULL and taps != NULL:
            row0 = (oh * p.sh - p.ph) * p.W - p.pw
            for ow in range(p.OW):
                tp = tap32[ow] if floating is float else tap64[ow]
                if tp >= 0:
                    irow[ow] = row0 + ow * sw + tap_off[tp]
    free(taps)
    free(tap_off)


cdef void adaptive_max_plane(const floating* x, floating* y, int64_t* idx,
                             const PoolParams* p) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, w0, w1
    for oh in range(p.OH):
        h0 = _adaptive_start(oh, p.OH, p.H)
        h1 = _adaptive_end(oh, p.OH, p.H)
        for ow in range(p.OW):
            w0 = _adaptive_start(ow, p.OW, p.W)
            w1 = _adaptive_end(ow, p.OW, p.W)
            _window_max(x, p.W, h0, h1, 1, w0, w1, 1, y + oh * p.OW + ow,
                        idx + oh * p.OW + ow if idx != NULL else NULL)


cdef void max_unpool_plane(const floating* gy, const int64_t* idx,
                           floating* gx, Py_ssize_t in_plane,
                           Py_ssize_t out_plane) noexcept nogil:
    """gx (overwritten) = scatter-add of gy through the saved argmax;
    index -1 (an all-padding window) contributes nothing."""
    cdef Py_ssize_t o
    memset(gx, 0, in_plane * sizeof(floating))
    for o in range(out_plane):
        if idx[o] >= 0:
            gx[idx[o]] += gy[o]


cdef inline bint _avg_window(const PoolParams* p, Py_ssize_t oh, Py_ssize_t ow,
                             bint count_include_pad, Py_ssize_t* h0,
                             Py_ssize_t* h1, Py_ssize_t* w0, Py_ssize_t* w1,
                             double* divisor) noexcept nogil:
    """Input window of output (oh, ow) clipped to the plane, and its divisor;
    False when the window holds no input tap (its output is 0)."""
    cdef Py_ssize_t a0 = oh * p.sh - p.ph, b0 = ow * p.sw - p.pw
    cdef Py_ssize_t a1 = a0 + p.kh, b1 = b0 + p.kw
    # The padded window stops at the end of the padding (ceil_mode windows
    # may run past it); that is the size count_include_pad divides by.
    if a1 > p.H + p.ph:
        a1 = p.H + p.ph
    if b1 > p.W + p.pw:
        b1 = p.W + p.pw
    cdef Py_ssize_t padded = (a1 - a0) * (b1 - b0)
    if a0 < 0:
        a0 = 0
    if b0 < 0:
        b0 = 0
    if a1 > p.H:
        a1 = p.H
    if b1 > p.W:
        b1 = p.W
    h0[0] = a0; h1[0] = a1; w0[0] = b0; w1[0] = b1
    if a0 >= a1 or b0 >= b1:
        return False
    divisor[0] = padded if count_include_pad else (a1 - a0) * (b1 - b0)
    return True


cdef inline void _inside(Py_ssize_t out, Py_ssize_t stride, Py_ssize_t pad,
                         Py_ssize_t k, Py_ssize_t size, Py_ssize_t* lo,
                         Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the outputs along one axis whose window lies inside the
    input (no padding, no clipping): o * stride - pad >= 0 and
    o * stride - pad + k <= size."""
    lo[0] = min((pad + stride - 1) // stride, out)
    hi[0] = max(lo[0], min(out, (size - k + pad) // stride + 1)) if size >= k else lo[0]


cdef void avg_pool_plane(const floating* x, floating* y, const PoolParams* p,
                         bint count_include_pad) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, w0, w1, oh_lo, oh_hi, ow_lo, ow_hi
    cdef double divisor
    cdef const floating* xw
    cdef bint two = p.kh == 2 and p.kw == 2
    _inside(p.OH, p.sh, p.ph, p.kh, p.H, &oh_lo, &oh_hi)
    _inside(p.OW, p.sw, p.pw, p.kw, p.W, &ow_lo, &ow_hi)
    for oh in range(p.OH):
        for ow in range(p.OW):
            if two and oh_lo <= oh < oh_hi and ow_lo <= ow < ow_hi:
                # A 2x2 window inside the plane, written out: _window_sum's
                # row sums in its order, without its clipping and per-row
                # set-up, which cost more than the window's four adds.
                xw = x + (oh * p.sh - p.ph) * p.W + ow * p.sw - p.pw
                y[oh * p.OW + ow] = <floating> (
                    ((<double> xw[0] + xw[1]) + (<double> xw[p.W] + xw[p.W + 1])) / 4)
                continue
            if not _avg_window(p, oh, ow, count_include_pad, &h0, &h1, &w0, &w1,
                               &divisor):
                y[oh * p.OW + ow] = 0
                continue
            y[oh * p.OW + ow] = <floating> (
                _window_sum(x, p.W, h0, h1, w0, w1) / divisor)


cdef void avg_pool_backward_plane(const floating* gy, floating* gx,
                                  const PoolParams* p,
                                  bint count_include_pad) noexcept nogil:
    cdef Py_ssize_t oh, ow, h, w, h0, h1, w0, w1, oh_lo, oh_hi, ow_lo, ow_hi
    cdef double divisor
    cdef floating g
    cdef floating* gw
    cdef bint two = p.kh == 2 and p.kw == 2
    memset(gx, 0, p.H * p.W * sizeof(floating))
    _inside(p.OH, p.sh, p.ph, p.kh, p.H, &oh_lo, &oh_hi)
    _inside(p.OW, p.sw, p.pw, p.kw, p.W, &ow_lo, &ow_hi)
    for oh in range(p.OH):
        for ow in range(p.OW):
            if two and oh_lo <= oh < oh_hi and ow_lo <= ow < ow_hi:
                # As the forward: a 2x2 window inside the plane, written out.
                g = <floating> (gy[oh * p.OW + ow] / 4)
                gw = gx + (oh * p.sh - p.ph) * p.W + ow * p.sw - p.pw
                gw[0] += g
                gw[1] += g
                gw[p.W] += g
                gw[p.W + 1] += g
                continue
            if not _avg_window(p, oh, ow, count_include_pad, &h0, &h1, &w0, &w1,
                               &divisor):
                continue
            g = <floating> (gy[oh * p.OW + ow] / divisor)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    gx[h * p.W + w] += g


cdef void adaptive_avg_plane(const floating* x, floating* y,
                             const PoolParams* p) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, w0, w1
    cdef double total
    for oh in range(p.OH):
        h0 = _adaptive_start(oh, p.OH, p.H)
        h1 = _adaptive_end(oh, p.OH, p.H)
        for ow in range(p.OW):
            w0 = _adaptive_start(ow, p.OW, p.W)
            w1 = _adaptive_end(ow, p.OW, p.W)
            if w0 == 0 and w1 == p.W:  # whole rows: one long run
                total = _rows_sum(x + h0 * p.W, (h1 - h0) * p.W)
            else:
                total = _window_sum(x, p.W, h0, h1, w0, w1)
            y[oh * p.OW + ow] = <floating> (total / ((h1 - h0) * (w1 - w0)))


cdef void adaptive_avg_backward_plane(const floating* gy, floating* gx,
                                      const PoolParams* p) noexcept nogil:
    cdef Py_ssize_t oh, ow, h, w, h0, h1, w0, w1
    cdef floating g
    memset(gx, 0, p.H * p.W * sizeof(floating))
    for oh in range(p.OH):
        h0 = _adaptive_start(oh, p.OH, p.H)
        h1 = _adaptive_end(oh, p.OH, p.H)
        for ow in range(p.OW):
            w0 = _adaptive_start(ow, p.OW, p.W)
            w1 = _adaptive_end(ow, p.OW, p.W)
            g = <floating> (gy[oh * p.OW + ow] / <double> ((h1 - h0) * (w1 - w0)))
            for h in range(h0, h1):
                for w in range(w0, w1):
                    gx[h * p.W + w] += g


# ---------------------------------------------------------------------------
# Drivers, called by convcore.functional after every check, with outputs
# allocated; geom is (kh, kw, sh, sw, ph, pw, dh, dw). Arrays are
# C-contiguous NCHW with a non-empty batch.

def max_pool2d(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
               int64_t[:, :, :, ::1] indices, tuple geom, int num_threads):
    """y = max pool of x; indices (or None) = flat argmax per plane. OUT: y, indices"""
    cdef PoolParams p = _params(x.shape[2], x.shape[3], y.shape[2], y.shape[3], geom)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], nc
    cdef Py_ssize_t ip = p.H * p.W, op = p.OH * p.OW
    cdef int64_t* idx = &indices[0, 0, 0, 0] if indices is not None else NULL
    with nogil:
        for nc in prange(planes, schedule='static', num_threads=num_threads):
            max_pool_plane(&x[0, 0, 0, 0] + nc * ip, &y[0, 0, 0, 0] + nc * op,
                           idx + nc * op if idx != NULL else NULL, &p)


def adaptive_max_pool2d(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
                        int64_t[:, :, :, ::1] indices, int num_threads):
    """y = adaptive max pool of x; indices (or None) as max_pool2d. OUT: y, indices"""
    cdef PoolParams p = _params(x.shape[2], x.shape[3], y.shape[2], y.shape[3],
                                (1, 1, 1, 1, 0, 0, 1, 1))
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], nc
    cdef Py_ssize_t ip = p.H * p.W, op = p.OH * p.OW
    cdef int64_t* idx = &indices[0, 0, 0, 0] if indices is not None else NULL
    with nogil:
        for nc in prange(planes, schedule='static', num_threads=num_threads):
            adaptive_max_plane(&x[0, 0, 0, 0] + nc * ip, &y[0, 0, 0, 0] + nc * op,
                               idx + nc * op if idx != NULL else NULL, &p)


def max_pool2d_backward(const floating[:, :, :, ::1] grad_y,
                        const int64_t[:, :, :, ::1] indices,
                        floating[:, :, :, ::1] grad_x, int num_threads):
    """grad_x (overwritten) = grad_y scattered through indices, which must
    lie in [-1, H*W). Serves max_pool2d and adaptive_max_pool2d. OUT: grad_x"""
    cdef Py_ssize_t planes = grad_x.shape[0] * grad_x.shape[1], nc
    cdef Py_ssize_t ip = grad_x.shape[2] * grad_x.shape[3]
    cdef Py_ssize_t op = grad_y.shape[2] * grad_y.shape[3]
    with nogil:
        for nc in prange(planes, schedule='static', num_threads=num_threads):
            max_unpool_plane(&grad_y[0, 0, 0, 0] + nc * op,
                             &indices[0, 0, 0, 0] + nc * op,
                             &grad_x[0, 0, 0, 0] + nc * ip, ip, op)


def avg_pool2d(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
               tuple geom, bint count_include_pad, int num_threads):
    """y = average pool of x.                                         OUT: y"""
    cdef PoolParams p = _params(x.shape[2], x.shape[3], y.shape[2], y.shape[3], geom)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], nc
    cdef Py_ssize_t ip = p.H * p.W, op = p.OH * p.OW
    with nogil:
        for nc in prange(planes, schedule='static', num_threads=num_threads):
            avg_pool_plane(&x[0, 0, 0, 0] + nc * ip, &y[0, 0, 0, 0] + nc * op,
                           &p, count_include_pad)


def avg_pool2d_backward(const floating[:, :, :, ::1] grad_y,
                        floating[:, :, :, ::1] grad_x, tuple geom,
                        bint count_include_pad, int num_threads):
    """grad_x (overwritten) of avg_pool2d.                       OUT: grad_x"""
    cdef PoolParams p = _params(grad_x.shape[2], grad_x.shape[3],
                                grad_y.shape[2], grad_y.shape[3], geom)
    cdef Py_ssize_t planes = grad_x.shape[0] * grad_x.shape[1], nc
    cdef Py_ssize_t ip = p.H * p.W, op = p.OH * p.OW
    with nogil:
        for nc in prange(planes, schedule='static', num_threads=num_threads):
            avg_pool_backward_plane(&grad_y[0, 0, 0, 0] + nc * op,
                                    &grad_x[0, 0, 0, 0] + nc * ip,
                                    &p, count_include_pad)


def adaptive_avg_pool2d(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
                        int num_threads):
    """y = adaptive average pool of x to y's spatial size.           OUT: y"""
    cdef PoolParams p = _params(x.shape[2], x.shape[3], y.shape[2], y.shape[3],
                                (1, 1, 1, 1, 0, 0, 1, 1))
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], nc
    cdef Py_ssize_t ip = p.H * p.W, op = p.OH * p.OW
    with nogil:
        for nc in prange(planes, schedule='static', num_threads=num_threads):
            adaptive_avg_plane(&x[0, 0, 0, 0] + nc * ip, &y[0, 0, 0, 0] + nc * op, &p)


def adaptive_avg_pool2d_backward(const floating[:, :, :, ::1] grad_y,
                                 floating[:, :, :, ::1] grad_x, int num_threads):
    """grad_x (overwritten) of adaptive_avg_pool2d.              OUT: grad_x"""
    cdef PoolParams p = _params(grad_x.shape[2], grad_x.shape[3],
                                grad_y.shape[2], grad_y.shape[3],
                                (1, 1, 1, 1, 0, 0, 1, 1))
    cdef Py_ssize_t planes = grad_x.shape[0] * grad_x.shape[1], nc
    cdef Py_ssize_t ip = p.H * p.W, op = p.OH * p.OW
    with nogil:
        for nc in prange(planes, schedule='static', num_threads=num_threads):
            adaptive_avg_backward_plane(&grad_y[0, 0, 0, 0] + nc * op,
                                        &grad_x[0, 0, 0, 0] + nc * ip, &p)
