"""im2col / col2im for one image and one group, with stride, zero padding
and dilation. Bounded scratch: callers pass a one-image column buffer."""
from libc.string cimport memset
from convcore._kernels.conv_params cimport ConvParams, valid_range


# The rows of one tap: zeros, a copy of the source, zeros (why the copy is
# written so: im2col.h).
cdef extern from "convcore/_kernels/im2col.h":
    void convcore_im2col_rows_f(float* y, const float* x, Py_ssize_t lo, Py_ssize_t hi,
                                Py_ssize_t n, Py_ssize_t rows, Py_ssize_t ldy,
                                Py_ssize_t ldx) noexcept nogil
    void convcore_im2col_rows_d(double* y, const double* x, Py_ssize_t lo, Py_ssize_t hi,
                                Py_ssize_t n, Py_ssize_t rows, Py_ssize_t ldy,
                                Py_ssize_t ldx) noexcept nogil
    void convcore_im2col_rows_s2_f(float* y, const float* x, Py_ssize_t lo, Py_ssize_t hi,
                                   Py_ssize_t n, Py_ssize_t rows, Py_ssize_t ldy,
                                   Py_ssize_t ldx) noexcept nogil
    void convcore_im2col_rows_s2_d(double* y, const double* x, Py_ssize_t lo,
                                   Py_ssize_t hi, Py_ssize_t n, Py_ssize_t rows,
                                   Py_ssize_t ldy, Py_ssize_t ldx) noexcept nogil
    void convcore_col2im_row_s2_f(float* x, const float* y, Py_ssize_t lo,
                                  Py_ssize_t hi) noexcept nogil
    void convcore_col2im_row_s2_d(double* x, const double* y, Py_ssize_t lo,
                                  Py_ssize_t hi) noexcept nogil


cdef inline void _rows(floating* y, const floating* x, Py_ssize_t lo,
                       Py_ssize_t hi, Py_ssize_t n, Py_ssize_t rows,
                       Py_ssize_t ldy, Py_ssize_t ldx, bint step2=False) noexcept nogil:
    """Rows of one tap (im2col.h); step2: reading every other column."""
    if floating is float:
        if step2:
            convcore_im2col_rows_s2_f(y, x, lo, hi, n, rows, ldy, ldx)
        else:
            convcore_im2col_rows_f(y, x, lo, hi, n, rows, ldy, ldx)
    else:
        if step2:
            convcore_im2col_rows_s2_d(y, x, lo, hi, n, rows, ldy, ldx)
        else:
            convcore_im2col_rows_d(y, x, lo, hi, n, rows, ldy, ldx)


cdef inline void _add_row_s2(floating* x, const floating* y, Py_ssize_t lo,
                             Py_ssize_t hi) noexcept nogil:
    if floating is float:
        convcore_col2im_row_s2_f(x, y, lo, hi)
    else:
        convcore_col2im_row_s2_d(x, y, lo, hi)


cdef inline void _taps(Py_ssize_t out_size, Py_ssize_t in_size, Py_ssize_t stride,
                       Py_ssize_t offset, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """valid_range, without its two divisions at stride 1 (they cost as
    much as a short row's copy)."""
    if stride != 1:
        valid_range(out_size, in_size, stride, offset, lo, hi)
        return
    lo[0] = min(max(-offset, 0), out_size)
    hi[0] = max(min(in_size - offset, out_size), lo[0])


cdef inline Py_ssize_t _gcd(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t t
    while b:
        t = a % b
        a = b
        b = t
    return a


cdef void im2col(const floating* x, floating* col, Py_ssize_t ld,
                 const ConvParams* p, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    cdef Py_ssize_t H = p.H, W = p.W, R = p.R, S = p.S
    cdef Py_ssize_t OH = p.OH, OW = p.OW
    cdef Py_ssize_t sh = p.stride_h, sw = p.stride_w
    cdef Py_ssize_t c, r, s, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi, rows
    # A strided gather is slow (scalar; at stride 2, shuffles of two
    # vectors per vector: im2col.h), but tap s reads what tap s - k read,
    # d outputs further on: (ow + d)*sw + (s - k)*dil == ow*sw + s*dil when
    # k*dil == d*sw. So only the first k taps gather; the others copy the
    # row of tap s - k shifted by d (contiguous, vectorised; padding comes
    # along) and gather just the last d outputs (an 11x11 stride-4 kernel
    # gathers 4 taps of 11).
    cdef Py_ssize_t k = sw // _gcd(sw, p.dil_w), d = k * p.dil_w // sw
    cdef const floating* xrow
    cdef floating* row
    cdef floating* out
    for c in range(c0, c1):
        for r in range(R):
            _taps(OH, H, sh, r * p.dil_h - p.pad_h, &oh_lo, &oh_hi)
            rows = oh_hi - oh_lo
            for s in range(S):
                _taps(OW, W, sw, s * p.dil_w - p.pad_w, &ow_lo, &ow_hi)
                row = col + ((c * R + r) * S + s) * ld
                # Rows that fall in the top/bottom padding are all zero.
                if oh_lo > 0:
                    memset(row, 0, oh_lo * OW * sizeof(floating))
                if oh_hi < OH:
                    memset(row + oh_hi * OW, 0, (OH - oh_hi) * OW * sizeof(floating))
                # xrow[oh * sh * W + ow * sw]: input (oh*sh - pad_h + r*dil_h,
                # ow*sw - pad_w + s*dil_w).
                xrow = x + (c * H + r * p.dil_h - p.pad_h) * W + s * p.dil_w - p.pad_w
                if sw == 1:
                    _rows(row + oh_lo * OW, xrow + oh_lo * sh * W, ow_lo, ow_hi,
                          OW, rows, OW, sh * W)
                    continue
                if s >= k and d < OW:
                    _rows(row + oh_lo * OW, row - k * ld + oh_lo * OW + d, 0, OW - d,
                          OW - d, rows, OW, OW)
                    for oh in range(oh_lo, oh_hi):
                        out = row + oh * OW
                        for ow in range(OW - d, OW):
                            out[ow] = (xrow[oh * sh * W + ow * sw]
                                       if ow_lo <= ow < ow_hi else 0)
                    continue
                if sw == 2:
                    _rows(row + oh_lo * OW, xrow + oh_lo * sh * W, ow_lo, ow_hi,
                          OW, rows, OW, sh * W, True)
                    continue
                for oh in range(oh_lo, oh_hi):
                    out = row + oh * OW
                    for ow in range(ow_lo):
                        out[ow] = 0
                    for ow in range(ow_lo, ow_hi):
                        out[ow] = xrow[oh * sh * W + ow * sw]
                    for ow in range(ow_hi, OW):
                        out[ow] = 0


cdef void col2im(const floating* col, floating* x, const ConvParams* p,
                 Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    col2im_ld(col, p.OH * p.OW, x, p, c0, c1)


cdef void col2im_ld(const floating* col, Py_ssize_t ld, floating* x,
                    const ConvParams* p, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    cdef Py_ssize_t H = p.H, W = p.W, R = p.R, S = p.S
    cdef Py_ssize_t OH = p.OH, OW = p.OW, P = p.OH * p.OW
    cdef Py_ssize_t sh = p.stride_h, sw = p.stride_w
    cdef Py_ssize_t c, r, s, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi, ih
    cdef floating* xrow
    cdef const floating* row
    cdef const floating* src
    for c in range(c0, c1):
        for r in range(R):
            valid_range(OH, H, sh, r * p.dil_h - p.pad_h, &oh_lo, &oh_hi)
            for s in range(S):
                valid_range(OW, W, sw, s * p.dil_w - p.pad_w, &ow_lo, &ow_hi)
                row = col + ((c * R + r) * S + s) * ld
                for oh in range(oh_lo, oh_hi):
                    ih = oh * sh - p.pad_h + r * p.dil_h
                    src = row + oh * OW
                    xrow = x + (c * H + ih) * W + s * p.dil_w - p.pad_w
                    if sw == 1:
                        for ow in range(ow_lo, ow_hi):
                            xrow[ow] += src[ow]
                    elif sw == 2:
                        _add_row_s2(xrow, src, ow_lo, ow_hi)
                    else:
                        for ow in range(ow_lo, ow_hi):
                            xrow[ow * sw] += src[ow]


def im2col_py(const floating[:, :, ::1] x, floating[:, ::1] col,
              Py_ssize_t R, Py_ssize_t S, Py_ssize_t OH, Py_ssize_t OW,
              stride, padding, dilation):
    """im2col of one (C, H, W) image into col (C*R*S, OH*OW); for tests."""
    cdef ConvParams p = _params(x, R, S, OH, OW, stride, padding, dilation)
    with nogil:
        im2col(&x[0, 0, 0], &col[0, 0], OH * OW, &p, 0, p.C)


def col2im_py(const floating[:, ::1] col, floating[:, :, ::1] x,
              Py_ssize_t R, Py_ssize_t S, Py_ssize_t OH, Py_ssize_t OW,
              stride, padding, dilation):
    """x += col2im(col); for tests."""
    cdef ConvParams p = _params(x, R, S, OH, OW, stride, padding, dilation)
    with nogil:
        col2im(&col[0, 0], &x[0, 0, 0], &p, 0, p.C)


cdef ConvParams _params(x, Py_ssize_t R, Py_ssize_t S, Py_ssize_t OH,
                        Py_ssize_t OW, stride, padding, dilation):
    cdef ConvParams p
    p.N = 1
    p.C, p.H, p.W = x.shape[0], x.shape[1], x.shape[2]
    p.K = 0
    p.R, p.S, p.OH, p.OW = R, S, OH, OW
    p.stride_h, p.stride_w = stride
    p.pad_h, p.pad_w = padding
    p.dil_h, p.dil_w = dilation
    p.groups = 1
    return p
