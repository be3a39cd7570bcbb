"""Batch normalisation kernels: per-channel statistics and the elementwise
passes of the forward and backward.

The input is viewed as (N, C, S): S = 1 for (N, C), L for (N, C, L),
H*W for (N, C, H, W). Reductions run per channel, in double whatever the
input dtype, and the variance takes two passes (mean, then squared
deviations from it), which keeps it accurate when the mean is large next
to the spread. Elementwise rows run in double arithmetic, so
y = (x - mean) * scale + shift does not lose float32 digits to
cancellation.

Training runs a block of channels at a time (prange over the blocks):
their sums, their coefficients, then their rows, which the sums have
just brought into cache, all in one parallel region. A region costs a
wake-up of the other threads (tens of microseconds on a virtual
machine), and a block is kept small enough for its second and third
passes to come from the core's own cache instead of memory. normalize,
for the running statistics, runs over the N*C rows (prange over N*C),
with coefficients the caller computes (convcore.functional.batch_norm).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY, sqrt

# Channel sums: the row reductions shared with pooling and the other norms.
from convcore._kernels._row_reductions cimport (
    convcore_row_sum_f, convcore_row_sum_d, convcore_row_sqdev_f, convcore_row_sqdev_d,
    convcore_row_grad_sums_f, convcore_row_grad_sums_d)

# The elementwise passes: affine (with an optional fused residual and ReLU),
# input gradient, and ReLU backward fused with the channel sums.
cdef extern from "convcore/_kernels/batchnorm.h":
    void bn_affine_clamp_f(const float* x, const float* r, float* y, Py_ssize_t n,
                           double m, double k, double b, double lo,
                           double hi) noexcept nogil
    void bn_affine_clamp_d(const double* x, const double* r, double* y, Py_ssize_t n,
                           double m, double k, double b, double lo,
                           double hi) noexcept nogil
    void bn_input_grad_f(const float* g, const float* x, float* out, Py_ssize_t n,
                         double m, double ka, double kb, double kd) noexcept nogil
    void bn_input_grad_d(const double* g, const double* x, double* out, Py_ssize_t n,
                         double m, double ka, double kb, double kd) noexcept nogil
    void bn_mask_grad_sums_f(const float* g, const float* y, const float* x, float* gm,
                             Py_ssize_t n, double m, double* sum_g,
                             double* sum_gd, double cap) noexcept nogil
    void bn_mask_grad_sums_d(const double* g, const double* y, const double* x,
                             double* gm, Py_ssize_t n, double m, double* sum_g,
                             double* sum_gd, double cap) noexcept nogil


# Channel sums over a block of channels c0 to c1 of x (N, C, S), walked
# image by image (an image's rows of the block are one contiguous run of
# memory), each channel summed over its rows in image order whatever the
# block. Per-channel outputs are indexed from c0: out[c - c0].

cdef void _block_stats(const floating* x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                       Py_ssize_t c0, Py_ssize_t c1, double* mean,
                       double* var) noexcept nogil:
    """Mean and biased variance per channel, two passes (the mean, then
    squared deviations from it)."""
    cdef Py_ssize_t n, c, off
    for c in range(c0, c1):
        mean[c - c0] = 0
        var[c - c0] = 0
    for n in range(N):
        for c in range(c0, c1):
            off = (n * C + c) * S
            if floating is float:
                mean[c - c0] += convcore_row_sum_f(x + off, S)
            else:
                mean[c - c0] += convcore_row_sum_d(x + off, S)
    for c in range(c0, c1):
        mean[c - c0] = mean[c - c0] / (N * S)
    for n in range(N):
        for c in range(c0, c1):
            off = (n * C + c) * S
            if floating is float:
                var[c - c0] += convcore_row_sqdev_f(x + off, S, mean[c - c0])
            else:
                var[c - c0] += convcore_row_sqdev_d(x + off, S, mean[c - c0])
    for c in range(c0, c1):
        var[c - c0] = var[c - c0] / (N * S)


cdef void _block_grad_sums(const floating* gy, const floating* y, const floating* x,
                           floating* gm, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                           Py_ssize_t c0, Py_ssize_t c1, const double* mean,
                           double* sum_g, double* sum_gd, double cap) noexcept nogil:
    """sum_g = sum(g) and sum_gd = sum(g * (x - mean)) per channel. g is
    gy (y NULL), or gy through the ReLU whose output y is (cap: its upper
    clamp), written to gm (bn_mask_grad_sums: may be gy). x may be NULL
    with a ReLU: then no sum_gd (left 0)."""
    cdef Py_ssize_t n, c, off
    for c in range(c0, c1):
        sum_g[c - c0] = 0
        sum_gd[c - c0] = 0
    for n in range(N):
        for c in range(c0, c1):
            off = (n * C + c) * S
            if y != NULL:
                if floating is float:
                    bn_mask_grad_sums_f(gy + off, y + off, (x + off) if x != NULL else NULL,
                                        gm + off, S, mean[c - c0], &sum_g[c - c0],
                                        &sum_gd[c - c0], cap)
                else:
                    bn_mask_grad_sums_d(gy + off, y + off, (x + off) if x != NULL else NULL,
                                        gm + off, S, mean[c - c0], &sum_g[c - c0],
                                        &sum_gd[c - c0], cap)
            elif floating is float:
                convcore_row_grad_sums_f(gy + off, NULL, x + off, S, mean[c - c0],
                                         &sum_g[c - c0], &sum_gd[c - c0])
            else:
                convcore_row_grad_sums_d(gy + off, NULL, x + off, S, mean[c - c0],
                                         &sum_g[c - c0], &sum_gd[c - c0])


cdef void channel_stats(const floating* x, Py_ssize_t N, Py_ssize_t C,
                        Py_ssize_t S, Py_ssize_t c, double* mean,
                        double* var) noexcept nogil:
    """Mean and biased variance of channel c of x (N, C, S), two passes."""
    _block_stats(x, N, C, S, c, c + 1, mean, var)


cdef void channel_grad_sums(const floating* gy, const floating* x,
                            Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                            Py_ssize_t c, double mean, double* sum_g,
                            double* sum_gd) noexcept nogil:
    """sum(gy) and sum(gy * (x - mean)) over channel c."""
    _block_grad_sums(gy, NULL, x, NULL, N, C, S, c, c + 1, &mean, sum_g, sum_gd,
                     INFINITY)


# ---------------------------------------------------------------------------
# Drivers, called by convcore.functional after every check; arrays are
# C-contiguous (N, C, S) with N*S >= 1, per-channel arrays float64 (C,).

def normalize(const floating[:, :, ::1] x, const double[::1] mean,
              const double[::1] scale, const double[::1] shift,
              const floating[:, :, ::1] residual, floating[:, :, ::1] y,
              int num_threads, double lower=-INFINITY, double upper=INFINITY):
    """y = clamp((x - mean[c]) * scale[c] + shift[c] [+ residual], lower,
    upper).                                                          OUT: y

    The defaults are batch norm alone; lower = 0 fuses the ReLU after it
    (upper = 6: ReLU6) and a non-empty residual the shortcut added before
    that ReLU (a ResNet block's end). The affine is rounded to the dtype
    before the add and the clamp, and NaN passes the clamp, so the result is
    bit for bit the unfused ops. y may be x itself (in place): with mean 0
    and scale 1 this is a convolution's bias + ReLU epilogue on its own
    output."""
    cdef Py_ssize_t C = x.shape[1], S = x.shape[2], nc, c
    cdef bint has_r = residual.shape[0] != 0
    cdef double m, k, b
    cdef const floating* xr
    cdef const floating* rr
    cdef floating* yr
    with nogil:
        for nc in prange(x.shape[0] * C, schedule='static', num_threads=num_threads):
            c = nc % C
            m = mean[c]
            k = scale[c]
            b = shift[c]
            xr = &x[0, 0, 0] + nc * S
            yr = &y[0, 0, 0] + nc * S
            rr = NULL
            if has_r:
                rr = &residual[0, 0, 0] + nc * S
            if floating is float:
                bn_affine_clamp_f(xr, rr, yr, S, m, k, b, lower, upper)
            else:
                bn_affine_clamp_d(xr, rr, yr, S, m, k, b, lower, upper)


# ---------------------------------------------------------------------------
# Training: a block of channels at a time (see the module docstring),
# each pass walking the block image by image as _block_stats and
# _block_grad_sums do (a channel's rows alone are S values each, C*S
# apart). The sums are those of channel_stats and channel_grad_sums, which
# run the same helpers on one channel. `weight`
# and `bias` are float64 (C,) or empty (none: 1 and 0); `residual` and `y`
# (relu's forward output) (N, C, S) or shape (0, 0, 0) for none. The
# coefficients are the formulas convcore.functional.batch_norm writes for
# normalize and documents, in the same order of operations, so that a
# result is bit for bit what those passes give.

cdef enum:
    # A block's rows stay within about this many bytes, so that its second
    # and third passes read them from the core's own cache.
    BLOCK_BYTES = 1 << 17


cdef inline Py_ssize_t _block_channels(Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                                       size_t item, int num_threads) noexcept nogil:
    """Channels per block: within BLOCK_BYTES, at least one, and at most
    an even share of the channels per thread."""
    cdef Py_ssize_t per_channel = max(1, N * S * <Py_ssize_t> item)
    cdef Py_ssize_t share = (C + num_threads - 1) // max(1, num_threads)
    return max(1, min(share, BLOCK_BYTES // per_channel))


cdef void _forward_block(const floating* x, const floating* r, floating* y,
                         Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                         Py_ssize_t c0, Py_ssize_t c1, const double* w,
                         const double* bias, double eps, double* mean, double* var,
                         double* invstd, double lower, double upper) noexcept nogil:
    cdef Py_ssize_t n, c, off
    cdef double k
    _block_stats(x, N, C, S, c0, c1, mean + c0, var + c0)
    for c in range(c0, c1):
        invstd[c] = 1.0 / sqrt(var[c] + eps)
    for n in range(N):
        for c in range(c0, c1):
            off = (n * C + c) * S
            k = invstd[c] * w[c] if w != NULL else invstd[c]
            if floating is float:
                bn_affine_clamp_f(x + off, (r + off) if r != NULL else NULL, y + off, S,
                                  mean[c], k, bias[c] if bias != NULL else 0.0, lower, upper)
            else:
                bn_affine_clamp_d(x + off, (r + off) if r != NULL else NULL, y + off, S,
                                  mean[c], k, bias[c] if bias != NULL else 0.0, lower, upper)


def train_forward(const floating[:, :, ::1] x, const double[::1] weight,
                  const double[::1] bias, double eps,
                  const floating[:, :, ::1] residual, floating[:, :, ::1] y,
                  double[::1] mean, double[::1] var, double[::1] invstd,
                  int num_threads, double lower=-INFINITY, double upper=INFINITY):
    """Training batch norm: per channel the batch's mean and biased variance
    (two passes), invstd = 1 / sqrt(var + eps), then its rows as normalize
    with scale = invstd * weight and shift = bias (lower, upper and
    residual as there). y may be x (in place): a block's rows are written
    after its sums read them.               OUT: y, mean, var, invstd"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t cb = _block_channels(N, C, S, sizeof(floating), num_threads)
    cdef Py_ssize_t b
    cdef const double* wp = &weight[0] if weight.shape[0] != 0 else NULL
    cdef const double* bp = &bias[0] if bias.shape[0] != 0 else NULL
    cdef const floating* rp = &residual[0, 0, 0] if residual.shape[0] != 0 else NULL
    with nogil:
        for b in prange((C + cb - 1) // cb, schedule='static', num_threads=num_threads):
            _forward_block(&x[0, 0, 0], rp, &y[0, 0, 0], N, C, S, b * cb,
                           min(C, (b + 1) * cb), wp, bp, eps, &mean[0], &var[0],
                           &invstd[0], lower, upper)


cdef void _backward_block(const floating* gy, const floating* y, const floating* x,
                          floating* gm, floating* gx, Py_ssize_t N, Py_ssize_t C,
                          Py_ssize_t S, Py_ssize_t c0, Py_ssize_t c1, const double* mean,
                          const double* invstd, const double* w, double count,
                          bint training, double* sum_g, double* sum_gd,
                          double cap) noexcept nogil:
    """backward's channels c0 to c1 (y NULL: no ReLU)."""
    cdef Py_ssize_t n, c, off
    cdef double inv, a, kb, kd
    cdef const floating* g = gm if y != NULL else gy
    _block_grad_sums(gy, y, x, gm, N, C, S, c0, c1, mean + c0, sum_g + c0, sum_gd + c0,
                     cap)
    for n in range(N):
        for c in range(c0, c1):
            off = (n * C + c) * S
            inv = invstd[c]
            a = inv * w[c] if w != NULL else inv
            kb = 0.0
            kd = 0.0
            if training:
                kb = -a * (inv * inv) * sum_gd[c] / count
                kd = -a * sum_g[c] / count
            if floating is float:
                bn_input_grad_f(g + off, x + off, gx + off, S, mean[c], a, kb, kd)
            else:
                bn_input_grad_d(g + off, x + off, gx + off, S, mean[c], a, kb, kd)


def backward(const floating[:, :, ::1] grad_y, const floating[:, :, ::1] y,
             const floating[:, :, ::1] x, const double[::1] mean,
             const double[::1] invstd, const double[::1] weight, double count,
             bint training, floating[:, :, ::1] grad_m, floating[:, :, ::1] grad_x,
             double[::1] sum_g, double[::1] sum_gd, int num_threads,
             double cap=INFINITY):
    """Batch norm's backward, per channel: the sums (sum_g = sum(g),
    sum_gd = sum(g * (x - mean))), then
    grad_x = g * a + (x - mean) * kb + kd with a = invstd * weight and,
    training (the statistics were the batch's: count values per channel),
    kb = -a * invstd^2 * sum_gd / count, kd = -a * sum_g / count, else 0.
    g is grad_y (y and grad_m empty), or, when y is not empty, grad_y
    through the ReLU whose output y is (cap: its upper clamp) as
    relu_grad_sums computes it, written to grad_m (which may be grad_y;
    grad_x may be grad_m: each element is read, then written, by one
    thread).                            OUT: grad_m, grad_x, sum_g, sum_gd"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t cb = _block_channels(N, C, S, sizeof(floating), num_threads)
    cdef Py_ssize_t b
    cdef bint relu = y.shape[0] != 0
    cdef const floating* yp = &y[0, 0, 0] if relu else NULL
    cdef floating* gmp = &grad_m[0, 0, 0] if relu else NULL
    cdef const double* wp = &weight[0] if weight.shape[0] != 0 else NULL
    with nogil:
        for b in prange((C + cb - 1) // cb, schedule='static', num_threads=num_threads):
            _backward_block(&grad_y[0, 0, 0], yp, &x[0, 0, 0], gmp, &grad_x[0, 0, 0],
                            N, C, S, b * cb, min(C, (b + 1) * cb), &mean[0], &invstd[0],
                            wp, count, training, &sum_g[0], &sum_gd[0], cap)


# ---------------------------------------------------------------------------
# The ReLU mask and the sums after it, alone: a convolution's fused bias +
# ReLU backward (convcore.functional.fused). Same preconditions as above;
# `x` may be empty (shape (0, 0, 0)) to mean "none".

def relu_grad_sums(const floating[:, :, ::1] grad_y, const floating[:, :, ::1] y,
                   const floating[:, :, ::1] x, const double[::1] mean,
                   floating[:, :, ::1] grad_m, double[::1] sum_g, double[::1] sum_gd,
                   int num_threads, double cap=INFINITY):
    """ReLU backward and the per-channel sums after it, in one pass:
    grad_m = grad_y where y > 0 (and y < cap when cap is finite: ReLU6)
    else 0 (grad_m may be grad_y: in place);
    sum_g[c] = sum(grad_m), and, when x is not empty, sum_gd[c] =
    sum(grad_m * (x - mean[c])). Blocks of channels in parallel
    (_block_grad_sums, as backward's first pass), each channel summed in
    image order: the same at any thread count.                      OUT: grad_m, sum_g, sum_gd"""
    cdef Py_ssize_t N = y.shape[0], C = y.shape[1], S = y.shape[2]
    cdef Py_ssize_t cb = _block_channels(N, C, S, sizeof(floating), num_threads)
    cdef Py_ssize_t b
    cdef const floating* xp = &x[0, 0, 0] if x.shape[0] != 0 else NULL
    with nogil:
        for b in prange((C + cb - 1) // cb, schedule='static', num_threads=num_threads):
            _block_grad_sums(&grad_y[0, 0, 0], &y[0, 0, 0], xp, &grad_m[0, 0, 0], N, C, S,
                             b * cb, min(C, (b + 1) * cb), &mean[b * cb], &sum_g[b * cb],
                             &sum_gd[b * cb], cap)
