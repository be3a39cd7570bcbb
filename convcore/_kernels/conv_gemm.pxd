from cython cimport floating
from convcore._kernels.conv_params cimport ConvParams

# im2col + GEMM workers for one (image, group) item; shared with the public
# native API (convcore/_kernels/native.pyx). All arrays C-contiguous NCHW.
# split/num_threads: run im2col/col2im over channels and each GEMM
# (blas.gemm_split) with that many OpenMP threads; pass False, 1 from
# inside a prange.


cdef inline bint _is_pointwise(const ConvParams* p) noexcept nogil:
    # im2col is the identity only for a 1x1 kernel, stride 1 and no padding
    # (dilation is then irrelevant), as Caffe's is_1x1_ notes.
    return (p.R == 1 and p.S == 1 and p.stride_h == 1 and p.stride_w == 1
            and p.pad_h == 0 and p.pad_w == 0)


# A column buffer holds a stripe of output rows, at most COLUMN_BUDGET
# elements (1 MiB of float32) unless one row needs more: the GEMM then reads
# it from the core's L2 instead of memory (a 7x7 stem layer's whole column
# is 7 MiB per image), and scratch stays small. GEMMs cut into small pieces
# (gemm_cols > 0, conv_gemm.pyx) read the column unpacked, a few columns at
# a time, straight after im2col wrote it: a quarter of that keeps it in L2
# (measured on AlexNet's conv1: 1 MiB stripes lose the gain of the pieces).
cdef enum:
    COLUMN_BUDGET = 1 << 18
    SMALL_GEMM_COLUMN_BUDGET = 1 << 16
    # One item at a time, its GEMMs split over the threads (a batch too
    # small to split by image): each stripe's GEMM packs the weights again
    # per thread, so stripes are as large as this allows (a 512-channel
    # 28x28 layer at batch 1 took 14 stripes of 2 rows under COLUMN_BUDGET).
    SPLIT_COLUMN_BUDGET = 1 << 22
    # gemm_cols value of that plan (no pieces; big stripes).
    SPLIT_GEMM = -1


cdef inline Py_ssize_t _column_ld(Py_ssize_t columns, Py_ssize_t gemm_cols) noexcept nogil:
    """Row stride of a column of `columns` columns. GEMM pieces read 16
    columns of every row: padded to whole 16-element blocks (and the buffer
    64-byte aligned, conv_gemm._scratch) no float32 row read straddles two
    cache lines (AlexNet's conv1 ~5% faster)."""
    if gemm_cols > 0:
        return (columns + 15) // 16 * 16
    return columns


cdef inline Py_ssize_t _budget(Py_ssize_t gemm_cols) noexcept nogil:
    if gemm_cols == SPLIT_GEMM:
        return SPLIT_COLUMN_BUDGET
    return SMALL_GEMM_COLUMN_BUDGET if gemm_cols > 0 else COLUMN_BUDGET


cdef inline Py_ssize_t _stripe_rows(const ConvParams* p,
                                    Py_ssize_t gemm_cols) noexcept nogil:
    """Output rows per im2col stripe: 1 <= rows <= OH."""
    cdef Py_ssize_t per_row = (p.C // p.groups) * p.R * p.S * p.OW
    cdef Py_ssize_t rows = _budget(gemm_cols) // per_row if per_row > 0 else p.OH
    if rows < 1:
        rows = 1
    if rows > p.OH:
        rows = p.OH
    return rows


cdef inline ConvParams _stripe(const ConvParams* p, Py_ssize_t oh0,
                               Py_ssize_t oh1) noexcept nogil:
    """The geometry of output rows [oh0, oh1) alone: the same input, with
    the top padding shifted (it may become negative: the stripe then
    starts inside the image)."""
    cdef ConvParams q = p[0]
    q.OH = oh1 - oh0
    q.pad_h = p.pad_h - oh0 * p.stride_h
    return q


cdef inline Py_ssize_t _images_per_gemm(const ConvParams* p,
                                         Py_ssize_t gemm_cols) noexcept nogil:
    """Images whose columns share one buffer and one GEMM piece: when a
    piece holds two or more whole images (LeNet's 16 x 100 x 150 per image
    runs the small kernel at ~90 GFLOP/s, four side by side at ~110) and
    they fit the small stripe budget; 1 otherwise (and for pointwise
    layers, whose column is the input itself)."""
    cdef Py_ssize_t P = p.OH * p.OW, CRS = (p.C // p.groups) * p.R * p.S
    cdef Py_ssize_t nb
    if gemm_cols <= 0 or P == 0 or _is_pointwise(p) or gemm_cols < 2 * P:
        return 1
    nb = min(gemm_cols // P, SMALL_GEMM_COLUMN_BUDGET // (CRS * P))
    return nb if nb > 1 else 1


cdef inline Py_ssize_t _column_size_for(const ConvParams* p,
                                        Py_ssize_t gemm_cols) noexcept nogil:
    """Elements of one thread's scratch: a column stripe (0 for pointwise
    layers), or, for several images per GEMM, their columns side by side
    and the (K/groups, images*OH*OW) product before it goes to NCHW."""
    cdef Py_ssize_t nb = _images_per_gemm(p, gemm_cols)
    if _is_pointwise(p):
        return 0
    if nb > 1:
        return _column_ld(nb * p.OH * p.OW, gemm_cols) * ((p.C // p.groups) * p.R * p.S
                                                          + p.K // p.groups)
    return _stripe_column_size(p, _stripe_rows(p, gemm_cols), gemm_cols)


cdef inline Py_ssize_t _stripe_column_size(const ConvParams* p, Py_ssize_t rows,
                                           Py_ssize_t gemm_cols) noexcept nogil:
    """Elements of the column of a stripe of `rows` output rows (0 for
    pointwise layers, whose column is the input)."""
    if _is_pointwise(p):
        return 0
    return (p.C // p.groups) * p.R * p.S * _column_ld(rows * p.OW, gemm_cols)


cdef inline Py_ssize_t _column_size(const ConvParams* p) noexcept nogil:
    """_column_size_for whole GEMMs (what _forward_item and _backward_item
    use)."""
    return _column_size_for(p, 0)


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
