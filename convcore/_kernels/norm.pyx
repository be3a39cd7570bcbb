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
shapes above, R*S*M elements, weight/bias NULL or of size G*S, M >= 1.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt


cdef double row_stats(const floating* x, Py_ssize_t L, double eps,
                      floating* mean_out, floating* invstd_out) noexcept nogil:
    """Store the row's mean and 1/sqrt(var + eps); return the mean unrounded."""
    cdef Py_ssize_t i
    cdef double acc = 0, mean, d
    for i in range(L):
        acc += x[i]
    mean = acc / L
    acc = 0
    for i in range(L):
        d = x[i] - mean
        acc += d * d
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
    cdef double mu, scale, shift
    mu = row_stats(xr, L, eps, &mean[r], &invstd[r])
    for s in range(S):
        # (x - mean) first, in double: folding the mean into the shift
        # (x * scale + shift) cancels catastrophically in float32 when
        # |mean| >> std.
        scale = invstd[r] * (w[a0 + s] if w != NULL else 1)
        shift = b[a0 + s] if b != NULL else 0
        for m in range(M):
            yr[s * M + m] = <floating> ((xr[s * M + m] - mu) * scale + shift)


cdef void row_backward_input(const floating* gy, const floating* x,
                             floating* gx, Py_ssize_t r, Py_ssize_t S,
                             Py_ssize_t M, Py_ssize_t G,
                             const floating* w, const floating* mean,
                             const floating* invstd) noexcept nogil:
    """gx = invstd * (g - mean(g) - xhat * mean(g * xhat)), g = gy * w."""
    cdef Py_ssize_t L = S * M, s, m, a0 = (r % G) * S
    cdef const floating* xr = x + r * L
    cdef const floating* gyr = gy + r * L
    cdef floating* gxr = gx + r * L
    cdef double mu = mean[r], istd = invstd[r], wv, g
    cdef double sum_g = 0, sum_gd = 0, c1, c2
    for s in range(S):
        wv = w[a0 + s] if w != NULL else 1
        for m in range(M):
            g = gyr[s * M + m] * wv
            sum_g += g
            sum_gd += g * (xr[s * M + m] - mu)
    # gx = istd*w*gy - istd/L*sum_g - (x - mu) * istd^3/L * sum_gd
    c1 = istd * sum_g / L
    c2 = istd * istd * istd * sum_gd / L
    for s in range(S):
        wv = istd * (w[a0 + s] if w != NULL else 1)
        for m in range(M):
            gxr[s * M + m] = <floating> (wv * gyr[s * M + m] - c1
                                         - (xr[s * M + m] - mu) * c2)


cdef void block_backward_affine(const floating* gy, const floating* x,
                                Py_ssize_t a_lo, Py_ssize_t a_hi,
                                Py_ssize_t R, Py_ssize_t S, Py_ssize_t M,
                                Py_ssize_t G, const floating* mean,
                                const floating* invstd,
                                double* gw, double* gb) noexcept nogil:
    """gw[a] = sum of gy * xhat, gb[a] = sum of gy over the rows and elements
    that share affine index a, for a in [a_lo, a_hi). Rows in order."""
    cdef Py_ssize_t L = S * M, a, n, r, m, base
    cdef double sg, sgd, mu
    for a in range(a_lo, a_hi):
        gw[a] = 0
        gb[a] = 0
    # Index a = g*S + s lives in rows n*G + g, segment s: visit n in order.
    for n in range(R // G):
        for a in range(a_lo, a_hi):
            r = n * G + a // S
            mu = mean[r]
            base = r * L + (a % S) * M
            sg = 0
            sgd = 0
            for m in range(M):
                sg += gy[base + m]
                sgd += gy[base + m] * (x[base + m] - mu)
            gb[a] += sg
            gw[a] += sgd * invstd[r]


# ---------------------------------------------------------------------------
# Drivers (called by convcore.functional.norms after every check).

def forward(const floating[::1] x, floating[::1] y, Py_ssize_t S,
            Py_ssize_t M, Py_ssize_t G, double eps,
            const floating[::1] weight, const floating[::1] bias,
            floating[::1] mean, floating[::1] invstd, int num_threads):
    """Normalise the rows of x viewed as (R, S, M); weight/bias of size G*S
    or 0 for none.                                OUT: y, mean (R,), invstd (R,)"""
    cdef Py_ssize_t R = mean.shape[0], r
    cdef const floating* w = &weight[0] if weight.shape[0] > 0 else NULL
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    if R == 0 or S * M == 0:  # nothing to normalise
        return
    with nogil:
        for r in prange(R, schedule='static', num_threads=num_threads):
            row_forward(&x[0], &y[0], r, S, M, G, eps, w, b,
                        &mean[0], &invstd[0])


def backward_input(const floating[::1] grad_y, const floating[::1] x,
                   floating[::1] grad_x, Py_ssize_t S, Py_ssize_t M,
                   Py_ssize_t G, const floating[::1] weight,
                   const floating[::1] mean, const floating[::1] invstd,
                   int num_threads):
    """grad_x of the normalisation (full formula, batch statistics).
                                                                 OUT: grad_x"""
    cdef Py_ssize_t R = mean.shape[0], r
    cdef const floating* w = &weight[0] if weight.shape[0] > 0 else NULL
    if R == 0 or S * M == 0:
        return
    with nogil:
        for r in prange(R, schedule='static', num_threads=num_threads):
            row_backward_input(&grad_y[0], &x[0], &grad_x[0], r, S, M, G, w,
                               &mean[0], &invstd[0])


def backward_affine(const floating[::1] grad_y, const floating[::1] x,
                    Py_ssize_t S, Py_ssize_t M, Py_ssize_t G,
                    const floating[::1] mean, const floating[::1] invstd,
                    double[::1] grad_w, double[::1] grad_b, int num_threads):
    """Weight and bias gradients (size G*S), summed in double.
                                                      OUT: grad_w, grad_b"""
    cdef Py_ssize_t R = mean.shape[0], A = G * S, blk, nblocks, bsize
    if A == 0 or R == 0:
        grad_w[:] = 0
        grad_b[:] = 0
        return
    # Blocks of consecutive affine indices: enough blocks for every thread,
    # but wide enough that layer norm (M = 1) reads rows in runs.
    bsize = max(1, min(64, A // (4 * num_threads)))
    nblocks = (A + bsize - 1) // bsize
    with nogil:
        for blk in prange(nblocks, schedule='static', num_threads=num_threads):
            block_backward_affine(&grad_y[0], &x[0], blk * bsize,
                                  min(A, (blk + 1) * bsize), R, S, M, G,
                                  &mean[0], &invstd[0], &grad_w[0], &grad_b[0])
