"""im2col + GEMM convolution, forward and backward, through a real BLAS.

Work is split into (image, group) items. _plan (below) decides how a call
runs and how much scratch it takes, and the drivers run what it decided;
convcore.algorithms asks scratch_bytes, which reads the same plan. Two ways
to share the threads:

batch_parallel=True   prange over items, each thread with its own one-image
                      column buffer and single-threaded GEMMs (BLAS held to
                      1 thread by the caller: one threading owner at a time).
batch_parallel=False  items one after another; im2col/col2im split over
                      channels with prange, and each GEMM split over the
                      threads by rows or columns (blas.gemm_split), for
                      batches smaller than the thread count. The BLAS runs
                      on one thread in both plans: its own pool never
                      competes with convcore's.

Scratch is bounded: one (Cg*R*S, rows*OW) column per thread for a stripe
of output rows (about 1 MiB, conv_gemm.pxd), never a whole-batch matrix;
1x1 stride-1 unpadded convolutions use the input itself as the column
matrix.

Forward GEMMs may be cut into pieces of gemm_cols output columns
(batch_parallel only, on a BLAS with the small-matrix kernel): OpenBLAS
multiplies a product of at most 100^3 multiply-adds with its unpacked
small-matrix kernel, which for a thin weight matrix (K/groups up to ~200)
beats packing the column (AlexNet's conv1, a 7x7 stem and a 1x1 256->64
layer 1.2-1.5x faster). Pieces read the column from L2 right after im2col
wrote it, so their stripes are 4x smaller, with rows padded to 64-byte
lines; a piece wide enough for two or more whole images (LeNet) takes
several images side by side in one column and one GEMM.

The weight gradient is summed in NUM_PARTIALS fixed image chunks and the
partial sums added in chunk order, so the result is the same at every
thread count up to NUM_PARTIALS. In float32 the partials are kept
transposed (_backward_item_t).
"""
from cython cimport floating
from cython.parallel cimport prange
from convcore._kernels.buffer_cache cimport give, take
from libc.string cimport memcpy, memset
from convcore._kernels._openmp cimport omp_get_thread_num
from convcore._kernels.blas cimport SLAB_MACS, gemm, gemm_split
from convcore._kernels.conv_geometry cimport ConvGeometry, check_shapes
from convcore._kernels.conv_params cimport ConvParams
from convcore._kernels.im2col cimport im2col, col2im, col2im_ld
# Weight-gradient chunks (also the most threads the backward pass can use).
from convcore._kernels.partials cimport NUM_PARTIALS, sum_partials

# Images whose columns and grad_y rows one gathered GEMM takes at most:
# about this many elements of scratch. A module attribute, read per call,
# so that tests can make the gathered drivers loop over several batches.
GATHER_BUDGET_ELEMENTS = 1 << 22


# _is_pointwise and _column_size live in conv_gemm.pxd (shared with native).


cdef void _im2col_channels(const floating* x, floating* col, Py_ssize_t ld,
                           const ConvParams* p, Py_ssize_t Cg,
                           bint split, int num_threads) noexcept nogil:
    cdef Py_ssize_t c
    if split:
        for c in prange(Cg, schedule='static', num_threads=num_threads):
            im2col(x, col, ld, p, c, c + 1)
    else:
        im2col(x, col, ld, p, 0, Cg)


cdef void _col2im_channels(const floating* col, floating* x,
                           const ConvParams* p, Py_ssize_t Cg,
                           bint split, int num_threads) noexcept nogil:
    cdef Py_ssize_t c
    if split:
        for c in prange(Cg, schedule='static', num_threads=num_threads):
            col2im(col, x, p, c, c + 1)
    else:
        col2im(col, x, p, 0, Cg)


cdef void _gemm_pieces(int m, int n, int k, const floating* a, int lda,
                       const floating* b, int ldb, floating beta, floating* c,
                       int ldc, Py_ssize_t cols) noexcept nogil:
    """c (m, n) = a (m, k) @ b (k, n) + beta c, as GEMMs of at most `cols`
    columns of b and c each (one GEMM when cols is 0)."""
    cdef Py_ssize_t j0 = 0, step = cols if cols > 0 else n
    while j0 < n:
        gemm(False, False, m, <int> min(step, n - j0), k, <floating> 1,
             a, lda, b + j0, ldb, beta, c + j0, ldc)
        j0 += step


cdef inline void _item_gemm(int m, int n, int k, const floating* a, int lda,
                            const floating* b, int ldb, floating beta, floating* c,
                            int ldc, Py_ssize_t cols, bint split,
                            int num_threads) noexcept nogil:
    """A forward GEMM of one item: in pieces on this thread, or (split, one
    item at a time) shared out over num_threads (blas.gemm_split)."""
    if split:
        gemm_split(False, False, m, n, k, <floating> 1, a, lda, b, ldb, beta,
                   c, ldc, num_threads)
    else:
        _gemm_pieces(m, n, k, a, lda, b, ldb, beta, c, ldc, cols)


cdef void _forward_item(const floating* x, const floating* w,
                        const floating* bias, floating* y,
                        const ConvParams* p, Py_ssize_t item, floating* col,
                        bint split, int num_threads) noexcept nogil:
    _forward_item_cols(x, w, bias, y, p, item, col, split, num_threads, 0)


cdef void _forward_item_cols(const floating* x, const floating* w,
                             const floating* bias, floating* y,
                             const ConvParams* p, Py_ssize_t item, floating* col,
                             bint split, int num_threads,
                             Py_ssize_t gemm_cols) noexcept nogil:
    """_forward_item with each GEMM cut into pieces of at most gemm_cols
    output columns (0: whole); col: _column_size_for(p, gemm_cols)."""
    cdef Py_ssize_t rows = p.OH if _is_pointwise(p) else _stripe_rows(p, gemm_cols), oh0 = 0
    # y[:, stripe] (Kg, Ps) = w[g] (Kg, CRS) @ col (CRS, Ps), stripe by stripe.
    while oh0 < p.OH:
        _forward_rows(x, w, bias, y, p, item, oh0, min(oh0 + rows, p.OH), col, gemm_cols,
                      split, num_threads)
        oh0 += rows


cdef void _forward_rows(const floating* x, const floating* w,
                        const floating* bias, floating* y,
                        const ConvParams* p, Py_ssize_t item, Py_ssize_t oh0,
                        Py_ssize_t oh1, floating* col, Py_ssize_t gemm_cols,
                        bint split, int num_threads) noexcept nogil:
    """Output rows [oh0, oh1) of one item: their im2col (none for pointwise
    layers, whose column is the input) and GEMM, in pieces of gemm_cols
    columns (0: whole) on this thread, or (split) shared out over
    num_threads; col: the plan's column."""
    cdef Py_ssize_t G = p.groups, n = item // G, g = item % G
    cdef Py_ssize_t Cg = p.C // G, Kg = p.K // G
    cdef Py_ssize_t HW = p.H * p.W, P = p.OH * p.OW, CRS = Cg * p.R * p.S
    cdef Py_ssize_t Ps = (oh1 - oh0) * p.OW, k, i, ld
    cdef const floating* xg = x + (n * p.C + g * Cg) * HW
    cdef const floating* wg = w + g * Kg * CRS
    cdef floating* yg = y + (n * p.K + g * Kg) * P + oh0 * p.OW
    cdef floating beta = 0
    cdef ConvParams q
    if bias != NULL:
        # Bias rides in the GEMM: fill the rows, then accumulate (beta = 1).
        for k in range(Kg):
            for i in range(Ps):
                yg[k * P + i] = bias[g * Kg + k]
        beta = 1
    if _is_pointwise(p):  # stride 1: output rows [oh0, oh1) read input rows [oh0, oh1)
        _item_gemm(<int> Kg, <int> Ps, <int> CRS, wg, <int> CRS, xg + oh0 * p.W, <int> P,
                   beta, yg, <int> P, gemm_cols, split, num_threads)
        return
    q = _stripe(p, oh0, oh1)
    ld = _column_ld(Ps, gemm_cols)
    _im2col_channels(xg, col, ld, &q, Cg, split, num_threads)
    _item_gemm(<int> Kg, <int> Ps, <int> CRS, wg, <int> CRS, col, <int> ld,
               beta, yg, <int> P, gemm_cols, split, num_threads)


cdef void _forward_images(const floating* x, const floating* w,
                          const floating* bias, floating* y,
                          const ConvParams* p, Py_ssize_t n0, Py_ssize_t n1,
                          Py_ssize_t g, floating* col,
                          Py_ssize_t gemm_cols) noexcept nogil:
    """y[n0:n1, group g] for images small enough to share one GEMM
    (_images_per_gemm): their columns side by side, (CRS, B*P), one product
    (Kg, B*P) after them in col, then each image's rows copied to NCHW."""
    cdef Py_ssize_t G = p.groups, Cg = p.C // G, Kg = p.K // G
    cdef Py_ssize_t HW = p.H * p.W, P = p.OH * p.OW, CRS = Cg * p.R * p.S
    cdef Py_ssize_t B = n1 - n0, L = (n1 - n0) * P, b, k, i
    cdef Py_ssize_t ld = _column_ld(L, gemm_cols)
    cdef floating* prod = col + CRS * ld
    cdef floating beta = 0
    for b in range(B):
        im2col(x + ((n0 + b) * p.C + g * Cg) * HW, col + b * P, ld, p, 0, Cg)
    if bias != NULL:  # as in _forward_item_cols
        for k in range(Kg):
            for i in range(L):
                prod[k * ld + i] = bias[g * Kg + k]
        beta = 1
    _gemm_pieces(<int> Kg, <int> L, <int> CRS, w + g * Kg * CRS, <int> CRS,
                 col, <int> ld, beta, prod, <int> ld, gemm_cols)
    for b in range(B):
        for k in range(Kg):
            memcpy(y + ((n0 + b) * p.K + g * Kg + k) * P, prod + k * ld + b * P,
                   P * sizeof(floating))


cdef void _backward_item(const floating* grad_y, const floating* x,
                         const floating* w, floating* grad_x,
                         floating* grad_w_part, const ConvParams* p,
                         Py_ssize_t n, Py_ssize_t g, floating* col,
                         bint split, int num_threads) noexcept nogil:
    _backward_item_t(grad_y, x, w, grad_x, grad_w_part, p, n, g, col, split,
                     num_threads, False)


cdef void _backward_item_t(const floating* grad_y, const floating* x,
                           const floating* w, floating* grad_x,
                           floating* grad_w_part, const ConvParams* p,
                           Py_ssize_t n, Py_ssize_t g, floating* col,
                           bint split, int num_threads,
                           bint transposed) noexcept nogil:
    """_backward_item; with `transposed`, grad_w_part holds each group's
    weight gradient transposed, (Cg*R*S, Kg) row-major: the GEMM
    col @ grad_y^T puts the long (Cg*R*S) side where OpenBLAS packs it
    best, 1.05-1.5x faster than grad_y @ col^T (LeNet's 16-channel layer
    most; the driver transposes once, when summing the partials)."""
    cdef Py_ssize_t G = p.groups, Cg = p.C // G, Kg = p.K // G
    cdef Py_ssize_t HW = p.H * p.W, P = p.OH * p.OW, CRS = Cg * p.R * p.S
    cdef Py_ssize_t oh0, oh1, rows, Ps
    cdef bint pointwise = _is_pointwise(p)
    cdef const floating* gyg = grad_y + (n * p.K + g * Kg) * P
    cdef const floating* wg = w + g * Kg * CRS
    cdef const floating* xg = x + (n * p.C + g * Cg) * HW
    cdef floating* gxg = grad_x + (n * p.C + g * Cg) * HW if grad_x != NULL else NULL
    cdef floating* gwg = grad_w_part + g * Kg * CRS if grad_w_part != NULL else NULL
    cdef ConvParams q
    cdef int nt = num_threads if split else 1
    if pointwise:
        if gwg != NULL:
            _weight_grad_gemm(gyg, P, xg, P, <int> P, gwg, <int> Kg, <int> CRS, transposed, nt)
        if gxg != NULL:  # grad_x (CRS, P) = w[g]^T (CRS, Kg) @ grad_y (Kg, P)
            gemm_split(True, False, <int> CRS, <int> P, <int> Kg, <floating> 1,
                       wg, <int> CRS, gyg, <int> P, <floating> 0, gxg, <int> P, nt)
        return
    if gxg != NULL:
        memset(gxg, 0, Cg * HW * sizeof(floating))
    rows = _stripe_rows(p, SPLIT_GEMM if split else 0)
    oh0 = 0
    while oh0 < p.OH:
        oh1 = min(oh0 + rows, p.OH)
        q = _stripe(p, oh0, oh1)
        Ps = (oh1 - oh0) * p.OW
        if gwg != NULL:
            _im2col_channels(xg, col, Ps, &q, Cg, split, num_threads)
            _weight_grad_gemm(gyg + oh0 * p.OW, P, col, Ps, <int> Ps, gwg,
                              <int> Kg, <int> CRS, transposed, nt)
        if gxg != NULL:
            # dcol (CRS, Ps) = w[g]^T (CRS, Kg) @ grad_y[n, g, stripe]; col2im
            # adds it in (stripes share input rows).
            gemm_split(True, False, <int> CRS, <int> Ps, <int> Kg, <floating> 1,
                       wg, <int> CRS, gyg + oh0 * p.OW, <int> P, <floating> 0, col,
                       <int> Ps, nt)
            _col2im_channels(col, gxg, &q, Cg, split, num_threads)
        oh0 = oh1


cdef inline void _weight_grad_gemm(const floating* gy, Py_ssize_t ldgy,
                                   const floating* col, Py_ssize_t ldcol,
                                   int Ps, floating* gw, int Kg, int CRS,
                                   bint transposed, int num_threads) noexcept nogil:
    """gw += grad_y (Kg, Ps) @ col^T (Ps, CRS), or its transpose
    gw^T (CRS, Kg) += col (CRS, Ps) @ grad_y^T when `transposed`; split
    over num_threads (1 inside a prange)."""
    if transposed:
        gemm_split(False, True, CRS, Kg, Ps, <floating> 1, col, <int> ldcol,
                   gy, <int> ldgy, <floating> 1, gw, Kg, num_threads)
    else:
        gemm_split(False, True, Kg, CRS, Ps, <floating> 1, gy, <int> ldgy,
                   col, <int> ldcol, <floating> 1, gw, CRS, num_threads)


cdef void* _scratch(Py_ssize_t threads, Py_ssize_t size, size_t item) except? NULL:
    """One column buffer per thread, taken with the GIL so that failure
    is a MemoryError, never a crash inside the parallel region. 64 bytes
    more than asked, for _aligned. Every big scratch of this module comes
    from convcore's buffer cache (take/give): memory past glibc's largest
    heap block would be mapped afresh, and its pages faulted in, on every
    call (AlexNet's weight-gradient partials, for one)."""
    if size == 0:
        return NULL
    return take(threads * size * item + 64)


cdef void _release_scratch(void* buf, Py_ssize_t threads, Py_ssize_t size,
                           size_t item) noexcept:
    """Back to the cache: a _scratch buffer (NULL when size was 0)."""
    give(buf, threads * size * item + 64)


cdef inline void* _aligned(void* buf) noexcept nogil:
    """The first 64-byte boundary in a _scratch buffer (free the buffer)."""
    return <void*> ((<size_t> buf + 63) // 64 * 64)


# ---------------------------------------------------------------------------
# The plan of one call: how it shares the threads, whether it gathers
# images into one GEMM, and the scratch that follows from those choices.
# _plan decides and sizes; the drivers allocate and run exactly what it
# says, and scratch_bytes (convcore's memory check) reads the same plan.

cdef enum:
    # OpenBLAS's AVX-512 kernels (SkylakeX and later) multiply a product of
    # at most SMALL_GEMM_MACS multiply-adds with an unpacked small-matrix
    # kernel (interface/gemm.c, *_small_matrix_permit), which beats packing
    # a thin weight matrix's operands. Pieces are whole GEMM_COL_STEP-float
    # vectors of output columns; past MAX_SMALL_GEMM_CHANNELS output
    # channels per group (a ResNet 1x1 64->256) the packed GEMM is faster.
    # float64's 8-wide small kernel wins or loses by turns, so float64
    # keeps whole GEMMs.
    SMALL_GEMM_MACS = 1000000
    GEMM_COL_STEP = 16
    MAX_SMALL_GEMM_CHANNELS = 192
    # Pieces narrower than this (one vector of columns: AlexNet's 11x11
    # conv1, a 3x3 over 48-64 channels into 96) lost to whole GEMMs by
    # 1.15-1.26x; from two vectors up they won or tied (commit body).
    MIN_PIECE_COLUMNS = 32
    # Batch 1: stripes of output rows over the threads, each im2col'd and
    # multiplied on its own thread, when the output has at least this many
    # pixels per output channel; thinner outputs (big weights, small
    # images) split each GEMM over the threads by rows instead.
    STRIPE_MIN_RATIO = 1
    # Whole-GEMM stripes of fewer columns lost to the split GEMM on VGG's
    # 256-512-channel layers (packing the weights per stripe).
    STRIPE_MIN_COLUMNS = 512
    # Forward and backward-data gather images into one GEMM for small
    # images (OH*OW <= GATHER_MAX_PIXELS) under big weights (K/groups >=
    # GATHER_MIN_CHANNELS), where a GEMM per image is too thin; 64 channels
    # or 28x28 images lost to a GEMM per image (commit bodies).
    GATHER_MIN_CHANNELS = 128
    GATHER_MAX_PIXELS = 196
    # From 8x8 outputs a GEMM per image won again on a Zen 4 machine
    # (commit body), repacking the weights per image, as long as they are
    # at most this big (a 3x3 512->512 layer's still gather).
    PER_IMAGE_MIN_PIXELS = 64
    PER_IMAGE_MAX_WEIGHT_BYTES = 4 << 20


cdef struct GemmPlan:
    int threads               # OpenMP threads of the call
    bint batch_parallel       # a prange over items, each GEMM on one thread;
                              # else items in turn, each GEMM split over the threads
    Py_ssize_t gemm_cols      # forward GEMM piece width: 0 whole GEMMs, SPLIT_GEMM
                              # (items in turn) big stripes
    Py_ssize_t stripe_rows    # forward, too few items for the threads: > 0, a
                              # prange over stripes of this many output rows, each
                              # stripe's im2col and GEMM on one thread
    bint gather_images        # forward / backward-data: one GEMM per batch of images
    bint gather_weight_grad   # weight gradient: one GEMM per batch of images
    Py_ssize_t images         # images per gathered GEMM
    Py_ssize_t buffers        # per-image column buffers (threads, 1, or 0: none run)
    Py_ssize_t column         # elements of each
    Py_ssize_t partials       # elements of the per-image weight-gradient partials


cdef inline Py_ssize_t _piece_columns(const ConvParams* p, bint single,
                                      bint small_gemm_blas) noexcept nogil:
    """Output columns per forward GEMM piece (0: whole GEMMs): the most
    whole vectors that keep a piece within the small-matrix kernel, for thin
    float32 weights on a BLAS that has that kernel. A piece wider than two
    images puts several images side by side (_images_per_gemm)."""
    cdef Py_ssize_t Kg = p.K // p.groups, CRS = (p.C // p.groups) * p.R * p.S
    cdef Py_ssize_t cols
    if not single or not small_gemm_blas or Kg > MAX_SMALL_GEMM_CHANNELS:
        return 0
    cols = SMALL_GEMM_MACS // (Kg * CRS) // GEMM_COL_STEP * GEMM_COL_STEP
    return cols if cols >= MIN_PIECE_COLUMNS else 0


cdef Py_ssize_t _balanced_stripe_rows(const ConvParams* p, Py_ssize_t gemm_cols,
                                      int threads) noexcept nogil:
    """Output rows per stripe of the stripe plan: the column budget's, but
    whole GEMMs take at least STRIPE_MIN_COLUMNS columns (each packs the
    weights again) within the split plan's budget; then as many stripes,
    rounded up to a multiple of the threads, of near-equal height (four
    stripes of 18, 18, 18 and 2 rows kept one thread idle for a quarter
    of the call)."""
    cdef Py_ssize_t rows = _stripe_rows(p, gemm_cols), stripes
    if gemm_cols == 0:
        rows = max(rows, min((STRIPE_MIN_COLUMNS + p.OW - 1) // p.OW,
                             _stripe_rows(p, SPLIT_GEMM)))
    rows = min(rows, (p.OH + threads - 1) // threads)
    stripes = (p.OH + rows - 1) // rows
    stripes = (stripes + threads - 1) // threads * threads
    return (p.OH + stripes - 1) // stripes


cdef GemmPlan _plan(const ConvParams* p, int threads, bint backward, bint need_x,
                    bint need_w, bint single, bint small_gemm_blas,
                    Py_ssize_t gather_budget) noexcept nogil:
    """The plan of a forward call (backward False: need_x/need_w unused) or
    of a backward call for the gradients asked for. single: float32.
    gather_budget: GATHER_BUDGET_ELEMENTS."""
    cdef GemmPlan q
    cdef Py_ssize_t Kg = p.K // p.groups, P = p.OH * p.OW
    cdef Py_ssize_t CRS = (p.C // p.groups) * p.R * p.S
    # Independent items: (image, group) pairs forward, the fixed image
    # chunks of the weight-gradient partials backward.
    cdef Py_ssize_t chunks = min(p.N, <Py_ssize_t> NUM_PARTIALS)
    q.threads = threads
    # Enough items: a prange over them. Too few (batch 1): one at a time,
    # its im2col and GEMMs split over the threads. The BLAS always runs on
    # one thread (the caller holds it there).
    q.batch_parallel = (chunks if backward else p.N * p.groups) >= threads
    q.gather_images = (p.N >= 2 and Kg >= GATHER_MIN_CHANNELS and P <= GATHER_MAX_PIXELS
                       and (P < PER_IMAGE_MIN_PIXELS
                            or p.K * CRS * (4 if single else 8) > PER_IMAGE_MAX_WEIGHT_BYTES)
                       and (need_x or not backward))
    # One GEMM over many images rather than per-image GEMMs into min(N, 8)
    # partial copies of the weights, when those copies would outnumber the
    # output pixels they sum over (many channels, small images).
    q.gather_weight_grad = backward and need_w and chunks * Kg > p.N * P
    q.gemm_cols = _piece_columns(p, single, small_gemm_blas)
    q.stripe_rows = 0
    if not backward and not q.batch_parallel and threads > 1 and P > 0 and P >= STRIPE_MIN_RATIO * Kg:
        if _is_pointwise(p):
            # Pieces would read the input itself, rows OH*OW apart: whole
            # GEMMs per stripe were 1.0-1.3x faster (1x1 256->64 at 56x56).
            q.gemm_cols = 0
        q.stripe_rows = _balanced_stripe_rows(p, q.gemm_cols, threads)
    _size(p, &q, backward, need_x, need_w, gather_budget)
    return q


cdef void _size(const ConvParams* p, GemmPlan* q, bint backward, bint need_x,
                bint need_w, Py_ssize_t gather_budget) noexcept nogil:
    """The scratch fields of q from its decisions; gemm_cols set to what
    the drivers run when it is not the forward's choice: big stripes for
    items in turn (their GEMMs split), whole GEMMs for the backward's."""
    cdef Py_ssize_t Kg = p.K // p.groups, CRS = (p.C // p.groups) * p.R * p.S
    cdef Py_ssize_t P = p.OH * p.OW
    cdef bint per_image, per_image_w = backward and need_w and not q.gather_weight_grad
    if backward:
        per_image = (need_x and not q.gather_images) or per_image_w
    else:
        per_image = not q.gather_images
    cdef bint stripes = not backward and not q.batch_parallel and q.stripe_rows > 0
    if not stripes:
        q.stripe_rows = 0
    if backward and q.batch_parallel:
        q.gemm_cols = 0
    if not q.batch_parallel and not stripes:
        q.gemm_cols = SPLIT_GEMM
    q.images = max(1, min(p.N, gather_budget // max(1, P * (CRS + Kg))))
    q.buffers = (q.threads if q.batch_parallel or stripes else 1) if per_image else 0
    if stripes:
        q.column = _stripe_column_size(p, q.stripe_rows, q.gemm_cols)
    else:
        q.column = _column_size_for(p, q.gemm_cols) if per_image else 0
    q.partials = min(p.N, <Py_ssize_t> NUM_PARTIALS) * p.K * CRS if per_image_w else 0


cdef inline Py_ssize_t _gathered_elements(Py_ssize_t images, Py_ssize_t P, Py_ssize_t CRS,
                                          Py_ssize_t Kg) noexcept nogil:
    """The gathered GEMMs' scratch: the columns (CRS, images*P) and the
    (Kg, images*P) rows of grad_y or y."""
    return images * P * (CRS + Kg)


cdef Py_ssize_t _scratch_elements(const ConvParams* p, const GemmPlan* q) noexcept nogil:
    """Elements the call allocates at most: the per-image buffers and
    partials, or, when a gathered GEMM runs (after them, once they are
    freed), its columns and rows."""
    cdef Py_ssize_t Kg = p.K // p.groups, CRS = (p.C // p.groups) * p.R * p.S
    cdef Py_ssize_t elements = q.buffers * q.column + q.partials
    if q.gather_images or q.gather_weight_grad:
        elements = max(elements, _gathered_elements(q.images, p.OH * p.OW, CRS, Kg))
    return elements


cdef GemmPlan _plan_or(dict plan, const ConvParams* p, int threads, bint backward,
                       bint need_x, bint need_w, bint single,
                       bint small_gemm_blas) except *:
    """_plan, or the decisions of `plan` (a dict as plan() returns; tests
    reach every path with it) with the scratch sized here again."""
    cdef GemmPlan q
    cdef Py_ssize_t gather_budget = GATHER_BUDGET_ELEMENTS
    if plan is None:
        return _plan(p, threads, backward, need_x, need_w, single, small_gemm_blas,
                     gather_budget)
    q = plan
    q.threads = threads
    _size(p, &q, backward, need_x, need_w, gather_budget)
    return q


def plan(ConvGeometry geom, int num_threads, bint backward, Py_ssize_t itemsize,
         bint small_gemm_blas=False, bint need_x=True, bint need_w=True):
    """The plan of a call as a dict (GemmPlan's fields): what forward or
    backward with these arguments will do. small_gemm_blas: the loaded
    BLAS has OpenBLAS's small-matrix kernel (convcore.algorithms knows)."""
    return _plan(&geom.params, num_threads, backward, need_x, need_w, itemsize == 4,
                 small_gemm_blas, GATHER_BUDGET_ELEMENTS)


def scratch_bytes(ConvGeometry geom, int num_threads, bint backward,
                  Py_ssize_t itemsize, bint small_gemm_blas=False):
    """Bytes that one forward (or backward with both gradients) call with
    these arguments allocates at most (plus up to 64 bytes of alignment)."""
    cdef GemmPlan q = _plan(&geom.params, num_threads, backward, True, True,
                            itemsize == 4, small_gemm_blas, GATHER_BUDGET_ELEMENTS)
    return _scratch_elements(&geom.params, &q) * itemsize


# ---------------------------------------------------------------------------
# Drivers, called by convcore.algorithms after every check of
# convcore.functional; geom: the call's ConvGeometry (ConvSpec.params).

def forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
            const floating[::1] bias, floating[:, :, :, ::1] y,
            ConvGeometry geom, int num_threads, bint small_gemm_blas=False,
            dict plan=None):
    """y = conv(x, w) + bias (bias of size K, or size 0 for none), as
    _plan decides (or as `plan` says: see _plan_or).              OUT: y"""
    cdef const ConvParams* p = &geom.params
    cdef GemmPlan q
    check_shapes(p, x.shape, w.shape, y.shape)
    q = _plan_or(plan, p, num_threads, False, True, False, floating is float,
                 small_gemm_blas)
    if q.gather_images:
        _forward_gathered(x, w, bias, y, p, &q)
    else:
        _forward_items(x, w, bias, y, p, &q)


cdef int _forward_items(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                        const floating[::1] bias, floating[:, :, :, ::1] y,
                        const ConvParams* p, const GemmPlan* q) except -1:
    """y, a GEMM (or pieces of one) per item."""
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t gemm_cols = q.gemm_cols
    cdef int num_threads = q.threads
    cdef Py_ssize_t nb = _images_per_gemm(p, gemm_cols) if q.batch_parallel else 1
    cdef Py_ssize_t blocks = (p.N + nb - 1) // nb
    cdef Py_ssize_t items = blocks * p.groups, item, n0, task, oh0
    cdef Py_ssize_t stripes = (p.OH + q.stripe_rows - 1) // q.stripe_rows if q.stripe_rows > 0 else 0
    cdef Py_ssize_t colsize = q.column
    cdef void* buf = _scratch(q.buffers, colsize, sizeof(floating))
    cdef floating* scratch = <floating*> _aligned(buf)  # colsize: whole 64-byte lines
    try:
        with nogil:
            if q.batch_parallel and nb > 1:
                for item in prange(items, schedule='static', num_threads=num_threads):
                    n0 = (item // p.groups) * nb
                    _forward_images(&x[0, 0, 0, 0], &w[0, 0, 0, 0], b, &y[0, 0, 0, 0],
                                    p, n0, min(n0 + nb, p.N), item % p.groups,
                                    scratch + omp_get_thread_num() * colsize, gemm_cols)
            elif q.stripe_rows > 0:
                for task in prange(items * stripes, schedule='static', num_threads=num_threads):
                    oh0 = (task % stripes) * q.stripe_rows
                    _forward_rows(&x[0, 0, 0, 0], &w[0, 0, 0, 0], b, &y[0, 0, 0, 0], p,
                                  task // stripes, oh0, min(oh0 + q.stripe_rows, p.OH),
                                  scratch + omp_get_thread_num() * colsize, gemm_cols,
                                  False, 1)
            elif q.batch_parallel:
                for item in prange(items, schedule='static', num_threads=num_threads):
                    _forward_item_cols(&x[0, 0, 0, 0], &w[0, 0, 0, 0], b, &y[0, 0, 0, 0],
                                       p, item, scratch + omp_get_thread_num() * colsize,
                                       False, 1, gemm_cols)
            else:
                for item in range(items):
                    _forward_item_cols(&x[0, 0, 0, 0], &w[0, 0, 0, 0], b, &y[0, 0, 0, 0],
                                       p, item, scratch, num_threads > 1, num_threads,
                                       SPLIT_GEMM)
    finally:
        _release_scratch(buf, q.buffers, colsize, sizeof(floating))
    return 0


cdef enum:
    SUM_BLOCK = 16


cdef void _sum_transposed_partials(const floating* partials, Py_ssize_t nchunks,
                                   Py_ssize_t wsize, Py_ssize_t Kg, Py_ssize_t CRS,
                                   Py_ssize_t g, Py_ssize_t i0,
                                   floating* gw) noexcept nogil:
    """gw[(g*Kg + k)*CRS + i] = sum over chunks c, in order, of
    partials[c*wsize + (g*CRS + i)*Kg + k], for rows i0..i0+SUM_BLOCK (of
    CRS) and every k: SUM_BLOCK * nchunks read streams, all moving along
    k together."""
    cdef Py_ssize_t i1 = min(i0 + <Py_ssize_t> SUM_BLOCK, CRS), k, i, c
    cdef floating acc
    for k in range(Kg):
        for i in range(i0, i1):
            acc = 0
            for c in range(nchunks):
                acc = acc + partials[c * wsize + (g * CRS + i) * Kg + k]
            gw[(g * Kg + k) * CRS + i] = acc


def backward(const floating[:, :, :, ::1] grad_y,
             const floating[:, :, :, ::1] x,
             const floating[:, :, :, ::1] w,
             floating[:, :, :, ::1] grad_x, floating[:, :, :, ::1] grad_w,
             bint need_x, bint need_w, ConvGeometry geom, int num_threads,
             dict plan=None):
    """grad_x (N, C, H, W) and grad_w (K, C/groups, R, S), each overwritten
    when its need_ flag is set (the other array is then not touched), as
    _plan decides (or as `plan` says: see _plan_or).  OUT: grad_x, grad_w"""
    cdef const ConvParams* p = &geom.params
    cdef GemmPlan q
    cdef bint need_x_gathered, need_w_gathered
    check_shapes(p, x.shape, w.shape, grad_y.shape)
    if need_x:
        check_shapes(p, grad_x.shape, w.shape, grad_y.shape)
    if need_w:
        check_shapes(p, x.shape, grad_w.shape, grad_y.shape)
    q = _plan_or(plan, p, num_threads, True, need_x, need_w, floating is float, False)
    need_x_gathered = need_x and q.gather_images
    need_w_gathered = need_w and q.gather_weight_grad
    if (need_x and not need_x_gathered) or (need_w and not need_w_gathered):
        _backward_items(grad_y, x, w, grad_x, grad_w, need_x and not need_x_gathered,
                        need_w and not need_w_gathered, p, &q)
    if need_x_gathered:
        _backward_data_gathered(grad_y, w, grad_x, p, &q)
    if need_w_gathered:
        _weight_grad_gathered(grad_y, x, grad_w, p, &q)


cdef int _backward_items(const floating[:, :, :, ::1] grad_y,
                         const floating[:, :, :, ::1] x,
                         const floating[:, :, :, ::1] w,
                         floating[:, :, :, ::1] grad_x, floating[:, :, :, ::1] grad_w,
                         bint need_x, bint need_w, const ConvParams* p,
                         const GemmPlan* q) except -1:
    """grad_x and/or grad_w, GEMMs per image and group; the weight gradient
    summed in fixed image chunks."""
    cdef Py_ssize_t N = p.N, G = p.groups
    cdef int num_threads = q.threads
    cdef Py_ssize_t nchunks = min(N, NUM_PARTIALS)
    cdef Py_ssize_t wsize = w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
    cdef Py_ssize_t colsize = q.column
    cdef Py_ssize_t Kg = p.K // G, CRS = wsize // p.K if p.K > 0 else 0
    cdef Py_ssize_t chunk, n, g, ib
    # Transposed partials (_backward_item_t) in float32, where they win
    # 1.05-1.5x; float64's GEMMs gain nothing from it above LeNet's size
    # (2-4% slower at 64-128 channels, 10% on a 1x1 256->64 layer).
    cdef bint wt_t = floating is float
    cdef floating* gx = &grad_x[0, 0, 0, 0] if need_x else NULL
    cdef floating* gw = &grad_w[0, 0, 0, 0] if need_w else NULL
    cdef floating* partials = NULL
    cdef floating* part
    cdef floating* col
    cdef floating* scratch
    if N == 0:
        return 0
    if need_w:
        # Separate partials even for one chunk (they may be transposed).
        # Not calloc, zeroed below by a write: calloc's pages come mapped to
        # the shared zero page, so the GEMM's first read-then-write of each
        # page is a copy-on-write fault with a TLB shootdown across the
        # threads (measured: 512-channel 7x7 weight gradient at batch 8, 2 threads,
        # 169 -> 55 ms).
        partials = <floating*> take(q.partials * sizeof(floating))
    try:
        scratch = <floating*> _scratch(q.buffers, colsize, sizeof(floating))
    except MemoryError:
        give(partials, q.partials * sizeof(floating))
        raise
    try:
        with nogil:
            if q.batch_parallel:
                for chunk in prange(nchunks, schedule='static', num_threads=num_threads):
                    col = scratch + omp_get_thread_num() * colsize
                    part = partials + chunk * wsize if need_w else NULL
                    if need_w:
                        memset(part, 0, wsize * sizeof(floating))
                    for n in range(chunk * N // nchunks, (chunk + 1) * N // nchunks):
                        for g in range(G):
                            _backward_item_t(&grad_y[0, 0, 0, 0], &x[0, 0, 0, 0],
                                             &w[0, 0, 0, 0], gx, part, p, n, g,
                                             col, False, 1, wt_t)
            else:
                for chunk in range(nchunks):
                    part = partials + chunk * wsize if need_w else NULL
                    if need_w:
                        memset(part, 0, wsize * sizeof(floating))
                    for n in range(chunk * N // nchunks, (chunk + 1) * N // nchunks):
                        for g in range(G):
                            _backward_item_t(&grad_y[0, 0, 0, 0], &x[0, 0, 0, 0],
                                             &w[0, 0, 0, 0], gx, part, p, n, g,
                                             scratch, True, num_threads, wt_t)
            if need_w and wt_t:
                # Sum the chunk partials in chunk order (deterministic),
                # transposing each group's (CRS, Kg) back to (Kg, CRS) in
                # blocks of SUM_BLOCK rows, so that the reads go along the
                # partials' rows (a row of gw at a time read them Kg apart:
                # 10x slower at 512 channels).
                for ib in prange(G * ((CRS + SUM_BLOCK - 1) // SUM_BLOCK), schedule='static',
                                 num_threads=num_threads):
                    _sum_transposed_partials(partials, nchunks, wsize, Kg, CRS,
                                             ib // ((CRS + SUM_BLOCK - 1) // SUM_BLOCK),
                                             (ib % ((CRS + SUM_BLOCK - 1) // SUM_BLOCK)) * SUM_BLOCK,
                                             gw)
            elif need_w:
                sum_partials(partials, nchunks, wsize, gw, num_threads)
    finally:
        _release_scratch(scratch, q.buffers, colsize, sizeof(floating))
        give(partials, q.partials * sizeof(floating))
    return 0


cdef inline void _image_columns(const floating* x, floating* col, const ConvParams* p,
                                Py_ssize_t g, Py_ssize_t n, Py_ssize_t n0,
                                Py_ssize_t m) noexcept nogil:
    """Image n's columns (group g) at column (n - n0) * OH*OW of col (row
    stride m): a batch of images gathered side by side from image n0."""
    cdef Py_ssize_t Cg = p.C // p.groups
    im2col(x + (n * p.C + g * Cg) * p.H * p.W, col + (n - n0) * p.OH * p.OW, m, p, 0, Cg)


cdef inline void _image_rows(const floating* grad_y, floating* rows, const ConvParams* p,
                             Py_ssize_t g, Py_ssize_t n, Py_ssize_t n0,
                             Py_ssize_t m) noexcept nogil:
    """Image n's rows of grad_y (group g's Kg planes) at column
    (n - n0) * OH*OW of rows (Kg, row stride m)."""
    cdef Py_ssize_t Kg = p.K // p.groups, P = p.OH * p.OW, k
    for k in range(Kg):
        memcpy(rows + k * m + (n - n0) * P, grad_y + (n * p.K + g * Kg + k) * P,
               P * sizeof(floating))


cdef inline int _image_shares(Py_ssize_t images, Py_ssize_t macs,
                              int num_threads) noexcept nogil:
    """Threads that a gathered GEMM of `macs` multiply-adds over `images`
    images runs on, each taking whole images: its columns (or rows) copied,
    its slab of columns multiplied and its outputs written back, all in one
    parallel region (the copies and the GEMM in separate regions woke the
    other threads three times a call). At least SLAB_MACS a thread, as
    gemm_split's slabs: a column cut then sums every element alike."""
    return <int> max(1, min(<Py_ssize_t> num_threads, images, macs // SLAB_MACS))


cdef int _weight_grad_gathered(const floating[:, :, :, ::1] grad_y,
                               const floating[:, :, :, ::1] x,
                               floating[:, :, :, ::1] grad_w, const ConvParams* p,
                               const GemmPlan* q) except -1:
    """grad_w (K, C/groups, R, S), overwritten, without per-image partials:
    for each group, gw (Kg, CRS) = sum over image batches of
    GY (Kg, m) @ COL^T (m, CRS), COL the batch's columns side by side and
    GY its grad_y rows (m = images * OH*OW, q.images of them). For
    layers whose weights outnumber their output pixels (many channels,
    small images) the partials were most of the time. One GEMM at a time,
    split over the threads (gemm_split), after each image's columns and
    rows are copied in one prange over the images. Every element sums the
    same products in the same order at any thread count (the BLAS splits
    the output, not the sums).                                 OUT: grad_w"""
    cdef Py_ssize_t N = p.N, G = p.groups, Cg = p.C // p.groups, Kg = p.K // p.groups
    cdef Py_ssize_t P = p.OH * p.OW, CRS = Cg * p.R * p.S
    cdef Py_ssize_t images = q.images
    cdef int num_threads = q.threads
    cdef Py_ssize_t g, b, n0, n1, n, m
    cdef floating* col
    cdef size_t col_bytes
    cdef floating* gyt
    cdef floating* gw = &grad_w[0, 0, 0, 0]
    if P == 0 or N == 0:
        memset(gw, 0, p.K * CRS * sizeof(floating))
        return 0
    col_bytes = _gathered_elements(images, P, CRS, Kg) * sizeof(floating)
    col = <floating*> take(col_bytes)
    gyt = col + images * P * CRS
    try:
        with nogil:
            for g in range(G):
                for b in range((N + images - 1) // images):
                    n0 = b * images
                    n1 = min(n0 + images, N)
                    m = (n1 - n0) * P
                    # columns and rows of each image in one region
                    for n in prange(n0, n1, schedule='static', num_threads=num_threads):
                        _image_columns(&x[0, 0, 0, 0], col, p, g, n, n0, m)
                        _image_rows(&grad_y[0, 0, 0, 0], gyt, p, g, n, n0, m)
                    gemm_split(False, True, <int> Kg, <int> CRS, <int> m, <floating> 1,
                               gyt, <int> m, col, <int> m, <floating> (0 if b == 0 else 1),
                               gw + g * Kg * CRS, <int> CRS, num_threads)
    finally:
        give(col, col_bytes)
    return 0


cdef int _forward_gathered(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                           const floating[::1] bias, floating[:, :, :, ::1] y,
                           const ConvParams* p, const GemmPlan* q) except -1:
    """y = conv(x, w) + bias as one GEMM per group over a batch of images
    (q.images of them): Y (Kg, m) = W[g] (Kg, CRS) @ COL (CRS, m),
    COL the batch's columns side by side (m = images * OH*OW), then Y's
    rows go to NCHW. For small images under big weights, where a GEMM per
    image is only OH*OW columns wide. Each thread takes whole images
    (_image_shares): their columns, their slab of the GEMM's columns and
    their outputs, in one parallel region.                        OUT: y"""
    cdef Py_ssize_t N = p.N, G = p.groups, Cg = p.C // p.groups, Kg = p.K // p.groups
    cdef Py_ssize_t P = p.OH * p.OW, CRS = Cg * p.R * p.S
    cdef Py_ssize_t images = q.images
    cdef Py_ssize_t g, b, n0, n1, m, share, i0, i1
    cdef int shares
    cdef const floating* bs = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* col
    cdef size_t col_bytes
    cdef floating* prod
    if P == 0 or N == 0:
        return 0
    col_bytes = _gathered_elements(images, P, CRS, Kg) * sizeof(floating)
    col = <floating*> take(col_bytes)
    prod = col + images * P * CRS
    try:
        with nogil:
            for g in range(G):
                for b in range((N + images - 1) // images):
                    n0 = b * images
                    n1 = min(n0 + images, N)
                    m = (n1 - n0) * P
                    shares = _image_shares(n1 - n0, Kg * m * CRS, q.threads)
                    for share in prange(shares, schedule='static', num_threads=shares):
                        i0 = n0 + share * (n1 - n0) // shares
                        i1 = n0 + (share + 1) * (n1 - n0) // shares
                        _forward_share(&x[0, 0, 0, 0], &w[0, 0, 0, 0] + g * Kg * CRS, bs,
                                       &y[0, 0, 0, 0], p, g, n0, i0, i1, m, col, prod)
    finally:
        give(col, col_bytes)
    return 0


cdef void _forward_share(const floating* x, const floating* wg, const floating* bias,
                         floating* y, const ConvParams* p, Py_ssize_t g, Py_ssize_t n0,
                         Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t m, floating* col,
                         floating* prod) noexcept nogil:
    """Images [i0, i1) of a gathered forward batch from n0 (m columns in
    all): their columns, Y's columns of them = W[g] @ COL's, then y."""
    cdef Py_ssize_t Cg = p.C // p.groups, Kg = p.K // p.groups
    cdef Py_ssize_t P = p.OH * p.OW, CRS = Cg * p.R * p.S, n, k, j
    cdef floating bk
    cdef floating* yk
    cdef const floating* row
    for n in range(i0, i1):
        _image_columns(x, col, p, g, n, n0, m)
    gemm(False, False, <int> Kg, <int> ((i1 - i0) * P), <int> CRS, <floating> 1,
         wg, <int> CRS, col + (i0 - n0) * P, <int> m, <floating> 0,
         prod + (i0 - n0) * P, <int> m)
    for n in range(i0, i1):
        for k in range(Kg):
            yk = y + (n * p.K + g * Kg + k) * P
            row = prod + k * m + (n - n0) * P
            bk = bias[g * Kg + k] if bias != NULL else 0
            for j in range(P):
                yk[j] = row[j] + bk


cdef int _backward_data_gathered(const floating[:, :, :, ::1] grad_y,
                                 const floating[:, :, :, ::1] w,
                                 floating[:, :, :, ::1] grad_x, const ConvParams* p,
                                 const GemmPlan* q) except -1:
    """grad_x (N, C, H, W), overwritten, as one GEMM per group over a batch
    of images (q.images of them): DCOL (CRS, m) = W[g]^T (CRS, Kg)
    @ GY (Kg, m), GY the batch's grad_y rows side by side (m = images *
    OH*OW), then col2im of each image's columns. The adjoint of
    forward_gathered, for the same layers (small images under big weights,
    where a GEMM per image is only OH*OW columns wide). Each thread takes
    whole images (_image_shares): their rows, their slab of the GEMM's
    columns and their col2im, in one parallel region.           OUT: grad_x"""
    cdef Py_ssize_t N = p.N, G = p.groups, Cg = p.C // p.groups, Kg = p.K // p.groups
    cdef Py_ssize_t P = p.OH * p.OW, CRS = Cg * p.R * p.S, HW = p.H * p.W
    cdef Py_ssize_t images = q.images
    cdef Py_ssize_t g, b, n0, n1, m, share, i0, i1
    cdef int shares
    cdef floating* col
    cdef size_t col_bytes
    cdef floating* gyt
    cdef floating* gx = &grad_x[0, 0, 0, 0]
    if N == 0:
        return 0
    if P == 0:
        memset(gx, 0, N * p.C * HW * sizeof(floating))
        return 0
    col_bytes = _gathered_elements(images, P, CRS, Kg) * sizeof(floating)
    col = <floating*> take(col_bytes)
    gyt = col + images * P * CRS
    try:
        with nogil:
            for g in range(G):
                for b in range((N + images - 1) // images):
                    n0 = b * images
                    n1 = min(n0 + images, N)
                    m = (n1 - n0) * P
                    shares = _image_shares(n1 - n0, CRS * m * Kg, q.threads)
                    for share in prange(shares, schedule='static', num_threads=shares):
                        i0 = n0 + share * (n1 - n0) // shares
                        i1 = n0 + (share + 1) * (n1 - n0) // shares
                        _backward_data_share(&grad_y[0, 0, 0, 0],
                                             &w[0, 0, 0, 0] + g * Kg * CRS, gx, p, g,
                                             n0, i0, i1, m, gyt, col)
    finally:
        give(col, col_bytes)
    return 0


cdef void _backward_data_share(const floating* grad_y, const floating* wg, floating* gx,
                               const ConvParams* p, Py_ssize_t g, Py_ssize_t n0,
                               Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t m,
                               floating* gyt, floating* col) noexcept nogil:
    """Images [i0, i1) of a gathered backward-data batch from n0 (m columns
    in all): their grad_y rows, DCOL's columns of them = W[g]^T @ GY's,
    then col2im into grad_x."""
    cdef Py_ssize_t Cg = p.C // p.groups, Kg = p.K // p.groups
    cdef Py_ssize_t P = p.OH * p.OW, CRS = Cg * p.R * p.S, HW = p.H * p.W, n
    for n in range(i0, i1):
        _image_rows(grad_y, gyt, p, g, n, n0, m)
    gemm(True, False, <int> CRS, <int> ((i1 - i0) * P), <int> Kg, <floating> 1,
         wg, <int> CRS, gyt + (i0 - n0) * P, <int> m, <floating> 0,
         col + (i0 - n0) * P, <int> m)
    for n in range(i0, i1):
        memset(gx + (n * p.C + g * Cg) * HW, 0, Cg * HW * sizeof(floating))
        col2im_ld(col + (n - n0) * P, m, gx + (n * p.C + g * Cg) * HW, p, 0, Cg)
