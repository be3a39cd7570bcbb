# The geometry of one 2-D convolution, in plain C types (public: downstream
# Cython code fills it to call the kernels; see convcore.get_include()).
#
# Input (N, C, H, W), weight (K, C/groups, R, S), output (N, K, OH, OW), all
# C-contiguous NCHW. pad_h/pad_w are the top/left zero padding; a larger
# bottom/right padding (padding="same" with an odd total, as PyTorch splits
# it) is expressed by OH/OW alone, since every read past H/W is a zero.
cdef struct ConvParams:
    Py_ssize_t N, C, H, W
    Py_ssize_t K, R, S
    Py_ssize_t OH, OW
    Py_ssize_t stride_h, stride_w
    Py_ssize_t pad_h, pad_w
    Py_ssize_t dil_h, dil_w
    Py_ssize_t groups


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any sign of a (C division truncates)."""
    if a >= 0:
        return (a + b - 1) // b
    return -((-a) // b)


cdef inline void valid_range(Py_ssize_t out_size, Py_ssize_t in_size,
                             Py_ssize_t stride, Py_ssize_t offset,
                             Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Output indices o in [lo, hi) whose input index o*stride + offset lies
    in [0, in_size): the taps that read real data, not padding. Hot loops run
    over [lo, hi) with no bounds test inside."""
    cdef Py_ssize_t a = ceil_div(-offset, stride)
    cdef Py_ssize_t b = ceil_div(in_size - offset, stride)
    if a < 0:
        a = 0
    if a > out_size:  # every tap lands in the padding: an empty range
        a = out_size  # that still lies inside [0, out_size]
    if b > out_size:
        b = out_size
    if b < a:
        b = a
    lo[0] = a
    hi[0] = b


cdef inline ConvParams make_params(
        Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
        Py_ssize_t K, Py_ssize_t R, Py_ssize_t S,
        Py_ssize_t OH, Py_ssize_t OW,
        Py_ssize_t stride_h, Py_ssize_t stride_w,
        Py_ssize_t pad_h, Py_ssize_t pad_w,
        Py_ssize_t dil_h, Py_ssize_t dil_w,
        Py_ssize_t groups) noexcept nogil:
    cdef ConvParams p
    p.N = N; p.C = C; p.H = H; p.W = W
    p.K = K; p.R = R; p.S = S; p.OH = OH; p.OW = OW
    p.stride_h = stride_h; p.stride_w = stride_w
    p.pad_h = pad_h; p.pad_w = pad_w
    p.dil_h = dil_h; p.dil_w = dil_w
    p.groups = groups
    return p

