"""Direct convolution: no column buffer.

The generic kernels (any stride and dilation, float64, the native API):
each worker owns a disjoint slice of its output (one output plane, one
input plane, or one filter), so prange needs no reduction and the result
does not depend on the thread count. Inner loops run along an output row
over the taps that read real data (valid_range), so they hold no bounds
test and the compiler vectorises them. No scratch but the weight
gradient's row sums.

float32 at stride 1, undilated: the register-blocked kernels of
direct_block.h, with a zero-padded copy of an image per thread and the
weights packed per call (scratch_bytes counts both).

float32 on small images (_cvec): the forward at any stride and dilation,
and backward-data at stride 1, run direct_cvec.h's kernel instead, vectors
along the output channels and tiles across images, which skips the taps
that read padding; the input copied image-minor and the weights packed per
call.
"""
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from convcore._kernels.buffer_cache cimport give, take
from convcore._kernels._openmp cimport omp_get_thread_num
from convcore._kernels.conv_geometry cimport ConvGeometry, check_shapes
from convcore._kernels.conv_params cimport ConvParams, valid_range
from convcore._kernels.finite cimport all_finite
from convcore._kernels._simd cimport (
    convcore_daxpy, convcore_dmuladd, convcore_dsum, convcore_saxpy,
    convcore_smuladd, convcore_ssum)

cdef extern from "convcore/_kernels/direct_block.h":
    ctypedef struct convcore_dblock:
        Py_ssize_t C, K, R, S, OH, OW, Hp, Wp
    ctypedef void (*convcore_dblock_fn)(const float* xp, const float* wpk, const float* bias,
                                        float* y, Py_ssize_t ypitch,
                                        const convcore_dblock* d, Py_ssize_t kb0,
                                        Py_ssize_t kb1) noexcept nogil
    ctypedef void (*convcore_dblock_wgrad_fn)(const float* xp, const float* gyp, Py_ssize_t C,
                                              Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t OH,
                                              Py_ssize_t OWv, const Py_ssize_t* toff,
                                              Py_ssize_t chunks, float* accv) noexcept nogil
    ctypedef struct convcore_dblock_kernel:
        convcore_dblock_fn run
        Py_ssize_t VL, KB
        convcore_dblock_wgrad_fn wgrad
        Py_ssize_t KBW
    enum: CONVCORE_DBLOCK_TT
    convcore_dblock_kernel convcore_dblock_instance(int which) noexcept nogil
    int convcore_dblock_best() noexcept nogil
    Py_ssize_t convcore_dblock_width(Py_ssize_t OW, Py_ssize_t S, Py_ssize_t VL) noexcept nogil
    void convcore_dblock_fill(const float* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t pad_h, Py_ssize_t pad_w, float* xp, Py_ssize_t Hp,
                              Py_ssize_t Wp) noexcept nogil
    void convcore_dblock_pack(const float* w, Py_ssize_t K, Py_ssize_t C, Py_ssize_t R,
                              Py_ssize_t S, Py_ssize_t KB, int flip, float* wpk) noexcept nogil


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


cdef extern from "convcore/_kernels/direct_cvec.h":
    ctypedef struct convcore_cvec:
        Py_ssize_t C, K, H, W, OH, OW, R, S
        Py_ssize_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, N, Np
    ctypedef void (*convcore_cvec_fn)(const float* x2, const float* wpk, const float* bias,
                                      float* y, const convcore_cvec* d, Py_ssize_t kb,
                                      Py_ssize_t pos, Py_ssize_t n_begin,
                                      Py_ssize_t n_end) noexcept nogil
    ctypedef struct convcore_cvec_kernel:
        convcore_cvec_fn run
        Py_ssize_t KB, NP
    convcore_cvec_kernel convcore_cvec_instance(int which) noexcept nogil
    convcore_cvec_kernel convcore_cvec_narrow_instance(int which) noexcept nogil
    void convcore_cvec_pack_input(const float* x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t P,
                                  Py_ssize_t Np, Py_ssize_t c0, Py_ssize_t c1,
                                  float* x2) noexcept nogil
    void convcore_cvec_pack_weights(const float* w, Py_ssize_t K, Py_ssize_t C,
                                    Py_ssize_t taps, Py_ssize_t KB, int flip, Py_ssize_t kb0,
                                    Py_ssize_t kb1, float* wpk) noexcept nogil


# ---- Register-blocked kernels (direct_block.h) -------------------------------
# Float32 at stride 1, undilated: the forward, backward-data as the forward
# of grad_y with the flipped kernel (padding R-1-pad, S-1-pad), and the
# weight gradient.

cdef convcore_dblock_kernel _DBLOCK = convcore_dblock_instance(convcore_dblock_best())


cdef inline bint _blocked(const ConvParams* p) noexcept nogil:
    return p.stride_h == 1 and p.stride_w == 1 and p.dil_h == 1 and p.dil_w == 1


cdef inline convcore_dblock _dblock(const ConvParams* q) noexcept nogil:
    cdef convcore_dblock d
    d.C, d.K = q.C // q.groups, q.K // q.groups
    d.R, d.S, d.OH, d.OW = q.R, q.S, q.OH, q.OW
    d.Hp = q.OH + q.R - 1
    d.Wp = convcore_dblock_width(q.OW, q.S, _DBLOCK.VL)
    return d


cdef inline Py_ssize_t _blocked_plane(const ConvParams* q) noexcept nogil:
    """Elements of one thread's padded input planes (one image and group)."""
    cdef convcore_dblock d = _dblock(q)
    return d.C * d.Hp * d.Wp


cdef inline Py_ssize_t _blocked_weights(const ConvParams* q) noexcept nogil:
    """Elements of the packed weights of every group."""
    cdef convcore_dblock d = _dblock(q)
    return q.groups * (d.K + _DBLOCK.KB - 1) // _DBLOCK.KB * _DBLOCK.KB * d.C * d.R * d.S


cdef int _blocked_run(const float* x, const float* w, const float* bias, float* y,
                      ConvParams q, bint flip, int num_threads) except -1:
    """y (N, q.K, OH, OW) = conv(x (N, q.C, H, W), w') + bias for a
    stride-1 undilated q, any padding (negative too). w' is w (q.K,
    q.C/groups, R, S), or, with flip, the kernel of backward-data of w
    (q.C, q.K/groups, R, S): its in/out channels swapped per group and
    rotated by 180 degrees. Items are (image, group) pairs, each padded
    once per thread; with fewer of them than threads, each item's blocks
    of output channels are cut into chunks for the threads."""
    cdef convcore_dblock d = _dblock(&q)
    cdef Py_ssize_t G = q.groups, KB = _DBLOCK.KB, taps = q.R * q.S
    cdef Py_ssize_t nkb = (d.K + KB - 1) // KB, wsize = nkb * KB * d.C * taps
    cdef Py_ssize_t plane = _blocked_plane(&q), items = q.N * G
    cdef Py_ssize_t chunks = min(nkb, max(1, (num_threads + items - 1) // items))
    cdef Py_ssize_t task, item, ch, g, tid
    cdef float* wpk
    cdef float* scratch
    cdef Py_ssize_t* padded
    if items == 0 or d.K == 0:
        return 0
    wpk = <float*> malloc(G * wsize * sizeof(float))
    scratch = <float*> malloc(num_threads * plane * sizeof(float))
    padded = <Py_ssize_t*> malloc(num_threads * sizeof(Py_ssize_t))
    try:
        if wpk == NULL or scratch == NULL or padded == NULL:
            raise MemoryError(f"convcore: cannot allocate the direct kernel's {num_threads} x "
                              f"{plane} padded planes and {G * wsize} packed weights")
        with nogil:
            for g in range(G):
                # forward: group g's (Kg, Cg) filters; backward-data: the
                # forward's group g, (q.C/G = d.C) x (q.K/G = d.K), read flipped
                convcore_dblock_pack(w + g * d.K * d.C * taps, d.K, d.C, q.R, q.S, KB,
                                     flip, wpk + g * wsize)
            for tid in range(num_threads):
                padded[tid] = -1
            for task in prange(items * chunks, schedule='static', num_threads=num_threads):
                tid = omp_get_thread_num()
                item = task // chunks
                ch = task % chunks
                g = item % G
                if padded[tid] != item:  # static schedule: a thread's chunks of an item are adjacent
                    if padded[tid] == -1:
                        memset(scratch + tid * plane, 0, plane * sizeof(float))
                    convcore_dblock_fill(x + ((item // G) * q.C + g * d.C) * q.H * q.W, d.C,
                                         q.H, q.W, q.pad_h, q.pad_w, scratch + tid * plane,
                                         d.Hp, d.Wp)
                    padded[tid] = item
                _DBLOCK.run(scratch + tid * plane, wpk + g * wsize,
                            bias + g * d.K if bias != NULL else NULL,
                            y + ((item // G) * q.K + g * d.K) * q.OH * q.OW, q.OH * q.OW, &d,
                            ch * nkb // chunks, (ch + 1) * nkb // chunks)
    finally:
        free(wpk)
        free(scratch)
        free(padded)
    return 0


# ---- Small images, vectors along the output channels (direct_cvec.h) ---------

cdef convcore_cvec_kernel _CVEC = convcore_cvec_instance(convcore_dblock_best())
cdef convcore_cvec_kernel _CVEC_NARROW = convcore_cvec_narrow_instance(convcore_dblock_best())
cdef bint _CVEC_ON = True   # channel_vector_kernel(False): tests reach the other kernels

cdef enum:
    # Against the row-vector kernels (measured on a Zen 4, commit body): at
    # least 8 images, a tile of the AVX-512 instance (fewer leave lanes of
    # every multiply-add empty), channels in and out from 32 on outputs up
    # to 6x6 and from 64 up to 8x8 (fewer fill too little of a block, and
    # 8-pixel rows already fill half of the other kernel's vectors).
    CVEC_MIN_IMAGES = 8
    CVEC_MIN_CHANNELS = 32
    CVEC_MAX_PIXELS = 36
    CVEC_WIDE_MIN_CHANNELS = 64
    CVEC_WIDE_MAX_PIXELS = 64
    # At stride 1, after the kernel's broadcast and scheduling fixes, also
    # against im2col and Winograd (a Xeon, commit body): from 64 channels
    # up to 10x10, from 128 up to 14x14. Strided layers of that size lost
    # (each output reads stride^2 input pixels of the image-minor copy).
    CVEC_UNIT_WIDE_MAX_PIXELS = 100
    CVEC_UNIT_WIDER_MIN_CHANNELS = 128
    CVEC_UNIT_WIDER_MAX_PIXELS = 196
    # The narrow instance (one vector of filters): more than half a vector
    # of filters, batches filling 3/4 of its tiles, outputs up to this many
    # pixels.
    CVEC_NARROW_MAX_PIXELS = 100


cdef inline bint _cvec_narrow(const ConvParams* p) noexcept nogil:
    """Whether p's filters fit the narrow instance's one vector (and fill
    most of it), on images it takes."""
    return (_CVEC_NARROW.run != NULL and 2 * p.K > _CVEC_NARROW.KB
            and p.K <= _CVEC_NARROW.KB and 4 * p.N >= 3 * _CVEC_NARROW.NP
            and p.OH * p.OW <= CVEC_NARROW_MAX_PIXELS)


cdef inline convcore_cvec_kernel _cvec_kernel(const ConvParams* p) noexcept nogil:
    """The instance that runs p: the narrow one where it takes p."""
    return _CVEC_NARROW if _cvec_narrow(p) else _CVEC


cdef inline bint _cvec(const ConvParams* p) noexcept nogil:
    """Whether the float32 forward of p runs the channel-vector kernel."""
    cdef Py_ssize_t channels = min(p.C, p.K), P = p.OH * p.OW
    cdef bint unit = p.stride_h == 1 and p.stride_w == 1
    if not _CVEC_ON or p.groups != 1:
        return False
    if _cvec_narrow(p):
        return True
    return (p.N >= CVEC_MIN_IMAGES and channels >= CVEC_MIN_CHANNELS
            and (P <= CVEC_MAX_PIXELS
                 or (P <= CVEC_WIDE_MAX_PIXELS and channels >= CVEC_WIDE_MIN_CHANNELS)
                 or (unit and P <= CVEC_UNIT_WIDE_MAX_PIXELS
                     and channels >= CVEC_WIDE_MIN_CHANNELS)
                 or (unit and P <= CVEC_UNIT_WIDER_MAX_PIXELS
                     and channels >= CVEC_UNIT_WIDER_MIN_CHANNELS)))


cdef inline bint _cvec_data(const ConvParams* p) noexcept nogil:
    """Whether backward-data of p (stride 1: the forward of grad_y) runs it."""
    cdef ConvParams q
    if p.stride_h != 1 or p.stride_w != 1:
        return False
    q = _data_problem(p)
    return _cvec(&q)


cdef inline convcore_cvec _cvec_geometry(const ConvParams* q) noexcept nogil:
    cdef convcore_cvec d
    d.C, d.K, d.H, d.W, d.OH, d.OW, d.R, d.S = q.C, q.K, q.H, q.W, q.OH, q.OW, q.R, q.S
    d.stride_h, d.stride_w, d.pad_h, d.pad_w = q.stride_h, q.stride_w, q.pad_h, q.pad_w
    d.dil_h, d.dil_w, d.N = q.dil_h, q.dil_w, q.N
    cdef convcore_cvec_kernel kern = _cvec_kernel(q)
    d.Np = (q.N + kern.NP - 1) // kern.NP * kern.NP
    return d


cdef inline Py_ssize_t _cvec_scratch(const ConvParams* q) noexcept nogil:
    """Elements of the packed weights and the image-minor input copy."""
    cdef convcore_cvec d = _cvec_geometry(q)
    cdef Py_ssize_t KB = _cvec_kernel(q).KB
    return ((d.K + KB - 1) // KB * KB * d.R * d.S * d.C
            + d.H * d.W * d.C * d.Np + 64 // sizeof(float))


cdef int _cvec_run(const float* x, const float* w, const float* bias, float* y,
                   ConvParams q, bint flip, int num_threads) except -1:
    """y (N, q.K, OH, OW) = conv(x (N, q.C, H, W), w') + bias for groups 1:
    w' is w (q.K, q.C, R, S), or, with flip, the kernel of backward-data of
    w (q.C, q.K, R, S), read transposed and rotated by 180 degrees. Two
    regions: the weights packed by blocks and the input copied by
    channels, then (block of output channels, output position) tasks in
    contiguous runs per thread: a task writes one pixel of KB output planes, so tasks
    of neighbouring positions share y's cache lines, which ping-ponged
    between the cores when the tasks were dealt out as they finished.
    Every run holds whole blocks or equal shares of one block's positions,
    whose corners and edges (fewer taps) balance out. A task takes every
    image, but for the narrow instance, whose few filters leave the input
    the larger stream: one tile of images a task, a tile's positions in
    turn, so that neighbouring positions reuse the tile's input from the
    cache (all of a batch of 128 LeNet images did not stay there)."""
    cdef convcore_cvec d = _cvec_geometry(&q)
    cdef convcore_cvec_kernel kern = _cvec_kernel(&q)
    cdef Py_ssize_t KB = kern.KB, taps = q.R * q.S, P = q.OH * q.OW
    cdef Py_ssize_t images = kern.NP if _cvec_narrow(&q) else d.Np
    cdef Py_ssize_t nkb = (d.K + KB - 1) // KB, t, task, n0
    cdef Py_ssize_t wsize = nkb * KB * taps * d.C, xsize = d.H * d.W * d.C * d.Np
    cdef void* buf
    cdef float* wpk
    cdef float* x2
    if q.N == 0 or d.K == 0 or P == 0:
        return 0
    # the buffer cache: a fresh block of this size would fault its pages in
    # again on every call. The packed weights 64-byte aligned, as the
    # kernel loads them (direct_cvec.h).
    buf = take((wsize + xsize) * sizeof(float) + 64)
    wpk = <float*> ((<size_t> buf + 63) & ~(<size_t> 63))
    x2 = wpk + wsize
    try:
        with nogil:
            # Both copies in one region (each region wakes the other
            # threads): a thread's share of the weight blocks, then of the
            # input's channels, each share one contiguous run.
            for t in prange(num_threads, schedule='static', num_threads=num_threads):
                convcore_cvec_pack_weights(w, d.K, d.C, taps, KB, flip, t * nkb // num_threads,
                                           (t + 1) * nkb // num_threads, wpk)
                convcore_cvec_pack_input(x, q.N, d.C, d.H * d.W, d.Np, t * d.C // num_threads,
                                         (t + 1) * d.C // num_threads, x2)
            for task in prange(d.Np // images * nkb * P, schedule='static',
                               num_threads=num_threads):
                n0 = task // (nkb * P) * images
                kern.run(x2, wpk, bias, y, &d, task // P % nkb, task % P, n0, n0 + images)
    finally:
        give(buf, (wsize + xsize) * sizeof(float) + 64)
    return 0


cdef inline Py_ssize_t _whole_vectors(Py_ssize_t OW) noexcept nogil:
    """OW rounded up to whole vectors: the weight gradient's grad_y rows."""
    return (OW + _DBLOCK.VL - 1) // _DBLOCK.VL * _DBLOCK.VL


cdef inline Py_ssize_t _wgrad_chunks(const ConvParams* p) noexcept nogil:
    return (p.R * p.S + CONVCORE_DBLOCK_TT - 1) // CONVCORE_DBLOCK_TT


cdef enum:
    # The weight gradient's vector partial sums one thread keeps at most
    # (floats) for the blocks of output channels it runs together over the
    # images, padding each image once for all of them.
    WGRAD_SUMS_BUDGET = 1 << 18


cdef inline Py_ssize_t _wgrad_sums(const ConvParams* p) noexcept nogil:
    """Floats of one block's vector partial sums."""
    return (p.C // p.groups) * _wgrad_chunks(p) * _DBLOCK.KBW * CONVCORE_DBLOCK_TT * _DBLOCK.VL


cdef inline Py_ssize_t _wgrad_group(const ConvParams* p, int num_threads) noexcept nogil:
    """Blocks of output channels that one thread runs together: its share
    of a group's blocks, within WGRAD_SUMS_BUDGET."""
    cdef Py_ssize_t nkb = (p.K // p.groups + _DBLOCK.KBW - 1) // _DBLOCK.KBW
    cdef Py_ssize_t share = (nkb + num_threads - 1) // max(num_threads, 1)
    return max(1, min(share, WGRAD_SUMS_BUDGET // _wgrad_sums(p)))


cdef inline Py_ssize_t _blocked_wgrad_scratch(const ConvParams* p, int num_threads) noexcept nogil:
    """Elements of one thread's weight-gradient scratch: an image's padded
    input planes, KBW padded planes of grad_y and the vector partial sums
    of its blocks."""
    cdef convcore_dblock d = _dblock(p)
    return (d.C * d.Hp * d.Wp + _DBLOCK.KBW * p.OH * _whole_vectors(p.OW)
            + _wgrad_group(p, num_threads) * _wgrad_sums(p))


cdef int _blocked_weight_grad(const float* gy, const float* x, float* gw, ConvParams p,
                              int num_threads) except -1:
    """gw (K, C/groups, R, S) = the weight gradient of a stride-1 undilated
    p, in blocks of KBW output channels. A thread takes a few blocks of a
    group (_wgrad_group) and runs them over every image in turn, so that
    each block's sums are added in image order on one thread: they do not
    depend on the thread count."""
    cdef convcore_dblock d = _dblock(&p)
    cdef Py_ssize_t G = p.groups, KBW = _DBLOCK.KBW, VL = _DBLOCK.VL
    cdef Py_ssize_t TT = CONVCORE_DBLOCK_TT, taps = p.R * p.S, chunks = _wgrad_chunks(&p)
    cdef Py_ssize_t OWv = _whole_vectors(p.OW), gplane = p.OH * OWv
    cdef Py_ssize_t nkb = (d.K + KBW - 1) // KBW, per_thread = _blocked_wgrad_scratch(&p, num_threads)
    cdef Py_ssize_t xplane = d.C * d.Hp * d.Wp, sums = _wgrad_sums(&p)
    cdef Py_ssize_t together = _wgrad_group(&p, num_threads)
    cdef Py_ssize_t runs = (nkb + together - 1) // together
    cdef Py_ssize_t run, g, kb0, kb1, kb, k0, nk, n, c, k, t, i
    cdef float* scratch
    cdef float* xp
    cdef float* gyp
    cdef float* accv
    cdef const float* gyk
    cdef float acc
    cdef Py_ssize_t* toff
    if d.K == 0 or d.C == 0:
        return 0
    scratch = <float*> malloc(num_threads * per_thread * sizeof(float))
    toff = <Py_ssize_t*> malloc(chunks * TT * sizeof(Py_ssize_t))
    try:
        if scratch == NULL or toff == NULL:
            raise MemoryError(f"convcore: cannot allocate the direct kernel's {num_threads} x "
                              f"{per_thread} weight-gradient scratch")
        for i in range(chunks * TT):
            t = min(i, taps - 1)
            toff[i] = (t // p.S) * d.Wp + t % p.S
        with nogil:
            for run in prange(G * runs, schedule='static', num_threads=num_threads):
                xp = scratch + omp_get_thread_num() * per_thread
                gyp = xp + xplane
                accv = gyp + KBW * gplane
                g = run // runs
                kb0 = (run % runs) * together
                kb1 = min(kb0 + together, nkb)
                memset(accv, 0, (kb1 - kb0) * sums * sizeof(float))
                memset(xp, 0, (xplane + KBW * gplane) * sizeof(float))
                for n in range(p.N):
                    convcore_dblock_fill(x + (n * p.C + g * d.C) * p.H * p.W, d.C, p.H, p.W,
                                         p.pad_h, p.pad_w, xp, d.Hp, d.Wp)
                    for kb in range(kb0, kb1):
                        k0 = kb * KBW
                        nk = min(KBW, d.K - k0)
                        gyk = gy + (n * p.K + g * d.K + k0) * p.OH * p.OW
                        if nk < KBW or OWv != p.OW:
                            # rows of whole vectors, and zero planes past the
                            # layer's channels (the last block only)
                            if nk < KBW:
                                memset(gyp + nk * gplane, 0, (KBW - nk) * gplane * sizeof(float))
                            convcore_dblock_fill(gyk, nk, p.OH, p.OW, 0, 0, gyp, p.OH, OWv)
                            gyk = gyp
                        _DBLOCK.wgrad(xp, gyk, d.C, d.Hp, d.Wp, p.OH, OWv, toff, chunks,
                                      accv + (kb - kb0) * sums)
                for kb in range(kb0, kb1):
                    k0 = kb * KBW
                    for k in range(min(KBW, d.K - k0)):
                        for c in range(d.C):
                            for t in range(taps):
                                acc = 0
                                for i in range(VL):
                                    acc = acc + accv[(kb - kb0) * sums
                                                     + (((c * chunks + t // TT) * KBW + k) * TT
                                                        + t % TT) * VL + i]
                                gw[((g * d.K + k0 + k) * d.C + c) * taps + t] = acc
    finally:
        free(scratch)
        free(toff)
    return 0


cdef inline ConvParams _data_problem(const ConvParams* p) noexcept nogil:
    """Backward-data as a forward: grad_y (N, K, OH, OW) -> grad_x (N, C, H,
    W) with the flipped kernel, padding dil*(R-1) - pad (stride 1)."""
    cdef ConvParams q = p[0]
    q.C, q.H, q.W = p.K, p.OH, p.OW
    q.K, q.OH, q.OW = p.C, p.H, p.W
    q.pad_h = p.dil_h * (p.R - 1) - p.pad_h
    q.pad_w = p.dil_w * (p.S - 1) - p.pad_w
    return q


# ---------------------------------------------------------------------------
# Drivers: plan the parallel loop; called by convcore.algorithms once
# convcore.functional has checked every shape and allocated the outputs.
# geom: the call's ConvGeometry (ConvSpec.params).

def scratch_bytes(ConvGeometry geom, int num_threads, bint backward,
                  Py_ssize_t itemsize):
    """Bytes that one forward (or full backward) call with these arguments
    allocates, whichever kernel each pass runs: the channel-vector kernel's
    packed weights and input copy, the blocked kernels' padded planes and
    packed weights, the weight gradient's row sums or vector sums."""
    cdef ConvParams p = geom.params
    cdef ConvParams q = _data_problem(&p)
    cdef Py_ssize_t forward = 0, data = 0, weight
    if itemsize == 4 and _cvec(&p):
        forward = _cvec_scratch(&p)
    elif itemsize == 4 and _blocked(&p):
        forward = num_threads * _blocked_plane(&p) + _blocked_weights(&p)
    if not backward:
        return forward * itemsize
    if itemsize == 4 and _cvec_data(&p):
        data = _cvec_scratch(&q)
    elif itemsize == 4 and _blocked(&p):
        data = num_threads * _blocked_plane(&q) + _blocked_weights(&q)
    if itemsize == 4 and _blocked(&p):
        weight = num_threads * _blocked_wgrad_scratch(&p, num_threads)
    else:
        weight = num_threads * _weight_scratch_size(&p)
    return max(forward, data, weight) * itemsize


def forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
            const floating[::1] bias, floating[:, :, :, ::1] y,
            ConvGeometry geom, int num_threads):
    """y = conv(x, w) + bias. bias has size K, or 0 for no bias.   OUT: y"""
    cdef ConvParams p = geom.params
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t nk
    check_shapes(&p, x.shape, w.shape, y.shape)
    if floating is float and _cvec(&p):
        _cvec_run(&x[0, 0, 0, 0], &w[0, 0, 0, 0], b, &y[0, 0, 0, 0], p, False, num_threads)
        return
    if floating is float and _blocked(&p):
        _blocked_run(&x[0, 0, 0, 0], &w[0, 0, 0, 0], b, &y[0, 0, 0, 0], p, False, num_threads)
        return
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
    if floating is float and _cvec_data(&p):
        # skips the taps outside grad_y: Inf and NaN weights are safe here
        _cvec_run(&grad_y[0, 0, 0, 0], &w[0, 0, 0, 0], NULL, &grad_x[0, 0, 0, 0],
                  _data_problem(&p), True, num_threads)
        return
    # The blocked kernel multiplies grad_y's padding like data; positions
    # outside grad_y are not data to backward-data (the reference and
    # PyTorch skip them), which only shows with an Inf or NaN weight: those
    # weights take the generic kernel, which skips them.
    if (floating is float and _blocked(&p)
            and all_finite(&w[0, 0, 0, 0], p.K * (p.C // p.groups) * p.R * p.S)):
        _blocked_run(&grad_y[0, 0, 0, 0], &w[0, 0, 0, 0], NULL, &grad_x[0, 0, 0, 0],
                     _data_problem(&p), True, num_threads)
        return
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
    if floating is float and _blocked(&p):
        _blocked_weight_grad(&grad_y[0, 0, 0, 0], &x[0, 0, 0, 0], &grad_w[0, 0, 0, 0], p,
                             num_threads)
        return
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


def blocked(ConvGeometry geom, Py_ssize_t itemsize):
    """Whether forward, backward_data and backward_weight run the
    register-blocked kernels (direct_block.h) for this layer: float32,
    stride 1, undilated."""
    return itemsize == 4 and _blocked(&geom.params)


def channel_vector(ConvGeometry geom, Py_ssize_t itemsize, bint backward_data=False):
    """Whether forward (or backward_data) runs the channel-vector kernel of
    small images (direct_cvec.h) for this layer."""
    if itemsize != 4:
        return False
    return _cvec_data(&geom.params) if backward_data else _cvec(&geom.params)


def channel_vector_images():
    """Images per tile of the channel-vector kernel on this CPU (8 with
    AVX-512, 4 with AVX2, 6 otherwise; 16 in the narrow instance of layers
    of at most 16 filters, which the channel-count rules never reach): a
    batch runs in whole tiles."""
    return _CVEC.NP


def channel_vector_kernel(on=None):
    """Whether small images run the channel-vector kernel where it applies
    (on by default); with on given, set it (tests reach the other kernels
    for those shapes). Returns the previous setting. Not thread-safe."""
    global _CVEC_ON
    previous = bool(_CVEC_ON)
    if on is not None:
        _CVEC_ON = bool(on)
    return previous


def vector_width():
    """Output pixels per vector of the blocked kernels on this CPU (16 with
    AVX-512, 8 with AVX2, 4 otherwise)."""
    return _DBLOCK.VL


INSTANCES = ("baseline", "avx2", "avx512")


def blocked_instance(name=None):
    """The blocked kernels' instance in use ("baseline", "avx2" or
    "avx512"), chosen for this CPU at import. With a name, switch to it
    (tests run every instance the CPU can); returns the previous one.
    Not thread-safe: not while another thread convolves."""
    global _DBLOCK, _CVEC, _CVEC_NARROW
    cdef int which
    previous = INSTANCES[{4: 0, 8: 1, 16: 2}[_DBLOCK.VL]]
    if name is not None:
        if name not in INSTANCES:
            raise ValueError(f"blocked_instance: unknown instance {name!r}, expected one of "
                             f"{INSTANCES}")
        which = INSTANCES.index(name)
        if which > convcore_dblock_best():
            raise ValueError(f"blocked_instance: this CPU cannot run {name!r}")
        _DBLOCK = convcore_dblock_instance(which)
        _CVEC = convcore_cvec_instance(which)
        _CVEC_NARROW = convcore_cvec_narrow_instance(which)
    return previous
