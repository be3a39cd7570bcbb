"""Row normalisation kernels shared by group, layer and instance norm.

All three normalise independent rows and then apply a per-"affine index"
scale and shift. The input is read as a C-contiguous (R, S, M) block:

    R rows, each normalised on its own (its mean and 1/std);
    S segments per row, each with its own affine index a = (r % G) * S + s;
    M contiguous elements per segment, sharing that index.

    group_norm     x (N, C, *sp)   R = N*G,  S = C/G, M = prod(sp), G groups
    instance_norm  x (N, C, *sp)   R = N*C,  S = 1,   M = prod(sp), G = C
    layer_norm     x (*lead, *D)   R = prod(lead), S = prod(D), M = 1, G = 1

Statistics use two passes (mean, then the mean of squared deviations), the
biased variance and eps inside the square root, as PyTorch; sums are kept in
double for float32 input too. Rows are independent, so prange over rows
needs no reduction; the weight/bias gradients reduce over rows instead, so
they are parallel over blocks of affine indices, each summed over rows in
row order: the same result at every thread count.

Preconditions (checked by convcore.functional): arrays C-contiguous with the
shapes above, R*S*M elements, weight and bias of size G*S (the caller
passes ones and zeros when there is no affine: the kernels then need no
NULL tests and the layer-norm loops vectorise), M >= 1.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport malloc, free

# Row statistics and gradient sums: the row reductions shared with batch
# norm and pooling (double, a fixed order: the same at any thread count).
from convcore._kernels._row_reductions cimport (
    convcore_row_sum_f, convcore_row_sum_d, convcore_row_sqdev_f, convcore_row_sqdev_d,
    convcore_row_grad_sums_f, convcore_row_grad_sums_d)


cdef inline double _sum(const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return convcore_row_sum_f(x, n)
    else:
        return convcore_row_sum_d(x, n)


cdef inline double _sqdev(const floating* x, Py_ssize_t n, double mu) noexcept nogil:
    if floating is float:
        return convcore_row_sqdev_f(x, n, mu)
    else:
        return convcore_row_sqdev_d(x, n, mu)


cdef inline void _gsum(const floating* gy, const floating* w, const floating* x,
                       Py_ssize_t n, double mu, double* sg, double* sgd) noexcept nogil:
    """sg = sum(g), sgd = sum(g * (x - mu)), g = gy * w (w NULL: 1)."""
    sg[0] = 0
    sgd[0] = 0
    if floating is float:
        convcore_row_grad_sums_f(gy, w, x, n, mu, sg, sgd)
    else:
        convcore_row_grad_sums_d(gy, w, x, n, mu, sg, sgd)


cdef double row_stats(const floating* x, Py_ssize_t L, double eps,
                      floating* mean_out, floating* invstd_out) noexcept nogil:
    """Store the row's mean and 1/sqrt(var + eps); return the mean unrounded."""
    cdef double mean = _sum(x, L) / L
    cdef double acc = _sqdev(x, L, mean)
    mean_out[0] = <floating> mean
    invstd_out[0] = <floating> (1.0 / sqrt(acc / L + eps))
    return mean


cdef void row_forward(const floating* x, floating* y, Py_ssize_t r,
                      Py_ssize_t S, Py_ssize_t M, Py_ssize_t G, double eps,
                      const floating* w, const floating* b,
                      floating* mean, floating* invstd) noexcept nogil:
    cdef Py_ssize_t L = S * M, s, m, a0 = (r % G) * S
    cdef const floating* xr = x + r * L
    cdef floating* yr = y + r * L
    cdef double mu, istd, scale, shift
    mu = row_stats(xr, L, eps, &mean[r], &invstd[r])
    istd = invstd[r]
    # (x - mean) first: folding the mean into the shift (x * scale + shift)
    # cancels catastrophically in float32 when |mean| >> std.
    if M == 1:  # layer norm: an affine pair per element, one flat loop
        for s in range(S):
            yr[s] = <floating> ((xr[s] - mu) * istd * w[a0 + s] + b[a0 + s])
        return
    for s in range(S):
        scale = istd * w[a0 + s]
        shift = b[a0 + s]
        if floating is float:
            affine_segment_f(xr + s * M, yr + s * M, M, mu, scale, shift)
        else:
            for m in range(M):
                yr[s * M + m] = (xr[s * M + m] - mu) * scale + shift


cdef void affine_segment_f(const float* x, float* y, Py_ssize_t M, double mu,
                           double scale, double shift) noexcept nogil:
    """y = (x - mu) * scale + shift in float arithmetic (twice the SIMD width
    of double) without losing (x - mu): mu = hi + lo split in two floats,
    x - hi is exact when x is near the mean (Sterbenz), then lo is removed."""
    cdef float hi = <float> mu
    cdef float lo = <float> (mu - hi)
    cdef float sc = <float> scale, sh = <float> shift
    cdef Py_ssize_t m
    for m in range(M):
        y[m] = ((x[m] - hi) - lo) * sc + sh


cdef void row_backward_input(const floating* gy, const floating* x,
                             floating* gx, Py_ssize_t r, Py_ssize_t S,
                             Py_ssize_t M, Py_ssize_t G,
                             const floating* w, const floating* mean,
                             const floating* invstd,
                             double* seg_sums) noexcept nogil:
    """gx = invstd * (g - mean(g) - xhat * mean(g * xhat)), g = gy * w.
    Unless seg_sums is NULL (layer norm), also keeps each segment's
    (sum gy, sum gy*(x - mean)) in seg_sums[2*(r*S + s) ...]: the affine
    gradients' terms."""
    cdef Py_ssize_t L = S * M, s, m, a0 = (r % G) * S
    cdef const floating* xr = x + r * L
    cdef const floating* gyr = gy + r * L
    cdef floating* gxr = gx + r * L
    cdef double mu = mean[r], istd = invstd[r], wv, sg, sgd
    cdef double sum_g = 0, sum_gd = 0, c1, c2
    if seg_sums == NULL:
        _gsum(gyr, w + a0, xr, S, mu, &sum_g, &sum_gd)
    else:
        for s in range(S):
            _gsum(gyr + s * M, NULL, xr + s * M, M, mu, &sg, &sgd)
            seg_sums[2 * (r * S + s)] = sg
            seg_sums[2 * (r * S + s) + 1] = sgd
            sum_g += w[a0 + s] * sg
            sum_gd += w[a0 + s] * sgd
    # gx = istd*w*gy - istd/L*sum_g - (x - mu) * istd^3/L * sum_gd
    c1 = istd * sum_g / L
    c2 = istd * istd * istd * sum_gd / L
    if M == 1:
        for s in range(S):
            gxr[s] = <floating> (istd * w[a0 + s] * gyr[s] - c1 - (xr[s] - mu) * c2)
        return
    for s in range(S):
        wv = istd * w[a0 + s]
        if floating is float:
            grad_segment_f(gyr + s * M, xr + s * M, gxr + s * M, M, mu, wv, c1, c2)
        else:
            for m in range(M):
                gxr[s * M + m] = wv * gyr[s * M + m] - c1 - (xr[s * M + m] - mu) * c2


cdef void grad_segment_f(const float* gy, const float* x, float* gx,
                         Py_ssize_t M, double mu, double wv, double c1,
                         double c2) noexcept nogil:
    """gx = wv*gy - c1 - (x - mu)*c2 in float arithmetic, mu split as in
    affine_segment_f so (x - mu) keeps its digits."""
    cdef float hi = <float> mu
    cdef float lo = <float> (mu - hi)
    cdef float w = <float> wv, a = <float> c1, b = <float> c2
    cdef Py_ssize_t m
    for m in range(M):
        gx[m] = w * gy[m] - a - ((x[m] - hi) - lo) * b


cdef void block_backward_affine(const floating* gy, const floating* x,
                                Py_ssize_t a_lo, Py_ssize_t a_hi,
                                Py_ssize_t R, Py_ssize_t S, Py_ssize_t M,
                                Py_ssize_t G, const floating* mean,
                                const floating* invstd, const double* seg_sums,
                                double* gw, double* gb) noexcept nogil:
    """gw[a] = sum of gy * xhat, gb[a] = sum of gy over the rows and elements
    that share affine index a, for a in [a_lo, a_hi). Rows in order."""
    cdef Py_ssize_t a, n, r, k
    cdef double mu, istd, v
    for a in range(a_lo, a_hi):
        gw[a] = 0
        gb[a] = 0
    if seg_sums == NULL:
        # Layer norm (M == 1, G == 1): index a is column a of every row;
        # walk the rows in order, reading each row's [a_lo, a_hi) stretch.
        for n in range(R):
            mu = mean[n]
            istd = invstd[n]
            for a in range(a_lo, a_hi):
                v = gy[n * S + a]
                gb[a] += v
                gw[a] += v * (x[n * S + a] - mu) * istd
        return
    # Index a = g*S + s lives in rows n*G + g, segment s, whose sums
    # row_backward_input kept: add them over n in order.
    for a in range(a_lo, a_hi):
        for n in range(R // G):
            r = n * G + a // S
            k = 2 * (r * S + a % S)
            gb[a] += seg_sums[k]
            gw[a] += seg_sums[k + 1] * invstd[r]


# ---------------------------------------------------------------------------
# Drivers (called by convcore.functional.norms after every check).

def forward(const floating[::1] x, floating[::1] y, Py_ssize_t S,
            Py_ssize_t M, Py_ssize_t G, double eps,
            const floating[::1] weight, const floating[::1] bias,
            floating[::1] mean, floating[::1] invstd, int num_threads):
    """Normalise the rows of x viewed as (R, S, M); weight and bias of size
    G*S (ones and zeros for no affine).          OUT: y, mean (R,), invstd (R,)"""
    cdef Py_ssize_t R = mean.shape[0], r
    if R == 0 or S * M == 0:  # nothing to normalise
        return
    with nogil:
        for r in prange(R, schedule='static', num_threads=num_threads):
            row_forward(&x[0], &y[0], r, S, M, G, eps, &weight[0], &bias[0],
                        &mean[0], &invstd[0])


def backward(const floating[::1] grad_y, const floating[::1] x,
             floating[::1] grad_x, Py_ssize_t S, Py_ssize_t M, Py_ssize_t G,
             const floating[::1] weight, const floating[::1] mean,
             const floating[::1] invstd, double[::1] grad_w,
             double[::1] grad_b, int num_threads):
    """grad_x (full formula, batch statistics) and the weight and bias
    gradients (size G*S, summed in double).  OUT: grad_x, grad_w, grad_b"""
    cdef Py_ssize_t R = mean.shape[0], A = G * S, r, blk, nblocks, bsize
    cdef double* seg_sums = NULL
    grad_w[:] = 0
    grad_b[:] = 0
    if R == 0 or A == 0 or M == 0:
        return
    if M > 1 or G > 1:
        # Per-(row, segment) sums shared by both passes; layer norm
        # (one element per segment) reads gy and x again instead.
        seg_sums = <double*> malloc(2 * R * S * sizeof(double))
        if seg_sums == NULL:
            raise MemoryError("group_layer_norm.backward: no memory for segment sums")
    # Affine gradients go by blocks of consecutive indices: enough blocks
    # for every thread, wide enough that layer norm reads rows in runs.
    bsize = max(1, min(64, A // (4 * num_threads)))
    nblocks = (A + bsize - 1) // bsize
    try:
        with nogil:
            for r in prange(R, schedule='static', num_threads=num_threads):
                row_backward_input(&grad_y[0], &x[0], &grad_x[0], r, S, M, G,
                                   &weight[0], &mean[0], &invstd[0], seg_sums)
            for blk in prange(nblocks, schedule='static', num_threads=num_threads):
                block_backward_affine(&grad_y[0], &x[0], blk * bsize,
                                      min(A, (blk + 1) * bsize), R, S, M, G,
                                      &mean[0], &invstd[0], seg_sums,
                                      &grad_w[0], &grad_b[0])
    finally:
        free(seg_sums)
