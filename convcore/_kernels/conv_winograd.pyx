"""Winograd F(2x2, 3x3) convolution: stride 1, any dilation, 3x3 kernels.

Each 4x4 input tile d (overlapping by 2) gives a 2x2 output tile
    Y = A^T [ (G g G^T) . (B^T d B) ] A
so the 36 multiplies per output tile and channel pair of a direct 3x3
become 16, done as 16 GEMMs over channels (Lavin & Gray 2015):
    M[xi] (K x T) = U[xi] (K x C) @ V[xi] (C x T),   xi = 0..15.

Dilation (dh, dw) is done in place, without copies: the output pixels of
one phase (oh mod dh, ow mod dw) = (a, b) form an undilated 3x3
convolution of the input pixels (a - pad_h + dh*i, b - pad_w + dw*j), so a
2x2 output tile is the pixels (oh0 + dh*{0,1}, ow0 + dw*{0,1}) and its 4x4
input tile is rows oh0 - pad_h + dh*{0..3}, columns likewise. A tile row
is one row phase a and tile index ti, holding the tiles of every column
phase b side by side (segment b); the input gather reads with stride dw
and the output scatter writes with stride dw, the transforms between
them are those of dilation 1. Padding may be anything, negative included
(backward-data runs with 2*d - pad): whatever falls outside the input
reads as zero, and the output size gives the bottom/right padding.

Work is split into blocks of whole tile rows taken across the batch (so
small images still give the BLAS long rows; how many rows is the caller's
choice, convcore.algorithms.WinogradConv); the transforms run along tile
rows, so they vectorise. Each thread owns one block at a time with its
own V and M scratch (16*C*TB and 16*K*TB elements: bounded, never a
whole-batch matrix) and calls the BLAS single-threaded (the caller holds
it to one thread: one owner at a time). The weight transform U = G g G^T
(transform_weights) is computed once per call by the caller.
Backward-data is the same forward, run on grad_y with the kernel flipped
and transposed, the same dilation and padding 2*d - pad (convcore.algorithms
does that). The drivers report an Inf or NaN in the images they read (the
transforms would spread it over whole tiles), so that the caller can
recompute the layer another way.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from convcore._kernels._openmp cimport omp_get_thread_num
from convcore._kernels.blas cimport gemm
from convcore._kernels.partials cimport NUM_PARTIALS, sum_partials

# Tile geometry of one output axis of n pixels at dilation d: pixels a,
# a + d, a + 2d, ... form phase a, and each phase is cut into 2-pixel tiles
# (its last may be half out). Phase a has q + (a < r) pixels, (q, r) =
# divmod(n, d), so only two tile counts occur and no loop below divides.
cdef struct Axis:
    Py_ssize_t d            # dilation
    Py_ssize_t q, r         # phase a has q + (a < r) pixels
    Py_ssize_t phases       # non-empty phases: min(d, n)
    Py_ssize_t long_tiles   # tiles of a phase a < r
    Py_ssize_t short_tiles  # tiles of a phase a >= r
    Py_ssize_t tiles        # over all phases


cdef inline Axis _axis(Py_ssize_t n, Py_ssize_t d) noexcept nogil:
    cdef Axis ax
    ax.d = d
    ax.q = n // d
    ax.r = n % d
    ax.phases = min(d, n)
    ax.long_tiles = (ax.q + 2) // 2
    ax.short_tiles = (ax.q + 1) // 2
    ax.tiles = ax.r * ax.long_tiles + (ax.phases - ax.r) * ax.short_tiles
    return ax


cdef inline Py_ssize_t _row_width(const Axis* cols) noexcept nogil:
    """Width of the zero-padded input row buffers: segment b (column phase
    b) holds the 2*tiles + 2 input columns its tiles read."""
    return 2 * cols.tiles + 2 * cols.phases


# Where a tile row of the batch is: tile rows go image after image, and
# within an image phase after phase (phase 0's first). Blocks walk their
# rows with _next_row, no division per row.
cdef struct RowCursor:
    Py_ssize_t n      # image
    Py_ssize_t a      # row phase
    Py_ssize_t ti     # tile within the phase
    Py_ssize_t oh0    # its first output row, a + 2*d*ti


cdef inline RowCursor _row_cursor(const Axis* ax, Py_ssize_t row) noexcept nogil:
    cdef RowCursor cur
    cdef Py_ssize_t t, head = ax.r * ax.long_tiles
    cur.n = row // ax.tiles
    t = row - cur.n * ax.tiles
    if t < head:
        cur.a = t // ax.long_tiles
        cur.ti = t - cur.a * ax.long_tiles
    else:
        t -= head
        cur.a = ax.r + t // ax.short_tiles
        cur.ti = t - (cur.a - ax.r) * ax.short_tiles
    cur.oh0 = cur.a + 2 * ax.d * cur.ti
    return cur


cdef inline void _next_row(const Axis* ax, RowCursor* cur) noexcept nogil:
    cur.ti += 1
    cur.oh0 += 2 * ax.d
    if cur.ti == (ax.long_tiles if cur.a < ax.r else ax.short_tiles):
        cur.ti = 0
        cur.a += 1
        if cur.a == ax.phases:      # every phase has a tile: q + (a < r) >= 1
            cur.a = 0
            cur.n += 1
        cur.oh0 = cur.a


cdef Py_ssize_t _scratch_per_thread(Py_ssize_t C, Py_ssize_t K, const Axis* cols,
                                    Py_ssize_t rows_per_block) noexcept nogil:
    """Elements of one thread's scratch: V (16*C*TB), M (16*K*TB) and the
    eight input row buffers (the output rows reuse them)."""
    return 16 * (C + K) * rows_per_block * cols.tiles + 8 * _row_width(cols)


def tile_grid(Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t dh, Py_ssize_t dw):
    """(tile rows per image, tiles per tile row) for an OH x OW output at
    dilation (dh, dw): the caller's block size is counted in these."""
    return _axis(OH, dh).tiles, _axis(OW, dw).tiles


def scratch_elements(Py_ssize_t C, Py_ssize_t K, Py_ssize_t OW, Py_ssize_t dw,
                     Py_ssize_t rows_per_block):
    """Scratch elements one thread of forward/backward_weight allocates
    (C input and K output channels, output width OW at dilation dw)."""
    cdef Axis cols = _axis(OW, dw)
    return _scratch_per_thread(C, K, &cols, rows_per_block)


cdef floating _input_row(const floating* xc, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t ih0, Py_ssize_t dh, Py_ssize_t pad_w,
                         const Axis* cols, floating* rows, floating* v,
                         Py_ssize_t stride) noexcept nogil:
    """V for one row of cols.tiles tiles of one channel: v[xi*stride + t]
    = (B^T d B)[xi] of tile t, whose input rows are ih0 + dh*{0..3}. Tile t
    is tile j of column phase b (segment b; b's tiles follow those of
    phases 0..b-1) and reads input columns b - pad_w + dw*(2j + {0..3}).
    The four input rows are first copied into zero-padded buffers, segment
    after segment, so every step below is a plain loop along the row that
    vectorises. rows: scratch of 8 * _row_width(cols) elements. Returns
    0, or NaN when the rows read hold an Inf or NaN (the row step's
    check)."""
    cdef Py_ssize_t Wp = _row_width(cols), dw = cols.d
    cdef Py_ssize_t i, lo, hi, b, iw0, seg, tw, off
    cdef floating* d
    cdef floating* t0 = rows + 4 * Wp
    cdef floating bad
    cdef bint inside[4]
    for i in range(4):
        inside[i] = 0 <= ih0 + dh * i < H
        if not inside[i]:
            memset(rows + i * Wp, 0, Wp * sizeof(floating))
    off = 0
    for b in range(cols.phases):
        seg = 2 * (cols.long_tiles if b < cols.r else cols.short_tiles) + 2
        # Buffer entries [lo, hi) of the segment are inside the image: a
        # walk in from each end, no division (the padding is a few steps).
        iw0 = b - pad_w                     # input column of the segment's first entry
        lo = 0
        while lo < seg and iw0 + dw * lo < 0:
            lo += 1
        hi = seg
        while hi > lo and iw0 + dw * (hi - 1) >= W:
            hi -= 1
        for i in range(4):
            if not inside[i]:
                continue
            d = rows + i * Wp + off
            if lo > 0:
                memset(d, 0, lo * sizeof(floating))
            if floating is float:
                convcore_gather_f(xc + (ih0 + dh * i) * W + iw0 + dw * lo, dw, d + lo, hi - lo)
            else:
                convcore_gather_d(xc + (ih0 + dh * i) * W + iw0 + dw * lo, dw, d + lo, hi - lo)
            if hi < seg:
                memset(d + hi, 0, (seg - hi) * sizeof(floating))
        off += seg
    # B^T d along the rows, then B along the columns of each tile, segment
    # by segment.
    if floating is float:
        bad = convcore_wino_in_rows_f(rows, t0, Wp)
    else:
        bad = convcore_wino_in_rows_d(rows, t0, Wp)
    for i in range(4):
        seg = 0
        off = 0
        for b in range(cols.phases):
            tw = cols.long_tiles if b < cols.r else cols.short_tiles
            if floating is float:
                convcore_wino_in_cols_f(t0 + i * Wp + seg, v + 4 * i * stride + off, stride, tw)
            else:
                convcore_wino_in_cols_d(t0 + i * Wp + seg, v + 4 * i * stride + off, stride, tw)
            seg += 2 * tw + 2
            off += tw
    return bad


# The output transform and the input transform's row and column steps in
# C, for the same reason as the adjoint below: many load/store streams per
# iteration, which the vectoriser only takes with omp simd's no-dependence
# promise (the row step's rows and results share one buffer).
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
    /* The row step also returns the sum of u - u over results u that see
       every input: 0, or NaN when an input is Inf or NaN (or a sum of two
       overflows: a false alarm). */
    #define CONVCORE_WINO_IN_ROWS(NAME, T)                                    \
    static T NAME(const T* r, T* t, Py_ssize_t n) {                           \
        T bad = 0;                                                            \
        _Pragma("omp simd reduction(+:bad)")                                  \
        for (Py_ssize_t j = 0; j < n; ++j) {                                  \
            T t0 = r[j] - r[2 * n + j], t1 = r[n + j] + r[2 * n + j];         \
            T t3 = r[n + j] - r[3 * n + j];                                   \
            t[j] = t0;                                                        \
            t[n + j] = t1;                                                    \
            t[2 * n + j] = r[2 * n + j] - r[n + j];                           \
            t[3 * n + j] = t3;                                                \
            bad += (t0 - t0) + (t1 - t1) + (t3 - t3);                         \
        }                                                                     \
        return bad;                                                           \
    }
    /* The dilated rows' gather (dst[j] = src[s*j]) and scatter (dst[s*j]
       = src[j]); DST and SRC give the index of step j at stride s. Stride
       2 gets its own loop, which vectorises as loads and shuffles; other
       strides stay scalar. */
    #define CONVCORE_STRIDED(NAME, T, DST, SRC)                               \
    static void NAME(const T* src, Py_ssize_t s, T* dst, Py_ssize_t n) {      \
        if (s == 1) {                                                         \
            memcpy(dst, src, n * sizeof(T));                                  \
        } else if (s == 2) {                                                  \
            _Pragma("omp simd")                                               \
            for (Py_ssize_t j = 0; j < n; ++j) dst[DST(2, j)] = src[SRC(2, j)]; \
        } else {                                                              \
            for (Py_ssize_t j = 0; j < n; ++j) dst[DST(s, j)] = src[SRC(s, j)]; \
        }                                                                     \
    }
    #define CONVCORE_AT_STRIDE(s, j) ((s) * (j))
    #define CONVCORE_AT_UNIT(s, j) (j)
    CONVCORE_WINO_OUT_ROW(convcore_wino_out_row_f, float)
    CONVCORE_WINO_OUT_ROW(convcore_wino_out_row_d, double)
    CONVCORE_WINO_IN_COLS(convcore_wino_in_cols_f, float)
    CONVCORE_WINO_IN_COLS(convcore_wino_in_cols_d, double)
    CONVCORE_WINO_IN_ROWS(convcore_wino_in_rows_f, float)
    CONVCORE_WINO_IN_ROWS(convcore_wino_in_rows_d, double)
    CONVCORE_STRIDED(convcore_gather_f, float, CONVCORE_AT_UNIT, CONVCORE_AT_STRIDE)
    CONVCORE_STRIDED(convcore_gather_d, double, CONVCORE_AT_UNIT, CONVCORE_AT_STRIDE)
    CONVCORE_STRIDED(convcore_scatter_f, float, CONVCORE_AT_STRIDE, CONVCORE_AT_UNIT)
    CONVCORE_STRIDED(convcore_scatter_d, double, CONVCORE_AT_STRIDE, CONVCORE_AT_UNIT)
    """
    void convcore_wino_out_row_f(const float* m, Py_ssize_t s, float b, float* top,
                                 float* bottom, Py_ssize_t TW) noexcept nogil
    void convcore_wino_out_row_d(const double* m, Py_ssize_t s, double b, double* top,
                                 double* bottom, Py_ssize_t TW) noexcept nogil
    void convcore_wino_in_cols_f(const float* t, float* v, Py_ssize_t s,
                                 Py_ssize_t TW) noexcept nogil
    void convcore_wino_in_cols_d(const double* t, double* v, Py_ssize_t s,
                                 Py_ssize_t TW) noexcept nogil
    float convcore_wino_in_rows_f(const float* r, float* t, Py_ssize_t n) noexcept nogil
    double convcore_wino_in_rows_d(const double* r, double* t, Py_ssize_t n) noexcept nogil
    void convcore_gather_f(const float* src, Py_ssize_t s, float* dst,
                           Py_ssize_t n) noexcept nogil
    void convcore_gather_d(const double* src, Py_ssize_t s, double* dst,
                           Py_ssize_t n) noexcept nogil
    void convcore_scatter_f(const float* src, Py_ssize_t s, float* dst,
                            Py_ssize_t n) noexcept nogil
    void convcore_scatter_d(const double* src, Py_ssize_t s, double* dst,
                            Py_ssize_t n) noexcept nogil


cdef void _scatter_row(const floating* src, floating* dst,
                       const Axis* cols) noexcept nogil:
    """One output row from a tile row's values, segment after segment:
    dst[b + dw*j] = segment b's value j (segment b is 2 per tile long)."""
    cdef Py_ssize_t b, n
    for b in range(cols.phases):
        n = cols.q + (b < cols.r)
        if floating is float:
            convcore_scatter_f(src, cols.d, dst + b, n)
        else:
            convcore_scatter_d(src, cols.d, dst + b, n)
        src += n + (n & 1)


cdef void _gather_row(const floating* src, floating* dst,
                      const Axis* cols) noexcept nogil:
    """The inverse of _scatter_row; a segment of odd length gets a zero
    past the output's edge, so its last tile is whole."""
    cdef Py_ssize_t b, n
    for b in range(cols.phases):
        n = cols.q + (b < cols.r)
        if floating is float:
            convcore_gather_f(src + b, cols.d, dst, n)
        else:
            convcore_gather_d(src + b, cols.d, dst, n)
        if n & 1:
            dst[n] = 0
        dst += n + (n & 1)


# The geometry of one call, shared by its blocks.
cdef struct Geom:
    Py_ssize_t C, H, W          # input
    Py_ssize_t K, OH, OW        # output
    Py_ssize_t pad_h, pad_w     # top/left, any sign
    Py_ssize_t groups
    Axis rows, cols             # the output's tiling (Axis)


cdef inline Geom _geom(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t K,
                       Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t pad_h, Py_ssize_t pad_w,
                       Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups) noexcept nogil:
    cdef Geom g
    g.C, g.H, g.W, g.K, g.OH, g.OW = C, H, W, K, OH, OW
    g.pad_h, g.pad_w, g.groups = pad_h, pad_w, groups
    g.rows = _axis(OH, dh)
    g.cols = _axis(OW, dw)
    return g


cdef void _output_row(const floating* m, Py_ssize_t stride, floating b,
                      floating* yk, const Geom* g, Py_ssize_t oh0,
                      floating* out) noexcept nogil:
    """Output rows oh0, oh0 + dh of one channel from one tile row:
    Y = A^T m A + b with A^T = (1,1,1,0), (0,1,-1,-1), clipped to the
    output. out: scratch of 4 * g.cols.tiles elements."""
    cdef Py_ssize_t TW = g.cols.tiles
    cdef floating* top = out
    cdef floating* bottom = out + 2 * TW
    if floating is float:
        convcore_wino_out_row_f(m, stride, b, top, bottom, TW)
    else:
        convcore_wino_out_row_d(m, stride, b, top, bottom, TW)
    _scatter_row(top, yk + oh0 * g.OW, &g.cols)
    if oh0 + g.rows.d < g.OH:
        _scatter_row(bottom, yk + (oh0 + g.rows.d) * g.OW, &g.cols)


cdef floating _transform_input_block(const floating* x, const Geom* g,
                                     Py_ssize_t row0, Py_ssize_t row1,
                                     floating* v, floating* rows) noexcept nogil:
    """V[xi][c][t] for tile rows [row0, row1) of the batch (RowCursor's
    order), t = (row - row0) * TW + tile. Returns 0, or NaN when the
    input read holds an Inf or NaN."""
    cdef Py_ssize_t TW = g.cols.tiles, C = g.C
    cdef Py_ssize_t TB = (row1 - row0) * TW, c, row
    cdef RowCursor cur
    cdef floating bad = 0
    for c in range(C):
        cur = _row_cursor(&g.rows, row0)
        for row in range(row0, row1):
            bad += _input_row(x + (cur.n * C + c) * g.H * g.W, g.H, g.W, cur.oh0 - g.pad_h,
                       g.rows.d, g.pad_w, &g.cols, rows, v + c * TB + (row - row0) * TW,
                       C * TB)
            _next_row(&g.rows, &cur)
    return bad


# The adjoint output transform in C: its 16 output planes are separate
# store streams, which GCC's vectoriser leaves scalar unless told (omp simd:
# no dependence between iterations; -fopenmp-simd, no runtime needed).
cdef extern from *:
    """
    #define CONVCORE_WINO_GRAD_ROW(NAME, T)                                   \
    static T NAME(const T* top, const T* bottom, T* dm,                       \
                  Py_ssize_t stride, Py_ssize_t TW) {                         \
        T bad = 0;  /* as the input transform's row step */                   \
        _Pragma("omp simd reduction(+:bad)")                                  \
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
            bad += (t10 - t10) + (t11 - t11);                                 \
        }                                                                     \
        return bad;                                                           \
    }
    CONVCORE_WINO_GRAD_ROW(convcore_wino_grad_row_f, float)
    CONVCORE_WINO_GRAD_ROW(convcore_wino_grad_row_d, double)
    """
    float convcore_wino_grad_row_f(const float* top, const float* bottom, float* dm,
                                   Py_ssize_t stride, Py_ssize_t TW) noexcept nogil
    double convcore_wino_grad_row_d(const double* top, const double* bottom, double* dm,
                                    Py_ssize_t stride, Py_ssize_t TW) noexcept nogil


cdef floating _grad_output_row(const floating* gyk, const Geom* g, Py_ssize_t oh0,
                               floating* dm, Py_ssize_t stride, floating* rows) noexcept nogil:
    """The adjoint of _output_row: dM[xi*stride + t] = (A gY A^T)[xi] for
    the 2x2 output-gradient tiles of one row (zero past the output's edge),
    A = A^T transposed, rows (1,0), (1,1), (1,-1), (0,-1).
    rows: scratch of 4 * g.cols.tiles elements. Returns 0, or NaN when
    the rows read hold an Inf or NaN."""
    cdef Py_ssize_t TW = g.cols.tiles
    cdef floating* top = rows
    cdef floating* bottom = rows + 2 * TW
    _gather_row(gyk + oh0 * g.OW, top, &g.cols)
    if oh0 + g.rows.d < g.OH:
        _gather_row(gyk + (oh0 + g.rows.d) * g.OW, bottom, &g.cols)
    else:
        memset(bottom, 0, 2 * TW * sizeof(floating))
    if floating is float:
        return convcore_wino_grad_row_f(top, bottom, dm, stride, TW)
    else:
        return convcore_wino_grad_row_d(top, bottom, dm, stride, TW)


# The weight gradient's GEMMs contract over the tiles, the contiguous
# dimension of both operands; OpenBLAS runs that shape faster in output
# blocks of at most 32 x 32 than whole once there are 128 tiles or more
# (measured, 1 thread, 64 x 64 outputs over 128 / 256 tiles: 82 -> 90 /
# 83 -> 102 GFLOP/s; 128 x 128 over 256: 92 -> 101), slower with 64 or
# fewer (64 x 64 over 64: 81 -> 75).
cdef enum:
    WEIGHT_GRAD_TILE = 32
    WEIGHT_GRAD_TILE_MIN_TB = 128


cdef floating _weight_grad_block(const floating* x, const floating* grad_y,
                             floating* du, const Geom* g,
                             Py_ssize_t row0, Py_ssize_t row1,
                             floating* v, floating* dm, floating* rows) noexcept nogil:
    """dU[xi][g] (Kg x Cg) += dM[xi][g] (Kg x TB) @ V[xi][g]^T (TB x Cg)
    for tile rows [row0, row1): the adjoint of the forward's GEMMs.
    Returns 0, or NaN when x or grad_y holds an Inf or NaN."""
    cdef Py_ssize_t TW = g.cols.tiles, C = g.C, K = g.K
    cdef Py_ssize_t TB = (row1 - row0) * TW, Cg = C // g.groups, Kg = K // g.groups
    cdef Py_ssize_t k, row, xi, grp, k0, c0
    cdef RowCursor cur
    cdef floating bad = _transform_input_block(x, g, row0, row1, v, rows)
    for k in range(K):
        cur = _row_cursor(&g.rows, row0)
        for row in range(row0, row1):
            bad += _grad_output_row(grad_y + (cur.n * K + k) * g.OH * g.OW, g, cur.oh0,
                             dm + k * TB + (row - row0) * TW, K * TB, rows)
            _next_row(&g.rows, &cur)
    cdef Py_ssize_t step = WEIGHT_GRAD_TILE if TB >= WEIGHT_GRAD_TILE_MIN_TB else max(Kg, Cg)
    for xi in range(16):
        for grp in range(g.groups):
            k0 = 0
            while k0 < Kg:
                c0 = 0
                while c0 < Cg:
                    gemm(False, True, <int> min(Kg - k0, step), <int> min(Cg - c0, step),
                         <int> TB, <floating> 1, dm + (xi * K + grp * Kg + k0) * TB, <int> TB,
                         v + (xi * C + grp * Cg + c0) * TB, <int> TB, <floating> 1,
                         du + (xi * K + grp * Kg + k0) * Cg + c0, <int> Cg)
                    c0 += step
                k0 += step
    return bad


cdef floating _forward_block(const floating* x, const floating* u,
                         const floating* bias, floating* y, const Geom* g,
                         Py_ssize_t row0, Py_ssize_t row1,
                         floating* v, floating* m, floating* rows) noexcept nogil:
    """Tile rows [row0, row1) of the batch (RowCursor's order). Returns 0,
    or NaN when x holds an Inf or NaN."""
    cdef Py_ssize_t TW = g.cols.tiles, C = g.C, K = g.K
    cdef Py_ssize_t TB = (row1 - row0) * TW, Cg = C // g.groups, Kg = K // g.groups
    cdef Py_ssize_t k, row, xi, grp, k0, c0
    cdef RowCursor cur
    cdef floating bad = _transform_input_block(x, g, row0, row1, v, rows)
    # 16 GEMMs per group: M[xi][grp*Kg:][:] = U[xi][grp] @ V[xi][grp*Cg:][:].
    for xi in range(16):
        for grp in range(g.groups):
            gemm(False, False, <int> Kg, <int> TB, <int> Cg, <floating> 1,
                 u + (xi * K + grp * Kg) * Cg, <int> Cg,
                 v + (xi * C + grp * Cg) * TB, <int> TB, <floating> 0,
                 m + (xi * K + grp * Kg) * TB, <int> TB)
    # Output transform.
    for k in range(K):
        cur = _row_cursor(&g.rows, row0)
        for row in range(row0, row1):
            _output_row(m + k * TB + (row - row0) * TW, K * TB,
                        bias[k] if bias != NULL else 0,
                        y + (cur.n * K + k) * g.OH * g.OW, g, cur.oh0, rows)
            _next_row(&g.rows, &cur)
    return bad


def forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u,
            const floating[::1] bias, floating[:, :, :, ::1] y,
            Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t dil_h, Py_ssize_t dil_w,
            Py_ssize_t groups, Py_ssize_t rows_per_block, int num_threads):
    """y = conv3x3(x) + bias, stride 1, dilation (dil_h, dil_w) >= 1,
    padding (pad_h, pad_w) top/left (any sign; y's size gives the rest).
    u: transformed weights (16, K, C/groups) = G g G^T; bias of size K or
    0. x (N, C, H, W), y (N, K, OH, OW). rows_per_block >= 1: tile rows
    (tile_grid) each work block takes (the caller's choice; scratch per
    thread: scratch_elements). Returns False when x holds an Inf or NaN
    (y is then not Winograd's to give: see WinogradConv).        OUT: y"""
    cdef Geom g = _geom(x.shape[1], x.shape[2], x.shape[3], y.shape[1], y.shape[2],
                        y.shape[3], pad_h, pad_w, dil_h, dil_w, groups)
    cdef Py_ssize_t rpb = rows_per_block, total = x.shape[0] * g.rows.tiles
    cdef Py_ssize_t nblocks = (total + rpb - 1) // rpb
    cdef Py_ssize_t vsize = 16 * g.C * rpb * g.cols.tiles
    cdef Py_ssize_t per = _scratch_per_thread(g.C, g.K, &g.cols, rpb)
    cdef Py_ssize_t rows_at = per - 8 * _row_width(&g.cols)
    cdef Py_ssize_t blk
    cdef floating bad = 0
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* scratch
    cdef floating* mine
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
                bad += _forward_block(&x[0, 0, 0, 0], &u[0, 0, 0], b, &y[0, 0, 0, 0], &g,
                                      blk * rpb, min((blk + 1) * rpb, total),
                                      mine, mine + vsize, mine + rows_at)
    finally:
        free(scratch)
    return bad == 0


def backward_weight(const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] grad_y,
                    floating[:, :, ::1] du, Py_ssize_t pad_h, Py_ssize_t pad_w,
                    Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
                    Py_ssize_t rows_per_block, int num_threads):
    """du (16, K, C/groups), overwritten: the gradient with respect to the
    transformed weights U; the caller maps it back through G^T du G.
    Geometry as forward's. Scratch as forward's, plus
    NUM_WEIGHT_GRAD_CHUNKS * 16*K*C/groups partial sums. Returns False
    when x or grad_y holds an Inf or NaN.                        OUT: du"""
    cdef Geom g = _geom(x.shape[1], x.shape[2], x.shape[3], grad_y.shape[1],
                        grad_y.shape[2], grad_y.shape[3], pad_h, pad_w, dil_h, dil_w,
                        groups)
    cdef Py_ssize_t rpb = rows_per_block, total = x.shape[0] * g.rows.tiles
    cdef Py_ssize_t nblocks = (total + rpb - 1) // rpb
    cdef Py_ssize_t nchunks = min(nblocks, <Py_ssize_t> NUM_PARTIALS)
    cdef Py_ssize_t usize = 16 * g.K * (g.C // groups)
    cdef Py_ssize_t vsize = 16 * g.C * rpb * g.cols.tiles
    cdef Py_ssize_t per = _scratch_per_thread(g.C, g.K, &g.cols, rpb)
    cdef Py_ssize_t rows_at = per - 8 * _row_width(&g.cols)
    cdef Py_ssize_t chunk, blk
    cdef floating bad = 0
    cdef floating* scratch
    cdef floating* partials
    cdef floating* mine
    cdef floating* out = &du[0, 0, 0]
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
                                              partials + chunk * usize, &g, blk * rpb,
                                              min((blk + 1) * rpb, total), mine,
                                              mine + vsize, mine + rows_at)
            sum_partials(partials, nchunks, usize, out, num_threads)
    finally:
        free(scratch)
        free(partials)
    return bad == 0
NUM_WEIGHT_GRAD_CHUNKS = NUM_PARTIALS
POINTS = 16     # points of the transformed tile: GEMMs per block


# The weight transform and its adjoint. Small (16 * K * C/groups outputs),
# but in NumPy (einsum) they cost about as much per call as the serial
# part of a whole 64-channel layer; here they are one pass.
cdef inline void _g_rows(floating a0, floating a1, floating a2, floating* out,
                         Py_ssize_t step) noexcept nogil:
    """out[i*step] = (G a)[i], G = (1,0,0), (1/2,1/2,1/2), (1/2,-1/2,1/2), (0,0,1)."""
    out[0] = a0
    out[step] = (a0 + a1 + a2) * <floating> 0.5
    out[2 * step] = (a0 - a1 + a2) * <floating> 0.5
    out[3 * step] = a2


cdef inline void _gt_rows(floating b0, floating b1, floating b2, floating b3,
                          floating* out, Py_ssize_t step) noexcept nogil:
    """out[r*step] = (G^T b)[r], the adjoint of _g_rows."""
    out[0] = b0 + (b1 + b2) * <floating> 0.5
    out[step] = (b1 - b2) * <floating> 0.5
    out[2 * step] = b3 + (b1 + b2) * <floating> 0.5


def transform_weights(const floating[:, :, :, ::1] w, floating[:, :, ::1] u):
    """u[4i+j, k, c] = (G w[k, c] G^T)[i, j]: w (K, Cg, 3, 3), u (16, K, Cg).
                                                                 OUT: u"""
    cdef Py_ssize_t K = w.shape[0], Cg = w.shape[1], plane = K * Cg, k, c, i
    cdef floating t[12]
    cdef const floating* g
    cdef floating* out
    with nogil:
        for k in range(K):
            for c in range(Cg):
                g = &w[k, c, 0, 0]
                for i in range(3):      # t (4 x 3) = G g, column by column
                    _g_rows(g[i], g[3 + i], g[6 + i], t + i, 3)
                out = &u[0, k, c]
                for i in range(4):      # u = t G^T, row by row
                    _g_rows(t[3 * i], t[3 * i + 1], t[3 * i + 2], out + 4 * i * plane, plane)


def untransform_weight_grad(const floating[:, :, ::1] du, floating[:, :, :, ::1] grad_w):
    """grad_w[k, c] = G^T D G with D[i, j] = du[4i+j, k, c], the adjoint of
    transform_weights: du (16, K, Cg), grad_w (K, Cg, 3, 3).     OUT: grad_w"""
    cdef Py_ssize_t K = grad_w.shape[0], Cg = grad_w.shape[1], plane = K * Cg, k, c, i
    cdef floating t[12]
    cdef const floating* d
    cdef floating* out
    with nogil:
        for k in range(K):
            for c in range(Cg):
                d = &du[0, k, c]
                for i in range(4):      # t (4 x 3) = D G, row by row
                    _gt_rows(d[4 * i * plane], d[(4 * i + 1) * plane], d[(4 * i + 2) * plane],
                             d[(4 * i + 3) * plane], t + 3 * i, 1)
                out = &grad_w[k, c, 0, 0]
                for i in range(3):      # grad_w = G^T t, column by column
                    _gt_rows(t[i], t[3 + i], t[6 + i], t[9 + i], out + i, 3)
