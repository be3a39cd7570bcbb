"""Winograd F(2x2, 3x3) convolution: stride 1, dilation 1, 3x3 kernels.

Each 4x4 input tile d (overlapping by 2) gives a 2x2 output tile
    Y = A^T [ (G g G^T) . (B^T d B) ] A
so the 36 multiplies per output tile and channel pair of a direct 3x3
become 16, done as 16 GEMMs over channels (Lavin & Gray 2015):
    M[xi] (K x T) = U[xi] (K x C) @ V[xi] (C x T),   xi = 0..15.

Work is split into blocks of whole tile rows, about TILE_BLOCK output
tiles taken across the batch (so small images still give the BLAS long
rows); the transforms run along tile rows, so they vectorise. Each thread
owns one block at a time with its own V and M scratch (16*C*TB and
16*K*TB elements: bounded, never a whole-batch matrix) and calls the BLAS
single-threaded (the caller holds it to one thread: one owner at a time).
The weight transform U = G g G^T is computed once per call by the caller.
Backward-data is the same forward, run on grad_y with the kernel flipped
and transposed and padding 2 - pad (convcore.algorithms does that).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from convcore._kernels._openmp cimport omp_get_thread_num
from convcore._kernels.blas cimport gemm

# Output tiles per work block; 16*C*TB floats of V per thread.
cdef enum:
    TILE_BLOCK = 192
TILES_PER_BLOCK = TILE_BLOCK


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
    cdef floating* ti
    cdef floating* v0
    cdef floating* v1
    cdef floating* v2
    cdef floating* v3
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
        ti = t0 + i * Wp
        v0 = v + (4 * i) * stride
        v1 = v0 + stride
        v2 = v1 + stride
        v3 = v2 + stride
        for j in range(TW):
            v0[j] = ti[2 * j] - ti[2 * j + 2]
            v1[j] = ti[2 * j + 1] + ti[2 * j + 2]
            v2[j] = ti[2 * j + 2] - ti[2 * j + 1]
            v3[j] = ti[2 * j + 1] - ti[2 * j + 3]


cdef void _output_row(const floating* m, Py_ssize_t stride, floating b,
                      floating* yk, Py_ssize_t OH, Py_ssize_t OW,
                      Py_ssize_t oh0, Py_ssize_t TW, floating* out) noexcept nogil:
    """Output rows oh0, oh0+1 of one channel from one row of TW tiles:
    Y = A^T m A + b with A^T = (1,1,1,0), (0,1,-1,-1), clipped to the
    output. out: scratch of 4*TW elements."""
    cdef Py_ssize_t j, ow
    cdef floating a0, a1, a2, a3, c0, c1, c2, c3
    cdef floating* top = out
    cdef floating* bottom = out + 2 * TW
    for j in range(TW):
        # Columns of A^T m (rows 0 and 1 of the 2x4 intermediate).
        a0 = m[j] + m[4 * stride + j] + m[8 * stride + j]
        a1 = m[stride + j] + m[5 * stride + j] + m[9 * stride + j]
        a2 = m[2 * stride + j] + m[6 * stride + j] + m[10 * stride + j]
        a3 = m[3 * stride + j] + m[7 * stride + j] + m[11 * stride + j]
        c0 = m[4 * stride + j] - m[8 * stride + j] - m[12 * stride + j]
        c1 = m[5 * stride + j] - m[9 * stride + j] - m[13 * stride + j]
        c2 = m[6 * stride + j] - m[10 * stride + j] - m[14 * stride + j]
        c3 = m[7 * stride + j] - m[11 * stride + j] - m[15 * stride + j]
        top[2 * j] = a0 + a1 + a2 + b
        top[2 * j + 1] = a1 - a2 - a3 + b
        bottom[2 * j] = c0 + c1 + c2 + b
        bottom[2 * j + 1] = c1 - c2 - c3 + b
    memcpy(yk + oh0 * OW, top, OW * sizeof(floating))
    if oh0 + 1 < OH:
        memcpy(yk + (oh0 + 1) * OW, bottom, OW * sizeof(floating))


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
    cdef Py_ssize_t c, k, row, n, th, xi, g
    cdef floating b
    # Input transform: V[xi][c][t], t = (row - row0) * TW + tw.
    for c in range(C):
        for row in range(row0, row1):
            n = row // TH
            th = row % TH
            _input_row(x + (n * C + c) * H * W, H, W, 2 * th - pad_h, pad_w, TW,
                       rows, v + c * TB + (row - row0) * TW, C * TB)
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


cdef inline Py_ssize_t _rows_per_block(Py_ssize_t TW) noexcept nogil:
    return TILE_BLOCK // TW if TW < TILE_BLOCK else 1


def scratch_elements(Py_ssize_t C, Py_ssize_t K, Py_ssize_t OW, int num_threads):
    """Elements of scratch one forward call allocates (V, M and row
    buffers for each thread)."""
    cdef Py_ssize_t TW = (OW + 1) // 2
    cdef Py_ssize_t TB = _rows_per_block(TW) * TW
    return num_threads * (16 * (C + K) * TB + 8 * (2 * TW + 2))


def forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u,
            const floating[::1] bias, floating[:, :, :, ::1] y,
            Py_ssize_t pad_h, Py_ssize_t pad_w, Py_ssize_t groups,
            int num_threads):
    """y = conv3x3(x) + bias, stride 1, dilation 1, padding (pad_h, pad_w)
    top/left. u: transformed weights (16, K, C/groups) = G g G^T; bias of
    size K or 0. x (N, C, H, W), y (N, K, OH, OW).              OUT: y"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = y.shape[1], OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2
    cdef Py_ssize_t rpb = _rows_per_block(TW), total = N * TH
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
