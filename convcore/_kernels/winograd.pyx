"""Winograd convolution for 3x3 kernels at stride 1, any padding and
dilation: forward, backward-data and weight gradient, for every tile size
of winograd.h (winograd_f2: F(2x2, 3x3), winograd_f4: F(4x4, 3x3)).

Each alpha x alpha input tile d (alpha = m + 2, overlapping by 2) gives an
m x m output tile
    Y = A^T [ (G g G^T) . (B^T d B) ] A
so a tile's alpha^2 points (16 or 36) take one multiply each per channel
pair where a direct 3x3 takes 9 per output pixel (36 or 144 per tile);
they run as alpha^2 GEMMs over the channels (Lavin & Gray 2015):
    M[xi] (K x T) = U[xi] (K x C) @ V[xi] (C x T),   xi < alpha^2.
One driver runs every tile size: the tile's transforms come through its
descriptor (winograd_tile, as NNPACK's convolution-output.c), and all it
knows of a tile is its side m.

Dilation (dh, dw) is done in place, without copies: the output pixels of
one phase (oh mod dh, ow mod dw) = (a, b) form an undilated 3x3
convolution of the input pixels (a - pad_h + dh*i, b - pad_w + dw*j), so an
m x m output tile is the pixels (oh0 + dh*{0..m-1}, ow0 + dw*{0..m-1}) and
its input tile is rows oh0 - pad_h + dh*{0..alpha-1}, columns likewise. A
tile row is one row phase a and tile index ti, holding the tiles of every
column phase b side by side (segment b); the input gather reads with
stride dw and the output scatter writes with stride dw, the transforms
between them are those of dilation 1. Padding may be anything, negative
included (backward-data runs with 2*d - pad): whatever falls outside the
input reads as zero, and the output size gives the bottom/right padding.

Work is split into blocks of whole tile rows taken across the batch (so
small images still give the BLAS long rows); the transforms run along tile
rows, so they vectorise. Each thread owns one block at a time with its own
V and M scratch (bounded by the block, never a whole-batch matrix) and
calls the BLAS single-threaded (the caller holds it to one thread: one
owner at a time). The block size, the thread count and the scratch come
from one plan (_plan), which both the workspace query (plan) and the
drivers use. The weight transform U = G g G^T (transform_weights)
is computed by the caller, once per weight. Backward-data is the forward
run on grad_y with the kernel flipped and transposed (the caller's U), the
same dilation and padding 2*d - pad. The drivers report an Inf or NaN in
the images they read (the transforms would spread it over whole tiles), so
that the caller can recompute the layer another way.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from convcore._kernels._openmp cimport omp_get_thread_num
from convcore._kernels.blas cimport gemm
from convcore._kernels.buffer_cache cimport give, take
from convcore._kernels.conv_geometry cimport ConvGeometry, check_shapes
from convcore._kernels.conv_params cimport ConvParams, valid_range
from convcore._kernels.partials cimport NUM_PARTIALS, sum_partials

cdef extern from "winograd.h":
    enum: WINOGRAD_FILTER_BLOCK
    ctypedef struct winograd_tile:
        Py_ssize_t m, alpha
        Py_ssize_t min_block_tiles, max_block_tiles
        float (*in_rows_f)(const float* d, float* t, Py_ssize_t n) noexcept nogil
        double (*in_rows_d)(const double* d, double* t, Py_ssize_t n) noexcept nogil
        void (*in_cols_f)(const float* t, Py_ssize_t Wp, float* v, Py_ssize_t s,
                          Py_ssize_t TW) noexcept nogil
        void (*in_cols_d)(const double* t, Py_ssize_t Wp, double* v, Py_ssize_t s,
                          Py_ssize_t TW) noexcept nogil
        void (*out_f)(const float* m, Py_ssize_t s, float b, float* out, Py_ssize_t ld,
                      Py_ssize_t TW) noexcept nogil
        void (*out_d)(const double* m, Py_ssize_t s, double b, double* out, Py_ssize_t ld,
                      Py_ssize_t TW) noexcept nogil
        float (*grad_f)(const float* g, Py_ssize_t ld, float* dm, Py_ssize_t s,
                        Py_ssize_t TW) noexcept nogil
        double (*grad_d)(const double* g, Py_ssize_t ld, double* dm, Py_ssize_t s,
                         Py_ssize_t TW) noexcept nogil
        void (*filters_f)(const float* w, Py_ssize_t cb, float* u,
                          Py_ssize_t plane) noexcept nogil
        void (*filters_d)(const double* w, Py_ssize_t cb, double* u,
                          Py_ssize_t plane) noexcept nogil
        void (*unfilters_f)(const float* du, Py_ssize_t plane, Py_ssize_t cb,
                            float* grad_w) noexcept nogil
        void (*unfilters_d)(const double* du, Py_ssize_t plane, Py_ssize_t cb,
                            double* grad_w) noexcept nogil
    const winograd_tile winograd_f2
    const winograd_tile winograd_f4
    void winograd_gather_f(const float* src, Py_ssize_t s, float* dst,
                           Py_ssize_t n) noexcept nogil
    void winograd_gather_d(const double* src, Py_ssize_t s, double* dst,
                           Py_ssize_t n) noexcept nogil
    void winograd_scatter_f(const float* src, Py_ssize_t s, float* dst,
                            Py_ssize_t n) noexcept nogil
    void winograd_scatter_d(const double* src, Py_ssize_t s, double* dst,
                            Py_ssize_t n) noexcept nogil


TILES = ("winograd_f2", "winograd_f4")


cdef const winograd_tile* _tile(str name) except NULL:
    if name == "winograd_f2":
        return &winograd_f2
    if name == "winograd_f4":
        return &winograd_f4
    raise ValueError(f"winograd: unknown tile {name!r}, expected one of {TILES}")


def points(str tile):
    """Points of the transformed tile (alpha^2): U's first dimension."""
    cdef const winograd_tile* t = _tile(tile)
    return t.alpha * t.alpha


# ---- Geometry -------------------------------------------------------------

# Tile geometry of one output axis of n pixels at dilation d, tile side m:
# pixels a, a + d, a + 2d, ... form phase a, and each phase is cut into
# m-pixel tiles (its last may be partly out). Phase a has q + (a < r)
# pixels, (q, r) = divmod(n, d), so only two tile counts occur and no loop
# below divides.
cdef struct Axis:
    Py_ssize_t d            # dilation
    Py_ssize_t m            # tile side
    Py_ssize_t q, r         # phase a has q + (a < r) pixels
    Py_ssize_t phases       # non-empty phases: min(d, n)
    Py_ssize_t long_tiles   # tiles of a phase a < r
    Py_ssize_t short_tiles  # tiles of a phase a >= r
    Py_ssize_t tiles        # over all phases


cdef inline Axis _axis(Py_ssize_t n, Py_ssize_t d, Py_ssize_t m) noexcept nogil:
    cdef Axis ax
    ax.d = d
    ax.m = m
    ax.q = n // d
    ax.r = n % d
    ax.phases = min(d, n)
    ax.long_tiles = (ax.q + m) // m
    ax.short_tiles = (ax.q + m - 1) // m
    ax.tiles = ax.r * ax.long_tiles + (ax.phases - ax.r) * ax.short_tiles
    return ax


cdef inline Py_ssize_t _phase_tiles(const Axis* ax, Py_ssize_t a) noexcept nogil:
    return ax.long_tiles if a < ax.r else ax.short_tiles


# Where a tile row of the batch is: tile rows go image after image, and
# within an image phase after phase (phase 0's first). Blocks walk their
# rows with _next_row, no division per row.
cdef struct RowCursor:
    Py_ssize_t n      # image
    Py_ssize_t a      # row phase
    Py_ssize_t ti     # tile within the phase
    Py_ssize_t oh0    # its first output row, a + m*d*ti


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
    cur.oh0 = cur.a + ax.m * ax.d * cur.ti
    return cur


cdef inline void _next_row(const Axis* ax, RowCursor* cur) noexcept nogil:
    cur.ti += 1
    cur.oh0 += ax.m * ax.d
    if cur.ti == _phase_tiles(ax, cur.a):
        cur.ti = 0
        cur.a += 1
        if cur.a == ax.phases:      # every phase has a tile: q + (a < r) >= 1
            cur.a = 0
            cur.n += 1
        cur.oh0 = cur.a


# Segment b of an input row buffer: the input columns that the tiles of
# column phase b read, b - pad_w + dw*{0 .. m*tiles + 1}. The same for every
# row and channel of a call, so the drivers tabulate them once (_segments)
# and the row loop neither divides nor walks the padding.
cdef struct Segment:
    Py_ssize_t tiles        # tiles of the phase
    Py_ssize_t first_tile   # tiles of the phases before it
    Py_ssize_t off          # its first entry in the row buffer
    Py_ssize_t width        # its entries, m*tiles + 2
    Py_ssize_t iw0          # the input column of its first entry
    Py_ssize_t lo, hi       # entries [lo, hi) lie inside the image


# ---- The plan ---------------------------------------------------------------

cdef enum Pass:
    FORWARD
    BACKWARD_DATA
    BACKWARD_WEIGHT


cdef Pass _pass(str name) except *:
    if name == "forward":
        return FORWARD
    if name == "backward_data":
        return BACKWARD_DATA
    if name == "backward_weight":
        return BACKWARD_WEIGHT
    raise ValueError(f"winograd: unknown pass {name!r}")


cdef enum:
    # Each point's V (and M) is a plane of C (K) x TB elements. The
    # transforms write all points' planes at once, so when the plane size
    # is a multiple of 4 KiB every one of those streams maps to the same L1
    # sets and they evict each other; an odd number of cache lines between
    # planes spreads them out.
    PLANE_PAD = 16
    # A block takes about BLOCK_BYTES of V and M, so that its GEMM operands
    # stay near one core's L2 (within the tile's min/max_block_tiles). The
    # budget counts float32 elements for both dtypes: the weight gradient's
    # sums depend on the blocks, and float64 should block alike.
    BLOCK_BYTES = 1 << 20
    BUDGET_ITEMSIZE = 4
    # The weight gradient's GEMM of one point reads and writes that
    # point's dU (K x C/groups) once per block; when all points' dU pass
    # 4 x BLOCK_BYTES (256 channels and up) its blocks take at least this
    # many tiles, so that the GEMMs' inner dimension pays for the traffic.
    WEIGHT_GRAD_MIN_TILES = 256
    # The weight gradient transforms blocks into one shared buffer of about
    # this size (float32 elements counted, as BLOCK_BYTES), under glibc's
    # largest mmap threshold so that its pages are reused from call to call.
    WEIGHT_GRAD_GATHER_BYTES = 24 << 20
    # ... and makes those blocks' transforms in this many shares of their
    # planes per thread (a few, so that planes of unequal cost balance).
    TRANSFORM_SHARES_PER_THREAD = 4


# The plan of one kernel call: what it convolves, how the work is cut and
# what scratch it takes. _plan makes it; the workspace query reports its
# scratch and the drivers run it, so the two cannot disagree.
cdef struct Plan:
    ConvParams p            # the convolution run (backward-data: grad_y -> grad_x)
    const winograd_tile* tile
    Axis rows, cols         # the output's tiling
    Py_ssize_t TW           # tiles per tile row
    Py_ssize_t total        # tile rows in the batch
    Py_ssize_t rows_per_block, blocks
    Py_ssize_t chunks       # weight gradient, small dU: fixed partial sums
    Py_ssize_t group_blocks # weight gradient, big dU: blocks whose V and M
                            # are made together, then multiplied point by point
    int threads
    Py_ssize_t v_plane, m_plane   # elements between points' planes of V, M
    Py_ssize_t row_width    # elements of one zero-padded input row buffer
    Segment* segments       # cols.phases of them (_segments; NULL until then)
    bint cols_in_place      # output rows are read/written where they are: the
                            # tiles cover undilated columns exactly
    Py_ssize_t per_thread   # elements of one thread's scratch
    Py_ssize_t gathered     # elements of the weight gradient's partial sums,
                            # or of its V and M for group_blocks blocks


cdef inline ConvParams _data_params(const ConvParams* p) noexcept nogil:
    """Backward-data as a forward convolution: grad_y (N, K, OH, OW) with the
    flipped kernel gives grad_x (N, C, H, W), the full correlation, which
    reaches 2*dilation - pad pixels before grad_y's first (negative when the
    forward padded by more than the dilated kernel's reach)."""
    cdef ConvParams q = p[0]
    q.C, q.H, q.W = p.K, p.OH, p.OW
    q.K, q.OH, q.OW = p.C, p.H, p.W
    q.pad_h = 2 * p.dil_h - p.pad_h
    q.pad_w = 2 * p.dil_w - p.pad_w
    return q


cdef Py_ssize_t _even_rows(Py_ssize_t total, Py_ssize_t rows, int threads) noexcept nogil:
    """Tile rows per block, at most `rows`, that give the busiest thread of
    a static schedule (contiguous runs of ceil(blocks / threads) blocks)
    the fewest rows; the tallest such blocks (the biggest GEMMs). 7 tile
    rows in blocks of 3 kept one of two threads idle for a third of the
    call; blocks of 2 split them 4 and 3."""
    cdef Py_ssize_t best = rows, least = total + 1, r, blocks, load
    r = rows
    while r >= 1:
        blocks = (total + r - 1) // r
        load = min(total, (blocks + threads - 1) // threads * r)
        if load < least:
            least, best = load, r
        r -= 1
    return best


cdef Plan _plan(const ConvParams* layer, const winograd_tile* tile, Pass pass_,
                int max_threads, Py_ssize_t rows_per_block) noexcept nogil:
    """How one call of pass_ over the layer `layer` runs: rows_per_block
    tile rows per work block (0: chosen here), on at most max_threads."""
    cdef Plan pl
    cdef Py_ssize_t points = tile.alpha * tile.alpha, tiles, TB, rows
    pl.p = _data_params(layer) if pass_ == BACKWARD_DATA else layer[0]
    cdef bint big_du = (points * pl.p.K * (pl.p.C // pl.p.groups) * BUDGET_ITEMSIZE
                        > 4 * BLOCK_BYTES)
    pl.tile = tile
    pl.rows = _axis(pl.p.OH, pl.p.dil_h, tile.m)
    pl.cols = _axis(pl.p.OW, pl.p.dil_w, tile.m)
    pl.TW = pl.cols.tiles
    pl.total = pl.p.N * pl.rows.tiles
    rows = rows_per_block
    if rows <= 0:
        tiles = BLOCK_BYTES // (points * (pl.p.C + pl.p.K) * BUDGET_ITEMSIZE)
        tiles = min(max(tiles, tile.min_block_tiles), tile.max_block_tiles)
        rows = max(1, tiles // pl.TW)
        if pass_ == BACKWARD_WEIGHT and big_du:
            rows = max(rows, (WEIGHT_GRAD_MIN_TILES + pl.TW - 1) // pl.TW)
        if pass_ != BACKWARD_WEIGHT:
            # Forward outputs do not depend on the blocks, so they follow
            # the threads: as thin as spreads them evenly (_even_rows); the
            # weight gradient's sums do depend on them, so its blocks never
            # follow the threads.
            rows = _even_rows(pl.total, rows, max(max_threads, 1))
    pl.rows_per_block = rows
    pl.blocks = (pl.total + rows - 1) // rows
    TB = rows * pl.TW
    pl.v_plane = pl.p.C * TB + PLANE_PAD
    pl.m_plane = pl.p.K * TB + PLANE_PAD
    # Segment b (column phase b) of an input row holds the m*tiles + 2
    # input columns its tiles read.
    pl.row_width = tile.m * pl.cols.tiles + 2 * pl.cols.phases
    pl.segments = NULL
    pl.cols_in_place = pl.cols.d == 1 and pl.p.OW == tile.m * pl.TW
    # alpha input rows with their row transform (the output side's m rows
    # of m*TW fit in them), and V and M of the thread's block ...
    pl.per_thread = 2 * tile.alpha * pl.row_width + points * (pl.v_plane + pl.m_plane)
    pl.chunks = pl.group_blocks = pl.gathered = 0
    pl.threads = <int> max(1, min(<Py_ssize_t> max_threads, pl.blocks))
    if pass_ == BACKWARD_WEIGHT and not big_du:
        # ... and, for the weight gradient with a small dU, a copy of dU
        # per fixed chunk of blocks: each thread transforms and multiplies
        # its own blocks in cache, and the copies are added at the end.
        pl.chunks = min(pl.blocks, <Py_ssize_t> NUM_PARTIALS)
        pl.threads = <int> max(1, min(<Py_ssize_t> max_threads, pl.chunks))
        pl.gathered = pl.chunks * points * pl.p.K * (pl.p.C // pl.p.groups)
    elif pass_ == BACKWARD_WEIGHT:
        # With a big dU, copies of it would cost more memory traffic than
        # the GEMMs: the threads transform group_blocks blocks into one
        # shared buffer, then multiply point by point, each point's dU
        # staying in cache over the blocks. How many blocks go together
        # does not change the sums (each point adds its blocks in order),
        # so it may follow the threads.
        pl.per_thread = 2 * tile.alpha * pl.row_width
        pl.group_blocks = WEIGHT_GRAD_GATHER_BYTES // (
            points * (pl.v_plane + pl.m_plane) * BUDGET_ITEMSIZE)
        pl.group_blocks = min(pl.blocks, max(pl.group_blocks, <Py_ssize_t> max_threads, 1))
        pl.threads = <int> max(1, min(<Py_ssize_t> max_threads,
                                      max(pl.group_blocks, points * pl.p.groups)))
        pl.gathered = pl.group_blocks * points * (pl.v_plane + pl.m_plane)
    return pl


cdef inline Py_ssize_t _scratch(const Plan* pl) noexcept nogil:
    return pl.threads * pl.per_thread + pl.gathered


cdef int _segments(Plan* pl) except -1:
    """Tabulate pl.segments (freed by the caller)."""
    cdef Py_ssize_t b, off = 0, first = 0
    cdef Segment* sg
    pl.segments = <Segment*> malloc(max(pl.cols.phases, 1) * sizeof(Segment))
    if pl.segments == NULL:
        raise MemoryError("convcore: cannot allocate the Winograd row segments")
    for b in range(pl.cols.phases):
        sg = &pl.segments[b]
        sg.tiles = _phase_tiles(&pl.cols, b)
        sg.first_tile = first
        sg.off = off
        sg.width = pl.tile.m * sg.tiles + 2
        sg.iw0 = b - pl.p.pad_w
        valid_range(sg.width, pl.p.W, pl.cols.d, sg.iw0, &sg.lo, &sg.hi)
        off += sg.width
        first += sg.tiles
    return 0


def plan(str tile, str pass_name, ConvGeometry geom, int num_threads):
    """The plan of one call of pass_name ("forward", "backward_data" or
    "backward_weight") for the layer geom (its ConvGeometry, ConvSpec.params:
    x (N, C, H, W) * w (K, C/groups, 3, 3) -> y (N, K, OH, OW), stride 1)
    on at most num_threads: a dict of rows_per_block,
    blocks, threads, the weight gradient's chunks (partial sums, small dU)
    or group_blocks (blocks gathered, big dU), and scratch_elements (what the call allocates: the
    workspace query; besides it only a table of 56 bytes per dilation phase,
    _segments). The drivers run this same plan."""
    cdef ConvParams p = geom.params
    cdef Plan pl = _plan(&p, _tile(tile), _pass(pass_name), num_threads, 0)
    return dict(rows_per_block=pl.rows_per_block, blocks=pl.blocks, threads=pl.threads,
                chunks=pl.chunks, group_blocks=pl.group_blocks,
                scratch_elements=_scratch(&pl) if pl.total > 0 else 0)


def tile_grid(str tile, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t dh, Py_ssize_t dw):
    """(tile rows per image, tiles per tile row) of an OH x OW output at
    dilation (dh, dw): the unit of rows_per_block."""
    cdef Py_ssize_t m = _tile(tile).m
    return _axis(OH, dh, m).tiles, _axis(OW, dw, m).tiles


# ---- Rows of tiles ----------------------------------------------------------

cdef floating _input_rows(const Plan* pl, const floating* xc, Py_ssize_t ih0,
                          floating* rows, floating* v, Py_ssize_t stride) noexcept nogil:
    """V for one tile row of one channel xc: v[xi*stride + t] = (B^T d B)[xi]
    of tile t, whose input rows are ih0 + dh*{0..alpha-1}. Tile t is tile j
    of column phase b (Segment b; b's tiles follow those of phases 0..b-1)
    and reads input columns b - pad_w + dw*(m*j + {0..alpha-1}). The input
    rows are first copied into zero-padded buffers, segment after segment,
    so every step below is a plain loop along the row that vectorises.
    rows: scratch of 2 * alpha * row_width elements. Returns 0, or NaN when
    the rows read hold an Inf or NaN (the row step's check)."""
    cdef const winograd_tile* tile = pl.tile
    cdef Py_ssize_t Wp = pl.row_width, alpha = tile.alpha, phases = pl.cols.phases
    cdef Py_ssize_t H = pl.p.H, W = pl.p.W, dh = pl.rows.d, dw = pl.cols.d
    cdef Py_ssize_t i, b
    cdef Segment sg         # a copy: the copies below cannot change it
    cdef bint inside[8]     # alpha <= 8
    cdef const floating* src
    cdef floating* d
    cdef floating* t0 = rows + alpha * Wp
    for i in range(alpha):
        inside[i] = 0 <= ih0 + dh * i < H
        if not inside[i]:
            memset(rows + i * Wp, 0, Wp * sizeof(floating))
    for b in range(phases):
        sg = pl.segments[b]
        for i in range(alpha):
            if not inside[i]:
                continue
            d = rows + i * Wp + sg.off
            src = xc + (ih0 + dh * i) * W + sg.iw0 + dw * sg.lo
            if sg.lo > 0:
                memset(d, 0, sg.lo * sizeof(floating))
            if dw == 1:
                memcpy(d + sg.lo, src, (sg.hi - sg.lo) * sizeof(floating))
            elif floating is float:
                winograd_gather_f(src, dw, d + sg.lo, sg.hi - sg.lo)
            else:
                winograd_gather_d(src, dw, d + sg.lo, sg.hi - sg.lo)
            if sg.hi < sg.width:
                memset(d + sg.hi, 0, (sg.width - sg.hi) * sizeof(floating))
    # B^T d along the rows, then B along the columns of each tile, segment
    # by segment.
    cdef floating bad
    if floating is float:
        bad = tile.in_rows_f(rows, t0, Wp)
    else:
        bad = tile.in_rows_d(rows, t0, Wp)
    for b in range(phases):
        sg = pl.segments[b]
        if floating is float:
            tile.in_cols_f(t0 + sg.off, Wp, v + sg.first_tile, stride, sg.tiles)
        else:
            tile.in_cols_d(t0 + sg.off, Wp, v + sg.first_tile, stride, sg.tiles)
    return bad


cdef inline bint _whole_in_place(const Plan* pl, Py_ssize_t oh0) noexcept nogil:
    """Whether the output rows of the tile row at oh0 can be read or written
    where they are: undilated columns exactly covered by the tiles, and all
    m rows inside the output. Others go through a row buffer."""
    return pl.cols_in_place and oh0 + pl.rows.d * (pl.tile.m - 1) < pl.p.OH


cdef void _scatter_row(const floating* src, floating* dst, const Axis* cols) noexcept nogil:
    """One output row from a tile row's values, segment after segment:
    dst[b + dw*j] = segment b's value j (segment b is m per tile long)."""
    cdef Py_ssize_t b, n
    for b in range(cols.phases):
        n = cols.q + (b < cols.r)
        if floating is float:
            winograd_scatter_f(src, cols.d, dst + b, n)
        else:
            winograd_scatter_d(src, cols.d, dst + b, n)
        src += cols.m * _phase_tiles(cols, b)


cdef void _gather_row(const floating* src, floating* dst, const Axis* cols) noexcept nogil:
    """The inverse of _scatter_row; the last tile of a segment is filled
    with zeros past the output's edge, so it is whole."""
    cdef Py_ssize_t b, n, seg
    for b in range(cols.phases):
        n = cols.q + (b < cols.r)
        seg = cols.m * _phase_tiles(cols, b)
        if floating is float:
            winograd_gather_f(src + b, cols.d, dst, n)
        else:
            winograd_gather_d(src + b, cols.d, dst, n)
        memset(dst + n, 0, (seg - n) * sizeof(floating))
        dst += seg


cdef void _output_rows(const Plan* pl, const floating* m, Py_ssize_t stride, floating b,
                       floating* yk, Py_ssize_t oh0, floating* buf) noexcept nogil:
    """Output rows oh0 + dh*{0..m-1} of one channel yk from one tile row:
    Y = A^T m A + b, clipped to the output. buf: scratch of m*m*TW."""
    cdef const winograd_tile* tile = pl.tile
    cdef Py_ssize_t TW = pl.TW, dh = pl.rows.d, OW = pl.p.OW, i
    if _whole_in_place(pl, oh0):
        if floating is float:
            tile.out_f(m, stride, b, yk + oh0 * OW, dh * OW, TW)
        else:
            tile.out_d(m, stride, b, yk + oh0 * OW, dh * OW, TW)
        return
    if floating is float:
        tile.out_f(m, stride, b, buf, tile.m * TW, TW)
    else:
        tile.out_d(m, stride, b, buf, tile.m * TW, TW)
    for i in range(tile.m):
        if oh0 + dh * i >= pl.p.OH:
            break
        _scatter_row(buf + i * tile.m * TW, yk + (oh0 + dh * i) * OW, &pl.cols)


cdef floating _grad_output_rows(const Plan* pl, const floating* gyk, Py_ssize_t oh0,
                                floating* dm, Py_ssize_t stride,
                                floating* buf) noexcept nogil:
    """The adjoint of _output_rows: dM[xi*stride + t] = (A gY A^T)[xi] for the
    m x m output-gradient tiles of one tile row (zero past the output's
    edge). buf: scratch of m*m*TW. Returns 0, or NaN when the rows read
    hold an Inf or NaN."""
    cdef const winograd_tile* tile = pl.tile
    cdef Py_ssize_t TW = pl.TW, dh = pl.rows.d, OW = pl.p.OW, i, width = tile.m * TW
    cdef const floating* src = gyk + oh0 * OW
    cdef Py_ssize_t ld = dh * OW
    if not _whole_in_place(pl, oh0):
        for i in range(tile.m):
            if oh0 + dh * i < pl.p.OH:
                _gather_row(gyk + (oh0 + dh * i) * OW, buf + i * width, &pl.cols)
            else:
                memset(buf + i * width, 0, width * sizeof(floating))
        src, ld = buf, width
    if floating is float:
        return tile.grad_f(src, ld, dm, stride, TW)
    else:
        return tile.grad_d(src, ld, dm, stride, TW)


# ---- Blocks -----------------------------------------------------------------

cdef floating _transform_input_block(const Plan* pl, const floating* x,
                                     Py_ssize_t row0, Py_ssize_t row1,
                                     floating* v, floating* rows) noexcept nogil:
    """V[xi][c][t] for tile rows [row0, row1) of the batch (RowCursor's
    order), t = (row - row0) * TW + tile. Returns 0, or NaN when the input
    read holds an Inf or NaN."""
    return _transform_input_channels(pl, x, row0, row1, 0, pl.p.C, v, rows)


cdef floating _transform_input_channels(const Plan* pl, const floating* x,
                                        Py_ssize_t row0, Py_ssize_t row1,
                                        Py_ssize_t c0, Py_ssize_t c1,
                                        floating* v, floating* rows) noexcept nogil:
    """_transform_input_block for the input channels [c0, c1) only."""
    cdef Py_ssize_t TW = pl.TW, C = pl.p.C, plane_in = pl.p.H * pl.p.W
    cdef Py_ssize_t TB = (row1 - row0) * TW, c, row
    cdef RowCursor cur
    cdef floating bad = 0
    for c in range(c0, c1):
        cur = _row_cursor(&pl.rows, row0)
        for row in range(row0, row1):
            bad += _input_rows(pl, x + (cur.n * C + c) * plane_in, cur.oh0 - pl.p.pad_h,
                               rows, v + c * TB + (row - row0) * TW, pl.v_plane)
            _next_row(&pl.rows, &cur)
    return bad


cdef floating _forward_block(const Plan* pl, const floating* x, const floating* u,
                             const floating* bias, floating* y,
                             Py_ssize_t row0, Py_ssize_t row1,
                             floating* v, floating* m, floating* rows) noexcept nogil:
    """Tile rows [row0, row1) of the batch (RowCursor's order). Returns 0,
    or NaN when x holds an Inf or NaN."""
    cdef Py_ssize_t TW = pl.TW, C = pl.p.C, K = pl.p.K, G = pl.p.groups
    cdef Py_ssize_t TB = (row1 - row0) * TW, Cg = C // G, Kg = K // G
    cdef Py_ssize_t points = pl.tile.alpha * pl.tile.alpha, plane_out = pl.p.OH * pl.p.OW
    cdef Py_ssize_t k, row, xi, grp
    cdef RowCursor cur
    cdef floating bad = _transform_input_block(pl, x, row0, row1, v, rows)
    # A GEMM per point and group: M[xi][grp*Kg:] = U[xi][grp] @ V[xi][grp*Cg:].
    for xi in range(points):
        for grp in range(G):
            gemm(False, False, <int> Kg, <int> TB, <int> Cg, <floating> 1,
                 u + (xi * K + grp * Kg) * Cg, <int> Cg,
                 v + xi * pl.v_plane + grp * Cg * TB, <int> TB, <floating> 0,
                 m + xi * pl.m_plane + grp * Kg * TB, <int> TB)
    for k in range(K):
        cur = _row_cursor(&pl.rows, row0)
        for row in range(row0, row1):
            _output_rows(pl, m + k * TB + (row - row0) * TW, pl.m_plane,
                         bias[k] if bias != NULL else 0,
                         y + (cur.n * K + k) * plane_out, cur.oh0, rows)
            _next_row(&pl.rows, &cur)
    return bad


# The weight gradient's GEMMs contract over the tiles, the contiguous
# dimension of both operands. For F(2x2), OpenBLAS runs that shape faster
# in output blocks of at most 32 x 32 than whole once there are 128 tiles
# or more, slower with fewer. F(4x4)'s blocks then fall into OpenBLAS's
# unpacked small-matrix kernel, measured slower there: its GEMMs stay whole.
cdef enum:
    WEIGHT_GRAD_GEMM_BLOCK = 32
    WEIGHT_GRAD_GEMM_BLOCK_MIN_TB = 128


cdef floating _weight_grad_transforms(const Plan* pl, const floating* x,
                                      const floating* grad_y, Py_ssize_t row0,
                                      Py_ssize_t row1, floating* v, floating* dm,
                                      floating* rows) noexcept nogil:
    """V and dM of the tiles of tile rows [row0, row1): the weight
    gradient's operands. Returns 0, or NaN when x or grad_y holds an Inf
    or NaN."""
    return _weight_grad_channels(pl, x, grad_y, row0, row1, 0, pl.p.C + pl.p.K, v, dm, rows)


cdef floating _weight_grad_channels(const Plan* pl, const floating* x,
                                    const floating* grad_y, Py_ssize_t row0,
                                    Py_ssize_t row1, Py_ssize_t j0, Py_ssize_t j1,
                                    floating* v, floating* dm,
                                    floating* rows) noexcept nogil:
    """_weight_grad_transforms for the planes [j0, j1) of the C input
    channels (V) followed by the K output channels (dM): a share of one
    block's transforms, so that a block too big to split (the weight
    gradient's sums follow the blocks) still spreads over the threads."""
    cdef Py_ssize_t TW = pl.TW, C = pl.p.C, K = pl.p.K
    cdef Py_ssize_t TB = (row1 - row0) * TW, plane_out = pl.p.OH * pl.p.OW
    cdef Py_ssize_t k, row
    cdef RowCursor cur
    cdef floating bad = 0
    if j0 < C:
        bad = _transform_input_channels(pl, x, row0, row1, j0, min(j1, C), v, rows)
    for k in range(max(j0, C) - C, j1 - C):
        cur = _row_cursor(&pl.rows, row0)
        for row in range(row0, row1):
            bad += _grad_output_rows(pl, grad_y + (cur.n * K + k) * plane_out, cur.oh0,
                                     dm + k * TB + (row - row0) * TW, pl.m_plane, rows)
            _next_row(&pl.rows, &cur)
    return bad


cdef void _weight_grad_point(const Plan* pl, Py_ssize_t xi, Py_ssize_t TB,
                             const floating* v, const floating* dm,
                             floating* du, bint overwrite) noexcept nogil:
    """dU[xi][g] (Kg x Cg) += dM[xi][g] (Kg x TB) @ V[xi][g]^T (TB x Cg)
    for the TB tiles of one block, or = with overwrite (the first block: dU
    need not be zeroed first): the adjoint of the forward's GEMMs."""
    cdef Py_ssize_t K = pl.p.K, G = pl.p.groups, Cg = pl.p.C // G, Kg = K // G
    cdef Py_ssize_t grp, k0, c0
    cdef Py_ssize_t step = (WEIGHT_GRAD_GEMM_BLOCK
                            if pl.tile.m == 2 and TB >= WEIGHT_GRAD_GEMM_BLOCK_MIN_TB
                            else max(Kg, Cg))
    for grp in range(G):
        k0 = 0
        while k0 < Kg:
            c0 = 0
            while c0 < Cg:
                gemm(False, True, <int> min(Kg - k0, step), <int> min(Cg - c0, step),
                     <int> TB, <floating> 1, dm + xi * pl.m_plane + (grp * Kg + k0) * TB,
                     <int> TB, v + xi * pl.v_plane + (grp * Cg + c0) * TB, <int> TB,
                     <floating> (0 if overwrite else 1),
                     du + (xi * K + grp * Kg + k0) * Cg + c0, <int> Cg)
                c0 += step
            k0 += step


# ---- Drivers ----------------------------------------------------------------

cdef int _check_layer(const ConvParams* p, const Py_ssize_t* x_shape,
                      const Py_ssize_t* y_shape) except -1:
    """x and y against the geometry, and the geometry's kernel 3x3: the
    drivers get the weights transformed (_check_transformed checks those)."""
    cdef Py_ssize_t w_shape[4]
    w_shape[0], w_shape[1], w_shape[2], w_shape[3] = p.K, p.C // p.groups, 3, 3
    return check_shapes(p, x_shape, w_shape, y_shape)


cdef int _check_transformed(const Py_ssize_t* shape, const winograd_tile* t,
                            Py_ssize_t rows, Py_ssize_t cols, str name) except -1:
    """A transformed-weight array must be (points, rows, cols) for the tile
    and the geometry, or a kernel would read or write past its end."""
    if (shape[0] != t.alpha * t.alpha or shape[1] != rows or shape[2] != cols):
        raise ValueError(f"convcore: {name} of shape {(shape[0], shape[1], shape[2])} does "
                         f"not match {(t.alpha * t.alpha, rows, cols)} for this tile "
                         f"and geometry")
    return 0

cdef void* _alloc(Py_ssize_t elements, size_t itemsize) except NULL:
    """One of the plan's two buffers, the threads' scratch or the weight
    gradient's gathered V and M, from convcore's buffer cache: at 512
    channels they pass glibc's largest heap block, and fresh memory would
    fault its pages in on every call. Back with _release."""
    return take(max(elements, 1) * itemsize)


cdef void _release(void* buf, Py_ssize_t elements, size_t itemsize) noexcept:
    give(buf, max(elements, 1) * itemsize)


cdef inline Py_ssize_t _scratch_size(const Plan* pl) noexcept nogil:
    return pl.threads * pl.per_thread


cdef bint _run_forward(Plan* pl, const floating* x, const floating* u,
                       const floating* bias, floating* y) except -1:
    """The forward (or backward-data) pass of plan pl. Returns False when x
    holds an Inf or NaN."""
    cdef Py_ssize_t points = pl.tile.alpha * pl.tile.alpha
    cdef Py_ssize_t rpb = pl.rows_per_block, blk
    cdef floating bad = 0
    cdef floating* scratch
    cdef floating* mine
    if pl.total == 0:
        return True
    scratch = <floating*> _alloc(_scratch_size(pl), sizeof(floating))
    try:
        _segments(pl)
        with nogil:
            for blk in prange(pl.blocks, schedule='static', num_threads=pl.threads):
                mine = scratch + omp_get_thread_num() * pl.per_thread
                bad += _forward_block(pl, x, u, bias, y, blk * rpb,
                                      min((blk + 1) * rpb, pl.total), mine,
                                      mine + points * pl.v_plane,
                                      mine + points * (pl.v_plane + pl.m_plane))
    finally:
        _release(scratch, _scratch_size(pl), sizeof(floating))
        free(pl.segments)
    return bad == 0


def forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] u,
            const floating[::1] bias, floating[:, :, :, ::1] y, ConvGeometry geom, str tile,
            int num_threads, Py_ssize_t rows_per_block=0):
    """y = conv3x3(x) + bias at stride 1 with the given tile.

    x : ndarray of shape (N, C, H, W)                                  # IN
    u : ndarray of shape (points, K, C/groups): transform_weights(w)   # IN
    bias : ndarray of shape (K,), or (0,) for none                     # IN
    y : ndarray of shape (N, K, OH, OW)                                # OUT
    geom : the layer's ConvGeometry (ConvSpec.params); stride 1, 3x3.
    tile : "winograd_f2" or "winograd_f4".
    num_threads : at most this many threads.
    rows_per_block : tile rows (tile_grid) per work block; 0 lets the plan
        choose (for tests).
    Returns False when x holds an Inf or NaN: y is then not Winograd's to
    give (the caller computes it another way)."""
    cdef ConvParams p = geom.params
    cdef const winograd_tile* t = _tile(tile)
    _check_layer(&p, x.shape, y.shape)
    _check_transformed(u.shape, t, p.K, p.C // p.groups, "u")
    cdef Plan pl = _plan(&p, t, FORWARD, num_threads, rows_per_block)
    return _run_forward(&pl, &x[0, 0, 0, 0], &u[0, 0, 0],
                        &bias[0] if bias.shape[0] > 0 else NULL, &y[0, 0, 0, 0])


def backward_data(const floating[:, :, :, ::1] grad_y, const floating[:, :, ::1] u,
                  floating[:, :, :, ::1] grad_x, ConvGeometry geom, str tile, int num_threads,
                  Py_ssize_t rows_per_block=0):
    """grad_x of the layer x * w -> y of geometry geom (as forward's).

    grad_y : ndarray of shape (N, K, OH, OW)                           # IN
    u : ndarray of shape (points, C, K/groups): transform_weights of the
        flipped kernel (rotated by 180 degrees, in/out channels swapped
        within each group)                                             # IN
    grad_x : ndarray of shape (N, C, H, W)                             # OUT
    Returns False when grad_y holds an Inf or NaN."""
    cdef ConvParams p = geom.params
    cdef const winograd_tile* t = _tile(tile)
    _check_layer(&p, grad_x.shape, grad_y.shape)
    _check_transformed(u.shape, t, p.C, p.K // p.groups, "u")
    cdef Plan pl = _plan(&p, t, BACKWARD_DATA, num_threads, rows_per_block)
    return _run_forward(&pl, &grad_y[0, 0, 0, 0], &u[0, 0, 0], NULL, &grad_x[0, 0, 0, 0])


def backward_weight(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] grad_y,
                    floating[:, :, ::1] du, ConvGeometry geom, str tile, int num_threads,
                    Py_ssize_t rows_per_block=0):
    """The gradient with respect to the transformed weights U
    (untransform_weight_grad maps it back to the weights' gradient).

    x : ndarray of shape (N, C, H, W)                                  # IN
    grad_y : ndarray of shape (N, K, OH, OW)                           # IN
    du : ndarray of shape (points, K, C/groups), overwritten            # OUT
    geom, tile, num_threads, rows_per_block : as forward's.
    With a small dU the sums run in fixed chunks of blocks (partials.pxd);
    with a big one each point sums its blocks in block order, one GEMM per
    block on one thread (_plan). Either way du does not depend on the
    thread count. Returns False when x or grad_y holds an Inf or NaN."""
    cdef ConvParams p = geom.params
    cdef const winograd_tile* t = _tile(tile)
    _check_layer(&p, x.shape, grad_y.shape)
    _check_transformed(du.shape, t, p.K, p.C // p.groups, "du")
    cdef Plan pl = _plan(&p, t, BACKWARD_WEIGHT, num_threads, rows_per_block)
    cdef Py_ssize_t usize = pl.tile.alpha * pl.tile.alpha * p.K * (p.C // p.groups)
    cdef floating bad = 0
    cdef floating* scratch
    cdef floating* gathered
    if pl.total == 0:
        memset(&du[0, 0, 0], 0, usize * sizeof(floating))
        return True
    gathered = <floating*> _alloc(pl.gathered, sizeof(floating))
    try:
        scratch = <floating*> _alloc(_scratch_size(&pl), sizeof(floating))
    except MemoryError:
        _release(gathered, pl.gathered, sizeof(floating))
        raise
    try:
        _segments(&pl)
        with nogil:
            if pl.chunks:
                bad = _weight_grad_chunks(&pl, &x[0, 0, 0, 0], &grad_y[0, 0, 0, 0],
                                          &du[0, 0, 0], scratch, gathered)
            else:
                bad = _weight_grad_gathered(&pl, &x[0, 0, 0, 0], &grad_y[0, 0, 0, 0],
                                            &du[0, 0, 0], scratch, gathered)
    finally:
        _release(scratch, _scratch_size(&pl), sizeof(floating))
        _release(gathered, pl.gathered, sizeof(floating))
        free(pl.segments)
    return bad == 0


cdef floating _weight_grad_chunks(const Plan* pl, const floating* x, const floating* grad_y,
                                  floating* du, floating* scratch,
                                  floating* partials) noexcept nogil:
    """du (overwritten) = the sum of pl.chunks partial sums, each over a fixed
    chunk of blocks that one thread transforms and multiplies in turn."""
    cdef Py_ssize_t points = pl.tile.alpha * pl.tile.alpha
    cdef Py_ssize_t usize = points * pl.p.K * (pl.p.C // pl.p.groups)
    cdef Py_ssize_t rpb = pl.rows_per_block, nblocks = pl.blocks, nchunks = pl.chunks
    cdef Py_ssize_t chunk, blk, xi, row0, row1
    cdef floating bad = 0
    cdef floating* mine
    cdef floating* part
    for chunk in prange(nchunks, schedule='static', num_threads=pl.threads):
        mine = scratch + omp_get_thread_num() * pl.per_thread
        part = partials + chunk * usize
        # Zeroed by the thread that sums into it, not serially before.
        memset(part, 0, usize * sizeof(floating))
        for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
            row0 = blk * rpb
            row1 = min(row0 + rpb, pl.total)
            bad += _weight_grad_transforms(pl, x, grad_y, row0, row1, mine,
                                           mine + points * pl.v_plane,
                                           mine + points * (pl.v_plane + pl.m_plane))
            for xi in range(points):
                _weight_grad_point(pl, xi, (row1 - row0) * pl.TW, mine,
                                   mine + points * pl.v_plane, part, False)
    sum_partials(partials, nchunks, usize, du, pl.threads)
    return bad


cdef floating _weight_grad_gathered(const Plan* pl, const floating* x,
                                    const floating* grad_y, floating* du,
                                    floating* scratch, floating* gathered) noexcept nogil:
    """du (overwritten) = the sum of the blocks' products, the first
    block's written rather than added (no serial pass zeroing a dU four
    times the weights' size while the other threads wait), pl.group_blocks
    blocks at a time: their V and dM made in a prange over shares of the
    blocks' planes (a big dU makes big blocks, often one per call: a prange
    over the blocks left the other threads waiting) into `gathered`, then
    their GEMMs in a prange over the points, so that each point's dU
    stays in cache over the blocks and no thread keeps a copy of dU."""
    cdef Py_ssize_t points = pl.tile.alpha * pl.tile.alpha
    cdef Py_ssize_t rpb = pl.rows_per_block, nblocks = pl.blocks
    cdef Py_ssize_t per_block = points * (pl.v_plane + pl.m_plane)
    cdef Py_ssize_t planes = pl.p.C + pl.p.K
    cdef Py_ssize_t shares = min(planes, <Py_ssize_t> TRANSFORM_SHARES_PER_THREAD * pl.threads)
    cdef Py_ssize_t first = 0, last, blk, xi, row0, row1, task, share
    cdef floating bad = 0
    cdef floating* vm
    while first < nblocks:
        last = min(first + pl.group_blocks, nblocks)
        for task in prange((last - first) * shares, schedule='static', num_threads=pl.threads):
            blk = first + task // shares
            share = task % shares
            vm = gathered + (blk - first) * per_block
            bad += _weight_grad_channels(pl, x, grad_y, blk * rpb,
                                         min((blk + 1) * rpb, pl.total),
                                         share * planes // shares,
                                         (share + 1) * planes // shares, vm,
                                         vm + points * pl.v_plane,
                                         scratch + omp_get_thread_num() * pl.per_thread)
        for xi in prange(points, schedule='static', num_threads=pl.threads):
            for blk in range(first, last):
                row0 = blk * rpb
                row1 = min(row0 + rpb, pl.total)
                vm = gathered + (blk - first) * per_block
                _weight_grad_point(pl, xi, (row1 - row0) * pl.TW, vm,
                                   vm + points * pl.v_plane, du, blk == 0)
        first = last
    return bad


# ---- Weight transforms -------------------------------------------------------

cdef void _filter_blocks(const winograd_tile* t, floating* w, floating* u, Py_ssize_t K,
                         Py_ssize_t Cg, bint forward, int num_threads) noexcept nogil:
    """u = G w G^T (forward) or its adjoint w = G^T u G, for w (K, Cg, 3, 3)
    and u (points, K, Cg): the K*Cg filters as one run, in blocks of
    WINOGRAD_FILTER_BLOCK consecutive filters (a filter's plane index
    k*Cg + c is its index in w), the blocks in a prange."""
    cdef Py_ssize_t plane = K * Cg, blk, f0, cb
    cdef Py_ssize_t blocks = (plane + WINOGRAD_FILTER_BLOCK - 1) // WINOGRAD_FILTER_BLOCK
    for blk in prange(blocks, schedule='static', num_threads=num_threads):
        f0 = blk * WINOGRAD_FILTER_BLOCK
        cb = min(<Py_ssize_t> WINOGRAD_FILTER_BLOCK, plane - f0)
        if floating is float:
            if forward:
                t.filters_f(w + 9 * f0, cb, u + f0, plane)
            else:
                t.unfilters_f(u + f0, plane, cb, w + 9 * f0)
        else:
            if forward:
                t.filters_d(w + 9 * f0, cb, u + f0, plane)
            else:
                t.unfilters_d(u + f0, plane, cb, w + 9 * f0)


def transform_weights(const floating[:, :, :, ::1] w, floating[:, :, ::1] u, str tile,
                      int num_threads=1):
    """u[alpha*i + j, k, c] = (G w[k, c] G^T)[i, j] with the tile's G.

    w : ndarray of shape (K, C/groups, 3, 3)                           # IN
    u : ndarray of shape (points, K, C/groups)                         # OUT"""
    cdef const winograd_tile* t = _tile(tile)
    if w.shape[0] > 0 and w.shape[1] > 0:
        with nogil:
            # w is only read (the forward direction).
            _filter_blocks(t, <floating*> &w[0, 0, 0, 0], &u[0, 0, 0], w.shape[0], w.shape[1],
                           True, num_threads)


def untransform_weight_grad(const floating[:, :, ::1] du, floating[:, :, :, ::1] grad_w,
                            str tile, int num_threads=1):
    """grad_w[k, c] = G^T D G with D[i, j] = du[alpha*i + j, k, c]: the
    adjoint of transform_weights.

    du : ndarray of shape (points, K, C/groups)                        # IN
    grad_w : ndarray of shape (K, C/groups, 3, 3)                      # OUT"""
    cdef const winograd_tile* t = _tile(tile)
    if grad_w.shape[0] > 0 and grad_w.shape[1] > 0:
        with nogil:
            # du is only read (the adjoint direction).
            _filter_blocks(t, &grad_w[0, 0, 0, 0], <floating*> &du[0, 0, 0], grad_w.shape[0],
                           grad_w.shape[1], False, num_threads)
