"""im2col / col2im for one image and one group, with stride, zero padding
and dilation. Bounded scratch: callers pass a one-image column buffer."""
from libc.string cimport memset
from convcore._kernels.conv_params cimport ConvParams, valid_range


cdef void im2col(const floating* x, floating* col, const ConvParams* p,
                 Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    cdef Py_ssize_t H = p.H, W = p.W, R = p.R, S = p.S
    cdef Py_ssize_t OH = p.OH, OW = p.OW, P = p.OH * p.OW
    cdef Py_ssize_t sh = p.stride_h, sw = p.stride_w
    cdef Py_ssize_t c, r, s, oh, ow, oh_lo, oh_hi, ow_lo, ow_hi, ih
    cdef const floating* xrow
    cdef floating* row
    cdef floating* out
    for c in range(c0, c1):
        for r in range(R):
            valid_range(OH, H, sh, r * p.dil_h - p.pad_h, &oh_lo, &oh_hi)
            for s in range(S):
                valid_range(OW, W, sw, s * p.dil_w - p.pad_w, &ow_lo, &ow_hi)
                row = col + ((c * R + r) * S + s) * P
                # Rows that fall in the top/bottom padding are all zero.
                memset(row, 0, oh_lo * OW * sizeof(floating))
                memset(row + oh_hi * OW, 0, (OH - oh_hi) * OW * sizeof(floating))
                for oh in range(oh_lo, oh_hi):
                    ih = oh * sh - p.pad_h + r * p.dil_h
                    out = row + oh * OW
                    # xrow[ow * sw] is input column ow*sw - pad_w + s*dil_w.
                    xrow = x + (c * H + ih) * W + s * p.dil_w - p.pad_w
                    for ow in range(ow_lo):
                        out[ow] = 0
                    if sw == 1:
                        for ow in range(ow_lo, ow_hi):
                            out[ow] = xrow[ow]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            out[ow] = xrow[ow * sw]
                    for ow in range(ow_hi, OW):
                        out[ow] = 0


cdef void col2im(const floating* col, floating* x, const ConvParams* p,
                 Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
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
                row = col + ((c * R + r) * S + s) * P
                for oh in range(oh_lo, oh_hi):
                    ih = oh * sh - p.pad_h + r * p.dil_h
                    src = row + oh * OW
                    xrow = x + (c * H + ih) * W + s * p.dil_w - p.pad_w
                    if sw == 1:
                        for ow in range(ow_lo, ow_hi):
                            xrow[ow] += src[ow]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            xrow[ow * sw] += src[ow]


def im2col_py(const floating[:, :, ::1] x, floating[:, ::1] col,
              Py_ssize_t R, Py_ssize_t S, Py_ssize_t OH, Py_ssize_t OW,
              stride, padding, dilation):
    """im2col of one (C, H, W) image into col (C*R*S, OH*OW); for tests."""
    cdef ConvParams p = _params(x, R, S, OH, OW, stride, padding, dilation)
    with nogil:
        im2col(&x[0, 0, 0], &col[0, 0], &p, 0, p.C)


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
