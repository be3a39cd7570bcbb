from cython cimport floating
from convcore._kernels.conv_params cimport ConvParams

# im2col + GEMM workers for one (image, group) item; shared with the public
# native API (convcore/_kernels/native.pyx). All arrays C-contiguous NCHW.
# split/num_threads: run im2col/col2im over channels with that many OpenMP
# threads (the GEMM's threads are the BLAS's own); pass False, 1 from
# inside a prange.


cdef inline bint _is_pointwise(const ConvParams* p) noexcept nogil:
    # im2col is the identity only for a 1x1 kernel, stride 1 and no padding
    # (dilation is then irrelevant), as Caffe's is_1x1_ notes.
    return (p.R == 1 and p.S == 1 and p.stride_h == 1 and p.stride_w == 1
            and p.pad_h == 0 and p.pad_w == 0)


cdef inline Py_ssize_t _column_size(const ConvParams* p) noexcept nogil:
    """Elements of one thread's column buffer (0 for pointwise layers)."""
    if _is_pointwise(p):
        return 0
    return (p.C // p.groups) * p.R * p.S * p.OH * p.OW


# y[n, g*Kg:(g+1)*Kg] (overwritten) for item = n*groups + g; bias may be
# NULL; col: _column_size(p) elements private to the caller (unused, may be
# NULL, when pointwise).
cdef void _forward_item(const floating* x, const floating* w,
                        const floating* bias, floating* y,
                        const ConvParams* p, Py_ssize_t item, floating* col,
                        bint split, int num_threads) noexcept nogil

# For image n and group g: when grad_w_part is not NULL, *adds* this image's
# weight gradient of group g into it (x read, w not); when grad_x is not
# NULL, overwrites grad_x[n, group g channels] (w read, x not).
cdef void _backward_item(const floating* grad_y, const floating* x,
                         const floating* w, floating* grad_x,
                         floating* grad_w_part, const ConvParams* p,
                         Py_ssize_t n, Py_ssize_t g, floating* col,
                         bint split, int num_threads) noexcept nogil
