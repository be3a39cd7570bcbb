"""Winograd F(4x4, 3x3) convolution: stride 1, dilation 1, 3x3 kernels.

The larger sibling of conv_winograd (F(2x2, 3x3)): each 6x6 input tile d
(overlapping by 2) gives a 4x4 output tile
    Y = A^T [ (G g G^T) . (B^T d B) ] A
with 36 multiplies per output tile and channel pair where a direct 3x3
does 144 (F(2x2, 3x3): 64 for the same 16 outputs), as 36 GEMMs over the
channels:
    M[xi] (K x T) = U[xi] (K x C) @ V[xi] (C x T),   xi = 0..35.
The transformed tiles take 36/16 = 2.25 elements per output pixel and
channel instead of F(2x2)'s 4, so the transforms also move less memory.
The price is accuracy: the transforms scale by up to 8x (points 0, +-1,
+-2), so float32 results carry ~20x im2col's rounding error (measured
~1e-5 of the output's scale at 64-512 channels, im2col ~5e-7): fine for
training, as cuDNN's use of the same transform shows; im2col is there for
a closer answer.

Work split, scratch and threads as in conv_winograd: blocks of whole tile
rows across the batch, one block per thread at a time with its own V and
M, BLAS single-threaded (the caller holds it to one thread). The caller
computes U = G g G^T (36, K, C/groups) once per call with
transform_weights; backward-data is the forward run on grad_y with the
flipped kernel and padding 2 - pad (negative when the forward padded by
more than 2). The interface is conv_winograd's, so convcore.algorithms
treats the two modules alike.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from convcore._kernels._openmp cimport omp_get_thread_num
from convcore._kernels.blas cimport gemm
from convcore._kernels.partials cimport NUM_PARTIALS, sum_partials

# The transforms in C with omp simd (no dependence between iterations: the
# vectoriser leaves the many load/store streams scalar without it).
#   B^T = ( 4  0 -5  0  1  0 )    A^T = ( 1  1  1  1  1  0 )
#         ( 0 -4 -4  1  1  0 )          ( 0  1 -1  2 -2  0 )
#         ( 0  4 -4 -1  1  0 )          ( 0  1  1  4  4  0 )
#         ( 0 -2 -1  2  1  0 )          ( 0  1 -1  8 -8  1 )
#         ( 0  2 -1 -2  1  0 )
#         ( 0  4  0 -5  0  1 )
cdef extern from *:
    """
    /* t = B^T d along the rows: d and t are 6 rows of Wp. Also returns the
       sum of u - u over results u that together see every input: 0, or NaN
       when an input is Inf or NaN (or a sum overflows: a false alarm). */
    #define CONVCORE_WINO4_IN_ROWS(NAME, T)                                    \
    static T NAME(const T* d, T* t, Py_ssize_t Wp) {                           \
        T bad = 0;                                                             \
        const T *d0 = d, *d1 = d + Wp, *d2 = d + 2 * Wp;                       \
        const T *d3 = d + 3 * Wp, *d4 = d + 4 * Wp, *d5 = d + 5 * Wp;          \
        T *t0 = t, *t1 = t + Wp, *t2 = t + 2 * Wp;                             \
        T *t3 = t + 3 * Wp, *t4 = t + 4 * Wp, *t5 = t + 5 * Wp;                \
        _Pragma("omp simd reduction(+:bad)")                                   \
        for (Py_ssize_t j = 0; j < Wp; ++j) {                                  \
            T a = d4[j] - 4 * d2[j], b = d3[j] - 4 * d1[j];                    \
            T c = d4[j] - d2[j], e = 2 * (d3[j] - d1[j]);                      \
            t0[j] = 4 * d0[j] - 5 * d2[j] + d4[j];                             \
            t1[j] = a + b;                                                     \
            t2[j] = a - b;                                                     \
            t3[j] = c + e;                                                     \
            t4[j] = c - e;                                                     \
            t5[j] = 4 * d1[j] - 5 * d3[j] + d5[j];                             \
            bad += (t0[j] - t0[j]) + (t5[j] - t5[j]);                          \
        }                                                                      \
        return bad;                                                            \
    }
    /* v[k*s + tw] = (t B)[k] for the tiles of one row t (tile tw starts at
       column 4*tw). */
    #define CONVCORE_WINO4_IN_COLS(NAME, T)                                    \
    static void NAME(const T* t, T* v, Py_ssize_t s, Py_ssize_t TW) {          \
        _Pragma("omp simd")                                                    \
        for (Py_ssize_t j = 0; j < TW; ++j) {                                  \
            const T* x = t + 4 * j;                                            \
            T a = x[4] - 4 * x[2], b = x[3] - 4 * x[1];                        \
            T c = x[4] - x[2], e = 2 * (x[3] - x[1]);                          \
            v[j] = 4 * x[0] - 5 * x[2] + x[4];                                 \
            v[s + j] = a + b;                                                  \
            v[2 * s + j] = a - b;                                              \
            v[3 * s + j] = c + e;                                              \
            v[4 * s + j] = c - e;                                              \
            v[5 * s + j] = 4 * x[1] - 5 * x[3] + x[5];                         \
        }                                                                      \
    }
    /* Four output rows (out + q*ld, 4*TW wide) of one row of tiles:
       Y = A^T m A + b. */
    #define CONVCORE_WINO4_OUT(NAME, T)                                        \
    static void NAME(const T* m, Py_ssize_t s, T bias, T* out, Py_ssize_t ld,  \
                     Py_ssize_t TW) {                                          \
        _Pragma("omp simd")                                                    \
        for (Py_ssize_t j = 0; j < TW; ++j) {                                  \
            T r[4][6];                                                         \
            for (int c = 0; c < 6; ++c) {                                      \
                T m0 = m[c * s + j], m1 = m[(6 + c) * s + j];                  \
                T m2 = m[(12 + c) * s + j], m3 = m[(18 + c) * s + j];          \
                T m4 = m[(24 + c) * s + j], m5 = m[(30 + c) * s + j];          \
                T p = m1 + m2, q = m1 - m2, u = m3 + m4, w = m3 - m4;          \
                r[0][c] = m0 + p + u;                                          \
                r[1][c] = q + 2 * w;                                           \
                r[2][c] = p + 4 * u;                                           \
                r[3][c] = q + 8 * w + m5;                                      \
            }                                                                  \
            for (int i = 0; i < 4; ++i) {                                      \
                T p = r[i][1] + r[i][2], q = r[i][1] - r[i][2];                \
                T u = r[i][3] + r[i][4], w = r[i][3] - r[i][4];                \
                T* o = out + i * ld + 4 * j;                                   \
                o[0] = r[i][0] + p + u + bias;                                 \
                o[1] = q + 2 * w + bias;                                       \
                o[2] = p + 4 * u + bias;                                       \
                o[3] = q + 8 * w + r[i][5] + bias;                             \
            }                                                                  \
        }                                                                      \
    }
    /* The adjoint of the output transform: dm[xi*s + tw] = (A gY A^T)[xi]
       for the 4x4 gradient tiles of one row (g: 4 rows g + q*ld, 4*TW wide). */
    #define CONVCORE_WINO4_GRAD(NAME, T)                                       \
    static T NAME(const T* g, Py_ssize_t ld, T* dm, Py_ssize_t s,              \
                  Py_ssize_t TW) {                                             \
        T bad = 0;  /* as the input transform's row step */                    \
        _Pragma("omp simd reduction(+:bad)")                                   \
        for (Py_ssize_t j = 0; j < TW; ++j) {                                  \
            T r[4][6];                                                         \
            for (int i = 0; i < 4; ++i) {                                      \
                const T* x = g + i * ld + 4 * j;                               \
                T x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];                  \
                r[i][0] = x0;                                                  \
                r[i][1] = x0 + x1 + x2 + x3;                                   \
                r[i][2] = x0 - x1 + x2 - x3;                                   \
                r[i][3] = x0 + 2 * x1 + 4 * x2 + 8 * x3;                       \
                r[i][4] = x0 - 2 * x1 + 4 * x2 - 8 * x3;                       \
                r[i][5] = x3;                                                  \
                bad += r[i][1] - r[i][1];                                      \
            }                                                                  \
            for (int c = 0; c < 6; ++c) {                                      \
                T x0 = r[0][c], x1 = r[1][c], x2 = r[2][c], x3 = r[3][c];      \
                dm[c * s + j] = x0;                                            \
                dm[(6 + c) * s + j] = x0 + x1 + x2 + x3;                       \
                dm[(12 + c) * s + j] = x0 - x1 + x2 - x3;                      \
                dm[(18 + c) * s + j] = x0 + 2 * x1 + 4 * x2 + 8 * x3;          \
                dm[(24 + c) * s + j] = x0 - 2 * x1 + 4 * x2 - 8 * x3;          \
                dm[(30 + c) * s + j] = x3;                                     \
            }                                                                  \
        }                                                                      \
        return bad;                                                            \
    }
    CONVCORE_WINO4_IN_ROWS(convcore_wino4_in_rows_f, float)
    CONVCORE_WINO4_IN_ROWS(convcore_wino4_in_rows_d, double)
    CONVCORE_WINO4_IN_COLS(convcore_wino4_in_cols_f, float)
    CONVCORE_WINO4_IN_COLS(convcore_wino4_in_cols_d, double)
    CONVCORE_WINO4_OUT(convcore_wino4_out_f, float)
    CONVCORE_WINO4_OUT(convcore_wino4_out_d, double)
    CONVCORE_WINO4_GRAD(convcore_wino4_grad_f, float)
    CONVCORE_WINO4_GRAD(convcore_wino4_grad_d, double)
    """
    float convcore_wino4_in_rows_f(const float* d, float* t, Py_ssize_t Wp) noexcept nogil
    double convcore_wino4_in_rows_d(const double* d, double* t, Py_ssize_t Wp) noexcept nogil
    void convcore_wino4_in_cols_f(const float* t, float* v, Py_ssize_t s, Py_ssize_t TW) noexcept nogil
    void convcore_wino4_in_cols_d(const double* t, double* v, Py_ssize_t s, Py_ssize_t TW) noexcept nogil
    void convcore_wino4_out_f(const float* m, Py_ssize_t s, float b, float* out, Py_ssize_t ld,
                              Py_ssize_t TW) noexcept nogil
    void convcore_wino4_out_d(const double* m, Py_ssize_t s, double b, double* out, Py_ssize_t ld,
                              Py_ssize_t TW) noexcept nogil
    float convcore_wino4_grad_f(const float* g, Py_ssize_t ld, float* dm, Py_ssize_t s,
                               Py_ssize_t TW) noexcept nogil
    double convcore_wino4_grad_d(const double* g, Py_ssize_t ld, double* dm, Py_ssize_t s,
                               Py_ssize_t TW) noexcept nogil


# Each of the 36 points' V (and M) is a plane of C (K) x TB elements. The
# transforms write all 36 planes at once, so when the plane size is a
# multiple of 4 KiB every one of those streams maps to the same L1 sets
# and they evict each other; an odd number of cache lines between planes
# spreads them out (measured, one thread, batch 128: forward 4.8 -> 3.6 ms
# at 64 channels 8x8, 11.5 -> 8.7 ms at 128 channels 16x16 batch 32).
cdef enum:
    PLANE_PAD = 16


cdef inline Py_ssize_t plane(Py_ssize_t rows, Py_ssize_t TB) noexcept nogil:
    """Elements between consecutive points' planes of a rows x TB matrix."""
    return rows * TB + PLANE_PAD


cdef inline Py_ssize_t row_scratch(Py_ssize_t TW) noexcept nogil:
    """Elements of a thread's row buffers: 12 rows of 4*TW + 2 (the six
    input rows and their row transform; the output side needs 4*4*TW)."""
    return 12 * (4 * TW + 2)


cdef floating _input_row(const floating* xc, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t ih0, Py_ssize_t pad_w, Py_ssize_t TW,
                         floating* rows, floating* v, Py_ssize_t stride) noexcept nogil:
    """V for one row of TW tiles of one channel: v[xi*stride + tw] =
    (B^T d B)[xi] of the tile whose top-left input pixel is (ih0, 4*tw -
    pad_w); padding of either sign (what falls outside the input reads as
    zero). The six input rows are copied into zero-padded buffers first,
    so the transforms are plain loops along the row. Returns 0, or NaN when
    the rows read hold an Inf or NaN."""
    cdef Py_ssize_t Wp = 4 * TW + 2, i, ih, lo, hi
    cdef floating* d
    cdef floating* t = rows + 6 * Wp
    # Buffer entries [lo, hi) hold input columns lo - pad_w .. hi - 1 - pad_w.
    lo = min(max(pad_w, 0), Wp)
    hi = min(max(W + pad_w, lo), Wp)
    for i in range(6):
        d = rows + i * Wp
        ih = ih0 + i
        if ih < 0 or ih >= H or hi <= lo:
            memset(d, 0, Wp * sizeof(floating))
            continue
        memset(d, 0, lo * sizeof(floating))
        memcpy(d + lo, xc + ih * W + lo - pad_w, (hi - lo) * sizeof(floating))
        if hi < Wp:
            memset(d + hi, 0, (Wp - hi) * sizeof(floating))
    cdef floating bad
    if floating is float:
        bad = convcore_wino4_in_rows_f(rows, t, Wp)
        for i in range(6):
            convcore_wino4_in_cols_f(t + i * Wp, v + 6 * i * stride, stride, TW)
    else:
        bad = convcore_wino4_in_rows_d(rows, t, Wp)
        for i in range(6):
            convcore_wino4_in_cols_d(t + i * Wp, v + 6 * i * stride, stride, TW)
    return bad


cdef floating _transform_input_block(const floating* x, Py_ssize_t C, Py_ssize_t H,
                                 Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                                 Py_ssize_t pad_h, Py_ssize_t pad_w,
                                 Py_ssize_t row0, Py_ssize_t row1,
                                 floating* v, floating* rows) noexcept nogil:
    """V[xi][c][t] for tile rows [row0, row1) of the batch, t = (row -
    row0) * TW + tw. Returns 0, or NaN if x held an Inf or NaN there."""
    cdef Py_ssize_t TH = (OH + 3) // 4, TW = (OW + 3) // 4
    cdef Py_ssize_t TB = (row1 - row0) * TW, c, row, n, th
    cdef floating bad = 0
    for c in range(C):
        for row in range(row0, row1):
            n = row // TH
            th = row % TH
            bad += _input_row(x + (n * C + c) * H * W, H, W, 4 * th - pad_h, pad_w, TW,
                              rows, v + c * TB + (row - row0) * TW, plane(C, TB))
    return bad


cdef floating _forward_block(const floating* x, const floating* u,
                         const floating* bias, floating* y,
                         Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t K, Py_ssize_t OH, Py_ssize_t OW,
                         Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t G,
                         Py_ssize_t row0, Py_ssize_t row1,
                         floating* v, floating* m, floating* rows) noexcept nogil:
    """Tile rows [row0, row1) of the batch (row = n * TH + th). Returns 0,
    or NaN if x held an Inf or NaN there."""
    cdef Py_ssize_t TH = (OH + 3) // 4, TW = (OW + 3) // 4
    cdef Py_ssize_t TB = (row1 - row0) * TW, Cg = C // G, Kg = K // G
    cdef Py_ssize_t k, row, n, th, xi, g, q, oh
    cdef bint whole
    cdef floating b
    cdef floating* yk
    cdef floating bad = _transform_input_block(x, C, H, W, OH, OW, pad_h, pad_w,
                                               row0, row1, v, rows)
    for xi in range(36):
        for g in range(G):
            gemm(False, False, <int> Kg, <int> TB, <int> Cg, <floating> 1,
                 u + (xi * K + g * Kg) * Cg, <int> Cg,
                 v + xi * plane(C, TB) + g * Cg * TB, <int> TB, <floating> 0,
                 m + xi * plane(K, TB) + g * Kg * TB, <int> TB)
    for k in range(K):
        b = bias[k] if bias != NULL else 0
        for row in range(row0, row1):
            n = row // TH
            th = row % TH
            yk = y + (n * K + k) * OH * OW + 4 * th * OW
            # Whole tiles go straight to y; a row of tiles cut by the
            # output's edge goes through the row buffer.
            whole = 4 * th + 4 <= OH and OW == 4 * TW
            if floating is float:
                convcore_wino4_out_f(m + k * TB + (row - row0) * TW, plane(K, TB), b,
                                     yk if whole else rows, OW if whole else 4 * TW, TW)
            else:
                convcore_wino4_out_d(m + k * TB + (row - row0) * TW, plane(K, TB), b,
                                     yk if whole else rows, OW if whole else 4 * TW, TW)
            if not whole:
                for q in range(min(4, OH - 4 * th)):
                    memcpy(yk + q * OW, rows + q * 4 * TW, OW * sizeof(floating))
    return bad


cdef floating _weight_grad_block(const floating* x, const floating* grad_y,
                             floating* du, Py_ssize_t C, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t K, Py_ssize_t OH,
                             Py_ssize_t OW, Py_ssize_t pad_h, Py_ssize_t pad_w,
                             Py_ssize_t G, Py_ssize_t row0, Py_ssize_t row1,
                             floating* v, floating* dm, floating* rows) noexcept nogil:
    """dU[xi][g] (Kg x Cg) += dM[xi][g] (Kg x TB) @ V[xi][g]^T (TB x Cg)
    for tile rows [row0, row1): the adjoint of the forward's GEMMs.
    Returns 0, or NaN if x or grad_y held an Inf or NaN there."""
    cdef Py_ssize_t TH = (OH + 3) // 4, TW = (OW + 3) // 4
    cdef Py_ssize_t TB = (row1 - row0) * TW, Cg = C // G, Kg = K // G
    cdef Py_ssize_t k, row, n, th, xi, g, q
    cdef const floating* gyk
    cdef const floating* src
    cdef Py_ssize_t ld
    cdef floating bad = _transform_input_block(x, C, H, W, OH, OW, pad_h, pad_w,
                                               row0, row1, v, rows)
    for k in range(K):
        for row in range(row0, row1):
            n = row // TH
            th = row % TH
            gyk = grad_y + (n * K + k) * OH * OW + 4 * th * OW
            src, ld = gyk, OW
            if 4 * th + 4 > OH or OW != 4 * TW:
                # A row of tiles cut by the output's edge: zero-padded copy.
                memset(rows, 0, 16 * TW * sizeof(floating))
                for q in range(min(4, OH - 4 * th)):
                    memcpy(rows + q * 4 * TW, gyk + q * OW, OW * sizeof(floating))
                src, ld = rows, 4 * TW
            if floating is float:
                bad += convcore_wino4_grad_f(src, ld, dm + k * TB + (row - row0) * TW,
                                             plane(K, TB), TW)
            else:
                bad += convcore_wino4_grad_d(src, ld, dm + k * TB + (row - row0) * TW,
                                             plane(K, TB), TW)
    for xi in range(36):
        for g in range(G):
            gemm(False, True, <int> Kg, <int> Cg, <int> TB, <floating> 1,
                 dm + xi * plane(K, TB) + g * Kg * TB, <int> TB,
                 v + xi * plane(C, TB) + g * Cg * TB, <int> TB, <floating> 1,
                 du + (xi * K + g * Kg) * Cg, <int> Cg)
    return bad


# The interface is conv_winograd's (its F(2x2) sibling), so the caller
# treats the two alike; this one takes dilation 1 only.
POINTS = 36     # points of the transformed tile: GEMMs per block


cdef _undilated(Py_ssize_t dh, Py_ssize_t dw):
    if dh != 1 or dw != 1:
        raise ValueError(f"conv_winograd4: dilation 1 only, got ({dh}, {dw})")


def tile_grid(Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t dh, Py_ssize_t dw):
    """(tile rows per image, tiles per tile row) of an OH x OW output."""
    _undilated(dh, dw)
    return (OH + 3) // 4, (OW + 3) // 4


def scratch_elements(Py_ssize_t C, Py_ssize_t K, Py_ssize_t OW, Py_ssize_t dw,
                     Py_ssize_t rows_per_block):
    """Elements one thread's scratch holds: V (36 planes of C*TB), M (36
    of K*TB) and the row buffers, TB = rows_per_block * ceil(OW/4)."""
    _undilated(1, dw)
    cdef Py_ssize_t TW = (OW + 3) // 4, TB = rows_per_block * TW
    return 36 * (plane(C, TB) + plane(K, TB)) + row_scratch(TW)


def forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u,
            const floating[::1] bias, floating[:, :, :, ::1] y,
            Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t dh, Py_ssize_t dw,
            Py_ssize_t groups, Py_ssize_t rows_per_block, int num_threads):
    """y = conv3x3(x) + bias, stride 1, dilation (dh, dw) = (1, 1),
    padding (pad_h, pad_w) top/left (either sign; the output size gives
    the bottom/right). u: transformed weights (36, K, C/groups) from
    transform_weights; bias of size K or 0. x (N, C, H, W), y (N, K, OH,
    OW). rows_per_block >= 1 tile rows (of 4 output rows) per work block;
    scratch per thread: scratch_elements(C, K, OW, 1, rows_per_block).
    Returns False when x held an Inf or NaN: the transforms spread it over
    whole tiles, so y is then to be computed another way.        OUT: y"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = y.shape[1], OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t TH = (OH + 3) // 4, TW = (OW + 3) // 4
    cdef Py_ssize_t rpb = rows_per_block, total = N * TH
    cdef Py_ssize_t nblocks = (total + rpb - 1) // rpb
    cdef Py_ssize_t TB = rpb * TW
    cdef Py_ssize_t vsize = 36 * plane(C, TB), msize = 36 * plane(K, TB)
    cdef Py_ssize_t per = vsize + msize + row_scratch(TW)
    cdef Py_ssize_t blk
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* scratch
    cdef floating* mine
    cdef floating bad = 0
    _undilated(dh, dw)
    if total == 0:
        return True
    if num_threads > nblocks:
        num_threads = <int> nblocks
    scratch = <floating*> malloc(num_threads * per * sizeof(floating))
    if scratch == NULL:
        raise MemoryError(f"convcore: cannot allocate {num_threads} x {per} Winograd scratch")
    try:
        with nogil:
            for blk in prange(nblocks, schedule='static', num_threads=num_threads):
                mine = scratch + omp_get_thread_num() * per
                bad += _forward_block(&x[0, 0, 0, 0], &u[0, 0, 0], b, &y[0, 0, 0, 0],
                                      C, H, W, K, OH, OW, pad_h, pad_w, groups,
                                      blk * rpb, min((blk + 1) * rpb, total),
                                      mine, mine + vsize, mine + vsize + msize)
    finally:
        free(scratch)
    return bad == 0


def backward_weight(const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] grad_y,
                    floating[:, :, ::1] du, Py_ssize_t pad_h, Py_ssize_t pad_w,
                    Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                    Py_ssize_t rows_per_block, int num_threads):
    """du (36, K, C/groups), overwritten: the gradient with respect to the
    transformed weights U (untransform_weight_grad maps it back). Scratch
    as forward's, plus NUM_WEIGHT_GRAD_CHUNKS * 36*K*C/groups partial
    sums. Returns False when x or grad_y held an Inf or NaN.     OUT: du"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad_y.shape[1], OH = grad_y.shape[2], OW = grad_y.shape[3]
    cdef Py_ssize_t TH = (OH + 3) // 4, TW = (OW + 3) // 4
    cdef Py_ssize_t rpb = rows_per_block, total = N * TH
    cdef Py_ssize_t nblocks = (total + rpb - 1) // rpb
    cdef Py_ssize_t nchunks = min(nblocks, <Py_ssize_t> NUM_PARTIALS)
    cdef Py_ssize_t TB = rpb * TW, usize = 36 * K * (C // groups)
    cdef Py_ssize_t vsize = 36 * plane(C, TB), msize = 36 * plane(K, TB)
    cdef Py_ssize_t per = vsize + msize + row_scratch(TW)
    cdef Py_ssize_t chunk, blk
    cdef floating bad = 0
    cdef floating* scratch
    cdef floating* partials
    cdef floating* mine
    cdef floating* out = &du[0, 0, 0]
    _undilated(dh, dw)
    memset(out, 0, usize * sizeof(floating))
    if total == 0:
        return True
    if num_threads > nchunks:
        num_threads = <int> nchunks
    partials = <floating*> malloc(nchunks * usize * sizeof(floating))
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
                # Zeroed by the thread that sums into it, not serially before.
                memset(partials + chunk * usize, 0, usize * sizeof(floating))
                for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
                    bad += _weight_grad_block(&x[0, 0, 0, 0], &grad_y[0, 0, 0, 0],
                                              partials + chunk * usize, C, H, W, K, OH, OW,
                                              pad_h, pad_w, groups, blk * rpb,
                                              min((blk + 1) * rpb, total), mine,
                                              mine + vsize, mine + vsize + msize)
            sum_partials(partials, nchunks, usize, out, num_threads)
    finally:
        free(scratch)
        free(partials)
    return bad == 0
NUM_WEIGHT_GRAD_CHUNKS = NUM_PARTIALS


# The weight transform and its adjoint, one pass each (as conv_winograd's):
# G = ( 1/4     0     0 )
#     (-1/6  -1/6  -1/6 )
#     (-1/6   1/6  -1/6 )
#     ( 1/24  1/12  1/6 )
#     ( 1/24 -1/12  1/6 )
#     ( 0       0     1 )
cdef inline void _g_rows(floating a0, floating a1, floating a2, floating* out,
                         Py_ssize_t step) noexcept nogil:
    """out[i*step] = (G a)[i]. (Multiplies by 1/6 rather than dividing:
    divisions were most of the transform's time; the results differ by an
    ulp at most.)"""
    cdef floating sixth = <floating> (1.0 / 6.0)
    cdef floating even = a0 + a2, big = a0 * <floating> 0.25 + a2
    out[0] = a0 * <floating> 0.25
    out[step] = -(even + a1) * sixth
    out[2 * step] = -(even - a1) * sixth
    out[3 * step] = (big + a1 * <floating> 0.5) * sixth
    out[4 * step] = (big - a1 * <floating> 0.5) * sixth
    out[5 * step] = a2


cdef inline void _gt_rows(const floating* b, Py_ssize_t bstep, floating* out,
                          Py_ssize_t step) noexcept nogil:
    """out[r*step] = (G^T b)[r], b[i*bstep] for i < 6: the adjoint of _g_rows."""
    cdef floating b0 = b[0], b1 = b[bstep], b2 = b[2 * bstep]
    cdef floating b3 = b[3 * bstep], b4 = b[4 * bstep], b5 = b[5 * bstep]
    cdef floating sixth = <floating> (1.0 / 6.0)
    cdef floating s12 = (b1 + b2) * sixth, s34 = (b3 + b4) * sixth
    out[0] = b0 * <floating> 0.25 - s12 + s34 * <floating> 0.25
    out[step] = ((b2 - b1) + (b3 - b4) * <floating> 0.5) * sixth
    out[2 * step] = -s12 + s34 + b5


# Filters go CB at a time through a small buffer, so that U's 36 planes
# (and dU's) are written (read) CB elements at a time: the planes are K*Cg
# apart, often a multiple of 4 KiB, and a filter at a time touched all 36
# in the same L1 sets (measured: 512x512 filters 38 ms, blocked ~7 ms).
cdef enum:
    CB = 32


cdef void _transform_filters(const floating* w, Py_ssize_t cb, floating* u,
                             Py_ssize_t plane_) noexcept nogil:
    """u[(6i+j)*plane_ + c] = (G w_c G^T)[i, j] for cb consecutive filters
    w_c = w + 9c."""
    cdef floating t[18]
    cdef floating buf[36 * CB]
    cdef Py_ssize_t c, i
    cdef const floating* g
    for c in range(cb):
        g = w + 9 * c
        for i in range(3):      # t (6 x 3) = G g, column by column
            _g_rows(g[i], g[3 + i], g[6 + i], t + i, 3)
        for i in range(6):      # u = t G^T, row by row
            _g_rows(t[3 * i], t[3 * i + 1], t[3 * i + 2], buf + 6 * i * CB + c, CB)
    for i in range(36):
        memcpy(u + i * plane_, buf + i * CB, cb * sizeof(floating))


cdef void _untransform_filters(const floating* du, Py_ssize_t plane_, Py_ssize_t cb,
                               floating* grad_w) noexcept nogil:
    """grad_w[9c..9c+9) = G^T D_c G, D_c[i, j] = du[(6i+j)*plane_ + c], for
    cb consecutive filters."""
    cdef floating t[18]
    cdef floating buf[36 * CB]
    cdef Py_ssize_t c, i
    for i in range(36):
        memcpy(buf + i * CB, du + i * plane_, cb * sizeof(floating))
    for c in range(cb):
        for i in range(6):      # t (6 x 3) = D G, row by row
            _gt_rows(buf + 6 * i * CB + c, CB, t + 3 * i, 1)
        for i in range(3):      # grad_w = G^T t, column by column
            _gt_rows(t + i, 3, grad_w + 9 * c + i, 3)


def transform_weights(const floating[:, :, :, ::1] w, floating[:, :, ::1] u):
    """u[6i+j, k, c] = (G w[k, c] G^T)[i, j]: w (K, Cg, 3, 3), u (36, K, Cg).
                                                                 OUT: u"""
    cdef Py_ssize_t K = w.shape[0], Cg = w.shape[1], k, c0, blk
    if K == 0 or Cg == 0:
        return
    with nogil:
        for k in range(K):
            for blk in range((Cg + CB - 1) // CB):
                c0 = blk * CB
                _transform_filters(&w[k, c0, 0, 0], min(<Py_ssize_t> CB, Cg - c0),
                                   &u[0, k, c0], K * Cg)


def untransform_weight_grad(const floating[:, :, ::1] du, floating[:, :, :, ::1] grad_w):
    """grad_w[k, c] = G^T D G with D[i, j] = du[6i+j, k, c], the adjoint of
    transform_weights: du (36, K, Cg), grad_w (K, Cg, 3, 3).     OUT: grad_w"""
    cdef Py_ssize_t K = grad_w.shape[0], Cg = grad_w.shape[1], k, c0, blk
    if K == 0 or Cg == 0:
        return
    with nogil:
        for k in range(K):
            for blk in range((Cg + CB - 1) // CB):
                c0 = blk * CB
                _untransform_filters(&du[0, k, c0], K * Cg, min(<Py_ssize_t> CB, Cg - c0),
                                     &grad_w[k, c0, 0, 0])
