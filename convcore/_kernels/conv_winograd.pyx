"""Winograd F(2x2, 3x3) convolution: stride 1, dilation 1, 3x3 kernels.

Each 4x4 input tile d (overlapping by 2) gives a 2x2 output tile
    Y = A^T [ (G g G^T) . (B^T d B) ] A
so the 36 multiplies per output tile and channel pair of a direct 3x3
become 16, done as 16 GEMMs over channels (Lavin & Gray 2015):
    M[xi] (K x T) = U[xi] (K x C) @ V[xi] (C x T),   xi = 0..15.

Work is split into blocks of whole tile rows taken across the batch (so
small images still give the BLAS long rows; how many rows is the caller's
choice, convcore.algorithms.WinogradConv); the transforms run along tile
rows, so they vectorise. Each thread owns one block at a time with its own V and M scratch (16*C*TB and
16*K*TB elements: bounded, never a whole-batch matrix) and calls the BLAS
single-threaded (the caller holds it to one thread: one owner at a time).
The weight transform U = G g G^T is computed once per call by the caller.
Backward-data is the same forward, run on grad_y with the kernel flipped
and transposed and padding 2 - pad (convcore.algorithms does that).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memcpy, memset
from convcore._kernels._openmp cimport omp_get_thread_num
from convcore._kernels.blas cimport gemm

# Output tiles per work block; 16*C*TB floats of V per thread.


cdef void _input_row(const floating* xc, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t ih0, Py_ssize_t pad_w, Py_ssize_t TW,
                     floating* rows, floating* v, Py_ssize_t stride) noexcept nogil:
    """V for one row of TW tiles of one channel: v[xi*stride + tw] =
    (B^T d B)[xi] of the tile whose top-left input pixel is (ih0, 2*tw -
    pad_w). The four input rows are first copied into zero-padded buffers,
    so every step below is a plain loop along the row that vectorises.
    rows: scratch of 8 * (2*TW + 2) elements."""
    cdef Py_ssize_t Wp = 2 * TW + 2, i, j, ih, lo, hi
    cdef floating* d
    cdef floating* t0 = rows + 4 * Wp
    cdef floating* t1 = t0 + Wp
    cdef floating* t2 = t1 + Wp
    cdef floating* t3 = t2 + Wp
    cdef const floating* src
    lo = pad_w if pad_w < Wp else Wp            # padded column of input column 0
    hi = W + pad_w if W + pad_w < Wp else Wp    # one past the last input column
    for i in range(4):
        d = rows + i * Wp
        ih = ih0 + i
        if ih < 0 or ih >= H:
            memset(d, 0, Wp * sizeof(floating))
            continue
        memset(d, 0, lo * sizeof(floating))
        src = xc + ih * W - pad_w
        for j in range(lo, hi):
            d[j] = src[j]
        if hi < Wp:
            memset(d + hi, 0, (Wp - hi) * sizeof(floating))
    # B^T d along the rows: B^T = (1,0,-1,0), (0,1,1,0), (0,-1,1,0), (0,1,0,-1).
    for j in range(Wp):
        t0[j] = rows[j] - rows[2 * Wp + j]
        t1[j] = rows[Wp + j] + rows[2 * Wp + j]
        t2[j] = rows[2 * Wp + j] - rows[Wp + j]
        t3[j] = rows[Wp + j] - rows[3 * Wp + j]
    # ... then B along the columns of each tile.
    for i in range(4):
        if floating is float:
            convcore_wino_in_cols_f(t0 + i * Wp, v + 4 * i * stride, stride, TW)
        else:
            convcore_wino_in_cols_d(t0 + i * Wp, v + 4 * i * stride, stride, TW)


# The output transform and the input transform's column step in C, for the
# same reason as the adjoint below: many load/store streams per iteration,
# which the vectoriser only takes with omp simd's no-dependence promise.
cdef extern from *:
    """
    #define CONVCORE_WINO_OUT_ROW(NAME, T)                                    \
    static void NAME(const T* m, Py_ssize_t s, T b, T* top, T* bottom,        \
                     Py_ssize_t TW) {                                         \
        _Pragma("omp simd")                                                   \
        for (Py_ssize_t j = 0; j < TW; ++j) {                                 \
            T a0 = m[j] + m[4 * s + j] + m[8 * s + j];                        \
            T a1 = m[s + j] + m[5 * s + j] + m[9 * s + j];                    \
            T a2 = m[2 * s + j] + m[6 * s + j] + m[10 * s + j];               \
            T a3 = m[3 * s + j] + m[7 * s + j] + m[11 * s + j];               \
            T c0 = m[4 * s + j] - m[8 * s + j] - m[12 * s + j];               \
            T c1 = m[5 * s + j] - m[9 * s + j] - m[13 * s + j];               \
            T c2 = m[6 * s + j] - m[10 * s + j] - m[14 * s + j];              \
            T c3 = m[7 * s + j] - m[11 * s + j] - m[15 * s + j];              \
            top[2 * j] = a0 + a1 + a2 + b;                                    \
            top[2 * j + 1] = a1 - a2 - a3 + b;                                \
            bottom[2 * j] = c0 + c1 + c2 + b;                                 \
            bottom[2 * j + 1] = c1 - c2 - c3 + b;                             \
        }                                                                     \
    }
    #define CONVCORE_WINO_IN_COLS(NAME, T)                                    \
    static void NAME(const T* t, T* v, Py_ssize_t s, Py_ssize_t TW) {         \
        _Pragma("omp simd")                                                   \
        for (Py_ssize_t j = 0; j < TW; ++j) {                                 \
            T x0 = t[2 * j], x1 = t[2 * j + 1];                               \
            T x2 = t[2 * j + 2], x3 = t[2 * j + 3];                           \
            v[j] = x0 - x2;                                                   \
            v[s + j] = x1 + x2;                                               \
            v[2 * s + j] = x2 - x1;                                           \
            v[3 * s + j] = x1 - x3;                                           \
        }                                                                     \
    }
    CONVCORE_WINO_OUT_ROW(convcore_wino_out_row_f, float)
    CONVCORE_WINO_OUT_ROW(convcore_wino_out_row_d, double)
    CONVCORE_WINO_IN_COLS(convcore_wino_in_cols_f, float)
    CONVCORE_WINO_IN_COLS(convcore_wino_in_cols_d, double)
    """
    void convcore_wino_out_row_f(const float* m, Py_ssize_t s, float b, float* top,
                                 float* bottom, Py_ssize_t TW) noexcept nogil
    void convcore_wino_out_row_d(const double* m, Py_ssize_t s, double b, double* top,
                                 double* bottom, Py_ssize_t TW) noexcept nogil
    void convcore_wino_in_cols_f(const float* t, float* v, Py_ssize_t s,
                                 Py_ssize_t TW) noexcept nogil
    void convcore_wino_in_cols_d(const double* t, double* v, Py_ssize_t s,
                                 Py_ssize_t TW) noexcept nogil


cdef void _output_row(const floating* m, Py_ssize_t stride, floating b,
                      floating* yk, Py_ssize_t OH, Py_ssize_t OW,
                      Py_ssize_t oh0, Py_ssize_t TW, floating* out) noexcept nogil:
    """Output rows oh0, oh0+1 of one channel from one row of TW tiles:
    Y = A^T m A + b with A^T = (1,1,1,0), (0,1,-1,-1), clipped to the
    output. out: scratch of 4*TW elements."""
    cdef floating* top = out
    cdef floating* bottom = out + 2 * TW
    if floating is float:
        convcore_wino_out_row_f(m, stride, b, top, bottom, TW)
    else:
        convcore_wino_out_row_d(m, stride, b, top, bottom, TW)
    memcpy(yk + oh0 * OW, top, OW * sizeof(floating))
    if oh0 + 1 < OH:
        memcpy(yk + (oh0 + 1) * OW, bottom, OW * sizeof(floating))


cdef void _transform_input_block(const floating* x, Py_ssize_t C, Py_ssize_t H,
                                 Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                                 Py_ssize_t pad_h, Py_ssize_t pad_w,
                                 Py_ssize_t row0, Py_ssize_t row1,
                                 floating* v, floating* rows) noexcept nogil:
    """V[xi][c][t] for tile rows [row0, row1) of the batch, t = (row -
    row0) * TW + tw."""
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2
    cdef Py_ssize_t TB = (row1 - row0) * TW, c, row, n, th
    for c in range(C):
        for row in range(row0, row1):
            n = row // TH
            th = row % TH
            _input_row(x + (n * C + c) * H * W, H, W, 2 * th - pad_h, pad_w, TW,
                       rows, v + c * TB + (row - row0) * TW, C * TB)


# The adjoint output transform in C: its 16 output planes are separate
# store streams, which GCC's vectoriser leaves scalar unless told (omp simd:
# no dependence between iterations; -fopenmp-simd, no runtime needed).
cdef extern from *:
    """
    #define CONVCORE_WINO_GRAD_ROW(NAME, T)                                   \
    static void NAME(const T* top, const T* bottom, T* dm,                    \
                     Py_ssize_t stride, Py_ssize_t TW) {                      \
        _Pragma("omp simd")                                                   \
        for (Py_ssize_t j = 0; j < TW; ++j) {                                 \
            T g00 = top[2 * j], g01 = top[2 * j + 1];                         \
            T g10 = bottom[2 * j], g11 = bottom[2 * j + 1];                   \
            T t10 = g00 + g10, t11 = g01 + g11;                               \
            T t20 = g00 - g10, t21 = g01 - g11;                               \
            dm[j] = g00;                 dm[stride + j] = g00 + g01;          \
            dm[2 * stride + j] = g00 - g01;  dm[3 * stride + j] = -g01;       \
            dm[4 * stride + j] = t10;    dm[5 * stride + j] = t10 + t11;      \
            dm[6 * stride + j] = t10 - t11;  dm[7 * stride + j] = -t11;       \
            dm[8 * stride + j] = t20;    dm[9 * stride + j] = t20 + t21;      \
            dm[10 * stride + j] = t20 - t21; dm[11 * stride + j] = -t21;      \
            dm[12 * stride + j] = -g10;  dm[13 * stride + j] = -g10 - g11;    \
            dm[14 * stride + j] = g11 - g10; dm[15 * stride + j] = g11;       \
        }                                                                     \
    }
    CONVCORE_WINO_GRAD_ROW(convcore_wino_grad_row_f, float)
    CONVCORE_WINO_GRAD_ROW(convcore_wino_grad_row_d, double)
    """
    void convcore_wino_grad_row_f(const float* top, const float* bottom, float* dm,
                                  Py_ssize_t stride, Py_ssize_t TW) noexcept nogil
    void convcore_wino_grad_row_d(const double* top, const double* bottom, double* dm,
                                  Py_ssize_t stride, Py_ssize_t TW) noexcept nogil


cdef void _grad_output_row(const floating* gyk, Py_ssize_t OH, Py_ssize_t OW,
                           Py_ssize_t oh0, Py_ssize_t TW, floating* dm,
                           Py_ssize_t stride, floating* rows) noexcept nogil:
    """The adjoint of _output_row: dM[xi*stride + tw] = (A gY A^T)[xi] for
    the 2x2 output-gradient tiles of one row (zero past the output's edge),
    A = A^T transposed, rows (1,0), (1,1), (1,-1), (0,-1).
    rows: scratch of 4*TW elements."""
    cdef floating* top = rows
    cdef floating* bottom = rows + 2 * TW
    memset(rows, 0, 4 * TW * sizeof(floating))
    memcpy(top, gyk + oh0 * OW, OW * sizeof(floating))
    if oh0 + 1 < OH:
        memcpy(bottom, gyk + (oh0 + 1) * OW, OW * sizeof(floating))
    if floating is float:
        convcore_wino_grad_row_f(top, bottom, dm, stride, TW)
    else:
        convcore_wino_grad_row_d(top, bottom, dm, stride, TW)


cdef void _weight_grad_block(const floating* x, const floating* grad_y,
                             floating* du, Py_ssize_t C, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t K, Py_ssize_t OH,
                             Py_ssize_t OW, Py_ssize_t pad_h, Py_ssize_t pad_w,
                             Py_ssize_t G, Py_ssize_t row0, Py_ssize_t row1,
                             floating* v, floating* dm, floating* rows) noexcept nogil:
    """dU[xi][g] (Kg x Cg) += dM[xi][g] (Kg x TB) @ V[xi][g]^T (TB x Cg)
    for tile rows [row0, row1): the adjoint of the forward's GEMMs."""
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2
    cdef Py_ssize_t TB = (row1 - row0) * TW, Cg = C // G, Kg = K // G
    cdef Py_ssize_t k, row, n, th, xi, g
    _transform_input_block(x, C, H, W, OH, OW, pad_h, pad_w, row0, row1, v, rows)
    for k in range(K):
        for row in range(row0, row1):
            n = row // TH
            th = row % TH
            _grad_output_row(grad_y + (n * K + k) * OH * OW, OH, OW, 2 * th, TW,
                             dm + k * TB + (row - row0) * TW, K * TB, rows)
    for xi in range(16):
        for g in range(G):
            gemm(False, True, <int> Kg, <int> Cg, <int> TB, <floating> 1,
                 dm + (xi * K + g * Kg) * TB, <int> TB,
                 v + (xi * C + g * Cg) * TB, <int> TB, <floating> 1,
                 du + (xi * K + g * Kg) * Cg, <int> Cg)


cdef void _forward_block(const floating* x, const floating* u,
                         const floating* bias, floating* y,
                         Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t K, Py_ssize_t OH, Py_ssize_t OW,
                         Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t G,
                         Py_ssize_t row0, Py_ssize_t row1,
                         floating* v, floating* m, floating* rows) noexcept nogil:
    """Tile rows [row0, row1) of the batch (row = n * TH + th)."""
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2
    cdef Py_ssize_t TB = (row1 - row0) * TW, Cg = C // G, Kg = K // G
    cdef Py_ssize_t k, row, n, th, xi, g
    cdef floating b
    _transform_input_block(x, C, H, W, OH, OW, pad_h, pad_w, row0, row1, v, rows)
    # 16 GEMMs per group: M[xi][g*Kg:][:] = U[xi][g] @ V[xi][g*Cg:][:].
    for xi in range(16):
        for g in range(G):
            gemm(False, False, <int> Kg, <int> TB, <int> Cg, <floating> 1,
                 u + (xi * K + g * Kg) * Cg, <int> Cg,
                 v + (xi * C + g * Cg) * TB, <int> TB, <floating> 0,
                 m + (xi * K + g * Kg) * TB, <int> TB)
    # Output transform.
    for k in range(K):
        b = bias[k] if bias != NULL else 0
        for row in range(row0, row1):
            n = row // TH
            th = row % TH
            _output_row(m + k * TB + (row - row0) * TW, K * TB, b,
                        y + (n * K + k) * OH * OW, OH, OW, 2 * th, TW, rows)


def forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u,
            const floating[::1] bias, floating[:, :, :, ::1] y,
            Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t groups,
            Py_ssize_t rows_per_block, int num_threads):
    """y = conv3x3(x) + bias, stride 1, dilation 1, padding (pad_h, pad_w)
    top/left. u: transformed weights (16, K, C/groups) = G g G^T; bias of
    size K or 0. x (N, C, H, W), y (N, K, OH, OW). rows_per_block >= 1:
    tile rows each work block takes (the caller's choice; scratch per
    thread is 16*(C+K)*rows_per_block*TW + 8*(2*TW+2) elements,
    TW = ceil(OW/2)).                                           OUT: y"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = y.shape[1], OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2
    cdef Py_ssize_t rpb = rows_per_block, total = N * TH
    cdef Py_ssize_t nblocks = (total + rpb - 1) // rpb
    cdef Py_ssize_t TB = rpb * TW
    cdef Py_ssize_t vsize = 16 * C * TB, per = 16 * (C + K) * TB + 8 * (2 * TW + 2)
    cdef Py_ssize_t blk
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* scratch
    cdef floating* mine
    if total == 0:
        return
    if num_threads > nblocks:
        num_threads = <int> nblocks
    scratch = <floating*> malloc(num_threads * per * sizeof(floating))
    if scratch == NULL:
        raise MemoryError(f"convcore: cannot allocate {num_threads} x {per} Winograd scratch")
    try:
        with nogil:
            for blk in prange(nblocks, schedule='static', num_threads=num_threads):
                mine = scratch + omp_get_thread_num() * per
                _forward_block(&x[0, 0, 0, 0], &u[0, 0, 0], b, &y[0, 0, 0, 0],
                               C, H, W, K, OH, OW, pad_h, pad_w, groups,
                               blk * rpb, min((blk + 1) * rpb, total),
                               mine, mine + vsize, mine + per - 8 * (2 * TW + 2))
    finally:
        free(scratch)


# Fixed number of weight-gradient partial sums, as in conv_gemm: each sums
# a fixed range of tile blocks in order, so the result does not depend on
# the thread count.
cdef enum:
    NUM_PARTIALS = 8


def backward_weight(const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] grad_y,
                    floating[:, :, ::1] du, Py_ssize_t pad_h, Py_ssize_t pad_w,
                    Py_ssize_t groups, Py_ssize_t rows_per_block, int num_threads):
    """du (16, K, C/groups), overwritten: the gradient with respect to the
    transformed weights U; the caller maps it back through G^T du G.
    Scratch as forward's, plus NUM_WEIGHT_GRAD_CHUNKS * 16*K*C/groups
    partial sums.                                                OUT: du"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad_y.shape[1], OH = grad_y.shape[2], OW = grad_y.shape[3]
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2
    cdef Py_ssize_t rpb = rows_per_block, total = N * TH
    cdef Py_ssize_t nblocks = (total + rpb - 1) // rpb
    cdef Py_ssize_t nchunks = min(nblocks, <Py_ssize_t> NUM_PARTIALS)
    cdef Py_ssize_t TB = rpb * TW, usize = 16 * K * (C // groups)
    cdef Py_ssize_t vsize = 16 * C * TB, per = 16 * (C + K) * TB + 8 * (2 * TW + 2)
    cdef Py_ssize_t chunk, blk, i, c
    cdef floating acc
    cdef floating* scratch
    cdef floating* partials
    cdef floating* mine
    cdef floating* out = &du[0, 0, 0]
    memset(out, 0, usize * sizeof(floating))
    if total == 0:
        return
    if num_threads > nchunks:
        num_threads = <int> nchunks
    partials = <floating*> calloc(nchunks * usize, sizeof(floating))
    scratch = <floating*> malloc(num_threads * per * sizeof(floating))
    if partials == NULL or scratch == NULL:
        free(partials)
        free(scratch)
        raise MemoryError(f"convcore: cannot allocate Winograd weight-gradient scratch "
                          f"({nchunks} x {usize} + {num_threads} x {per} elements)")
    try:
        with nogil:
            for chunk in prange(nchunks, schedule='static', num_threads=num_threads):
                mine = scratch + omp_get_thread_num() * per
                for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
                    _weight_grad_block(&x[0, 0, 0, 0], &grad_y[0, 0, 0, 0],
                                       partials + chunk * usize, C, H, W, K, OH, OW,
                                       pad_h, pad_w, groups, blk * rpb,
                                       min((blk + 1) * rpb, total), mine, mine + vsize,
                                       mine + per - 8 * (2 * TW + 2))
            for i in prange(usize, schedule='static', num_threads=num_threads):
                acc = 0
                for c in range(nchunks):
                    acc = acc + partials[c * usize + i]
                out[i] = <floating> acc
    finally:
        free(scratch)
        free(partials)
NUM_WEIGHT_GRAD_CHUNKS = NUM_PARTIALS
