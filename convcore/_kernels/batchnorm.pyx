"""Batch normalisation kernels: per-channel statistics and the elementwise
passes of the forward and backward.

The input is viewed as (N, C, S): S = 1 for (N, C), L for (N, C, L),
H*W for (N, C, H, W). Reductions run per channel (prange over C), in
double whatever the input dtype, and the variance takes two passes (mean,
then squared deviations from it), which keeps it accurate when the mean is
large next to the spread. Elementwise passes run over the N*C contiguous
rows (prange over N*C) in double arithmetic, so y = (x - mean) * scale +
shift does not lose float32 digits to cancellation. Per-channel
coefficients are computed by the caller (convcore.functional.batch_norm),
which keeps this file free of the formulas' case analysis.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
# CONVCORE_CLONES: AVX2 copies of the row loops, picked at load time.
from convcore._kernels._simd cimport CONVCORE_HAVE_CLONES

# Sums in double with `omp simd reduction`, which lets the compiler reorder
# (vectorise) these loops only; the order is fixed by the binary, so results
# do not depend on the thread count.
cdef extern from *:
    """
    #include <stddef.h>
    #include <math.h>
    #define CONVCORE_BN_REDUCTIONS(T, SUFFIX)                                  \\
    CONVCORE_CLONES                                                           \\
    static double bn_sum_##SUFFIX(const T* a, Py_ssize_t n) {                 \\
        double acc = 0.0;                                                     \\
        _Pragma("omp simd reduction(+:acc)")                                  \\
        for (Py_ssize_t i = 0; i < n; ++i) acc += (double)a[i];               \\
        return acc;                                                           \\
    }                                                                         \\
    CONVCORE_CLONES                                                           \\
    static double bn_sqdev_##SUFFIX(const T* a, Py_ssize_t n, double m) {     \\
        double acc = 0.0;                                                     \\
        _Pragma("omp simd reduction(+:acc)")                                  \\
        for (Py_ssize_t i = 0; i < n; ++i) {                                  \\
            double d = (double)a[i] - m; acc += d * d;                        \\
        }                                                                     \\
        return acc;                                                           \\
    }                                                                         \\
    CONVCORE_CLONES                                                           \\
    static void bn_grad_sums_##SUFFIX(const T* g, const T* x, Py_ssize_t n,   \\
                                      double m, double* sum_g,                \\
                                      double* sum_gd) {                       \\
        double sg = 0.0, sgd = 0.0;                                           \\
        _Pragma("omp simd reduction(+:sg,sgd)")                               \\
        for (Py_ssize_t i = 0; i < n; ++i) {                                  \\
            sg += (double)g[i]; sgd += (double)g[i] * ((double)x[i] - m);     \\
        }                                                                     \\
        *sum_g += sg; *sum_gd += sgd;                                         \\
    }                                                                         \\
    /* y = (x - m) * k + b, in double (x close to m keeps its bits). */      \\
    CONVCORE_CLONES                                                           \\
    static void bn_affine_##SUFFIX(const T* x, T* y, Py_ssize_t n, double m,  \\
                                   double k, double b) {                      \\
        _Pragma("omp simd")                                                   \\
        for (Py_ssize_t i = 0; i < n; ++i)                                    \\
            y[i] = (T)(((double)x[i] - m) * k + b);                           \\
    }                                                                         \\
    /* out = g * ka + (x - m) * kb + kd */                                    \\
    CONVCORE_CLONES                                                           \\
    static void bn_input_grad_##SUFFIX(const T* g, const T* x, T* out,        \\
                                       Py_ssize_t n, double m, double ka,     \\
                                       double kb, double kd) {                \\
        _Pragma("omp simd")                                                   \\
        for (Py_ssize_t i = 0; i < n; ++i)                                    \\
            out[i] = (T)((double)g[i] * ka + ((double)x[i] - m) * kb + kd);   \\
    }                                                                         \\
    /* Fused epilogue: y = relu(T((x - m) * k + b) [+ r]); the affine is     \\
       rounded to T first and r added in T, so the result is bit for bit    \\
       bn_affine, then the add, then relu. "v < 0" lets NaN through, as      \\
       torch's relu. r may be NULL; y may be x (in place).  */               \\
    CONVCORE_CLONES                                                           \\
    static void bn_affine_relu_##SUFFIX(const T* x, const T* r, T* y,        \\
                                        Py_ssize_t n, double m, double k,     \\
                                        double b, double cap) {               \\
        if (cap < HUGE_VAL) { /* ReLU6-like: clip to [0, cap], NaN kept */   \\
            const T c = (T)cap;                                               \\
            _Pragma("omp simd")                                               \\
            for (Py_ssize_t i = 0; i < n; ++i) {                              \\
                T v = (T)(((double)x[i] - m) * k + b);                        \\
                if (r) v = v + r[i];                                          \\
                v = v < 0 ? (T)0 : v;                                         \\
                y[i] = v > c ? c : v;                                         \\
            }                                                                 \\
        } else if (r) {                                                       \\
            _Pragma("omp simd")                                               \\
            for (Py_ssize_t i = 0; i < n; ++i) {                              \\
                T v = (T)(((double)x[i] - m) * k + b); v = v + r[i];          \\
                y[i] = v < 0 ? (T)0 : v;                                      \\
            }                                                                 \\
        } else {                                                              \\
            _Pragma("omp simd")                                               \\
            for (Py_ssize_t i = 0; i < n; ++i) {                              \\
                T v = (T)(((double)x[i] - m) * k + b);                        \\
                y[i] = v < 0 ? (T)0 : v;                                      \\
            }                                                                 \\
        }                                                                     \\
    }                                                                         \\
    /* ReLU backward fused with the reductions that follow it:              \\
       gm = (y > 0 ? g : 0) (torch's threshold_backward: zero where y <= 0)  \\
       written out (gm may be g, in place), and sum(gm), and when x is not   \\
       NULL sum(gm * (x - m)). Per block of 1024: the mask loop (a vector    \\
       select; a branch would mispredict on half the elements, and GCC does  \\
       not if-convert it inside the reduction loop), then the sums over the  \\
       block just written, still in L1: one pass over memory.  */          \\
    CONVCORE_CLONES                                                           \\
    static void bn_mask_grad_sums_##SUFFIX(const T* g, const T* y,           \\
                                           const T* x, T* gm, Py_ssize_t n,   \\
                                           double m, double* sum_g,           \\
                                           double* sum_gd, double cap) {      \\
        double sg = 0.0, sgd = 0.0;                                           \\
        const T c = (T)cap;                                                   \\
        const int capped = cap < HUGE_VAL;                                    \\
        for (Py_ssize_t lo = 0; lo < n; lo += 1024) {                         \\
            Py_ssize_t len = n - lo < 1024 ? n - lo : 1024;                   \\
            const T* gb = g + lo; const T* yb = y + lo; T* mb = gm + lo;      \\
            if (capped) { /* hardtanh_backward: none at 0, cap and beyond */  \\
                _Pragma("omp simd")                                           \\
                for (Py_ssize_t i = 0; i < len; ++i) {                        \\
                    T gv = gb[i], yv = yb[i];                                 \\
                    mb[i] = (yv <= 0) | (yv >= c) ? (T)0 : gv;                \\
                }                                                             \\
            } else {                                                          \\
                _Pragma("omp simd")                                           \\
                for (Py_ssize_t i = 0; i < len; ++i) {                        \\
                    T gv = gb[i]; mb[i] = yb[i] <= 0 ? (T)0 : gv;             \\
                }                                                             \\
            }                                                                 \\
            if (x) {                                                          \\
                const T* xb = x + lo;                                         \\
                _Pragma("omp simd reduction(+:sg,sgd)")                       \\
                for (Py_ssize_t i = 0; i < len; ++i) {                        \\
                    sg += (double)mb[i];                                      \\
                    sgd += (double)mb[i] * ((double)xb[i] - m);               \\
                }                                                             \\
            } else {                                                          \\
                _Pragma("omp simd reduction(+:sg)")                           \\
                for (Py_ssize_t i = 0; i < len; ++i) sg += (double)mb[i];     \\
            }                                                                 \\
        }                                                                     \\
        *sum_g += sg; *sum_gd += sgd;                                         \\
    }
    CONVCORE_BN_REDUCTIONS(float, f)
    CONVCORE_BN_REDUCTIONS(double, d)
    """
    double bn_sum_f(const float* a, Py_ssize_t n) noexcept nogil
    double bn_sum_d(const double* a, Py_ssize_t n) noexcept nogil
    double bn_sqdev_f(const float* a, Py_ssize_t n, double m) noexcept nogil
    double bn_sqdev_d(const double* a, Py_ssize_t n, double m) noexcept nogil
    void bn_grad_sums_f(const float* g, const float* x, Py_ssize_t n, double m,
                        double* sum_g, double* sum_gd) noexcept nogil
    void bn_grad_sums_d(const double* g, const double* x, Py_ssize_t n, double m,
                        double* sum_g, double* sum_gd) noexcept nogil
    void bn_affine_f(const float* x, float* y, Py_ssize_t n, double m, double k,
                     double b) noexcept nogil
    void bn_affine_d(const double* x, double* y, Py_ssize_t n, double m, double k,
                     double b) noexcept nogil
    void bn_input_grad_f(const float* g, const float* x, float* out, Py_ssize_t n,
                         double m, double ka, double kb, double kd) noexcept nogil
    void bn_input_grad_d(const double* g, const double* x, double* out, Py_ssize_t n,
                         double m, double ka, double kb, double kd) noexcept nogil
    void bn_affine_relu_f(const float* x, const float* r, float* y, Py_ssize_t n,
                          double m, double k, double b, double cap) noexcept nogil
    void bn_affine_relu_d(const double* x, const double* r, double* y, Py_ssize_t n,
                          double m, double k, double b, double cap) noexcept nogil
    void bn_mask_grad_sums_f(const float* g, const float* y, const float* x, float* gm,
                             Py_ssize_t n, double m, double* sum_g,
                             double* sum_gd, double cap) noexcept nogil
    void bn_mask_grad_sums_d(const double* g, const double* y, const double* x,
                             double* gm, Py_ssize_t n, double m, double* sum_g,
                             double* sum_gd, double cap) noexcept nogil


cdef void channel_stats(const floating* x, Py_ssize_t N, Py_ssize_t C,
                        Py_ssize_t S, Py_ssize_t c, double* mean,
                        double* var) noexcept nogil:
    """Mean and biased variance of channel c of x (N, C, S), two passes."""
    cdef Py_ssize_t n
    cdef double acc = 0, m
    cdef const floating* row
    for n in range(N):
        row = x + (n * C + c) * S
        if floating is float:
            acc += bn_sum_f(row, S)
        else:
            acc += bn_sum_d(row, S)
    m = acc / (N * S)
    acc = 0
    for n in range(N):
        row = x + (n * C + c) * S
        if floating is float:
            acc += bn_sqdev_f(row, S, m)
        else:
            acc += bn_sqdev_d(row, S, m)
    mean[0] = m
    var[0] = acc / (N * S)


cdef void channel_grad_sums(const floating* gy, const floating* x,
                            Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                            Py_ssize_t c, double mean, double* sum_g,
                            double* sum_gd) noexcept nogil:
    """sum(gy) and sum(gy * (x - mean)) over channel c."""
    cdef Py_ssize_t n, off
    sum_g[0] = 0
    sum_gd[0] = 0
    for n in range(N):
        off = (n * C + c) * S
        if floating is float:
            bn_grad_sums_f(gy + off, x + off, S, mean, sum_g, sum_gd)
        else:
            bn_grad_sums_d(gy + off, x + off, S, mean, sum_g, sum_gd)


# ---------------------------------------------------------------------------
# Drivers, called by convcore.functional after every check; arrays are
# C-contiguous (N, C, S) with N*S >= 1, per-channel arrays float64 (C,).

def stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var,
          int num_threads):
    """Per-channel mean and biased variance.               OUT: mean, var"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    with nogil:
        for c in prange(C, schedule='static', num_threads=num_threads):
            channel_stats(&x[0, 0, 0], N, C, S, c, &mean[c], &var[c])


def grad_sums(const floating[:, :, ::1] grad_y, const floating[:, :, ::1] x,
              const double[::1] mean, double[::1] sum_g, double[::1] sum_gd,
              int num_threads):
    """Per channel: sum(grad_y) and sum(grad_y * (x - mean)). OUT: sum_g, sum_gd"""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    with nogil:
        for c in prange(C, schedule='static', num_threads=num_threads):
            channel_grad_sums(&grad_y[0, 0, 0], &x[0, 0, 0], N, C, S, c,
                              mean[c], &sum_g[c], &sum_gd[c])


def normalize(const floating[:, :, ::1] x, const double[::1] mean,
              const double[::1] scale, const double[::1] shift,
              floating[:, :, ::1] y, int num_threads):
    """y = (x - mean[c]) * scale[c] + shift[c].                      OUT: y"""
    cdef Py_ssize_t C = x.shape[1], S = x.shape[2], nc, c
    cdef double m, k, b
    cdef const floating* xr
    cdef floating* yr
    with nogil:
        for nc in prange(x.shape[0] * C, schedule='static', num_threads=num_threads):
            c = nc % C
            m = mean[c]
            k = scale[c]
            b = shift[c]
            xr = &x[0, 0, 0] + nc * S
            yr = &y[0, 0, 0] + nc * S
            if floating is float:
                bn_affine_f(xr, yr, S, m, k, b)
            else:
                bn_affine_d(xr, yr, S, m, k, b)


def input_grad(const floating[:, :, ::1] grad_y, const floating[:, :, ::1] x,
               const double[::1] mean, const double[::1] a,
               const double[::1] b, const double[::1] d,
               floating[:, :, ::1] grad_x, int num_threads):
    """grad_x = grad_y * a[c] + (x - mean[c]) * b[c] + d[c].    OUT: grad_x"""
    cdef Py_ssize_t C = x.shape[1], S = x.shape[2], nc, c
    cdef double m, ka, kb, kd
    cdef const floating* gr
    cdef const floating* xr
    cdef floating* out
    with nogil:
        for nc in prange(x.shape[0] * C, schedule='static', num_threads=num_threads):
            c = nc % C
            m = mean[c]
            ka = a[c]
            kb = b[c]
            kd = d[c]
            gr = &grad_y[0, 0, 0] + nc * S
            xr = &x[0, 0, 0] + nc * S
            out = &grad_x[0, 0, 0] + nc * S
            if floating is float:
                bn_input_grad_f(gr, xr, out, S, m, ka, kb, kd)
            else:
                bn_input_grad_d(gr, xr, out, S, m, ka, kb, kd)


# ---------------------------------------------------------------------------
# Fused drivers: batch norm (or a convolution's bias) with the ReLU after it,
# and optionally a residual added before that ReLU (a ResNet block's end).
# Same preconditions as above; `residual` / `x` may be empty (shape
# (0, 0, 0)) to mean "none". Outputs may alias inputs where noted: each
# element is read, then written at the same index, by one thread.

def normalize_relu(const floating[:, :, ::1] x, const double[::1] mean,
                   const double[::1] scale, const double[::1] shift,
                   const floating[:, :, ::1] residual, floating[:, :, ::1] y,
                   int num_threads, double cap=INFINITY):
    """y = relu((x - mean[c]) * scale[c] + shift[c] [+ residual]), also
    capped at `cap` when finite (ReLU6: 6).                         OUT: y

    y may be x itself (in place): with mean 0 and scale 1 this is a
    convolution's bias + ReLU epilogue on its own output."""
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
                bn_affine_relu_f(xr, rr, yr, S, m, k, b, cap)
            else:
                bn_affine_relu_d(xr, rr, yr, S, m, k, b, cap)


def relu_grad_sums(const floating[:, :, ::1] grad_y, const floating[:, :, ::1] y,
                   const floating[:, :, ::1] x, const double[::1] mean,
                   floating[:, :, ::1] grad_m, double[::1] sum_g, double[::1] sum_gd,
                   int num_threads, double cap=INFINITY):
    """ReLU backward and the per-channel sums after it, in one pass:
    grad_m = grad_y where y > 0 (and y < cap when cap is finite: ReLU6)
    else 0 (grad_m may be grad_y: in place);
    sum_g[c] = sum(grad_m), and, when x is not empty, sum_gd[c] =
    sum(grad_m * (x - mean[c])).  Channels in parallel, each summed in
    image order: the same at any thread count. OUT: grad_m, sum_g, sum_gd"""
    cdef Py_ssize_t N = y.shape[0], C = y.shape[1], S = y.shape[2], c, n, off
    cdef bint has_x = x.shape[0] != 0
    cdef double m
    with nogil:
        for c in prange(C, schedule='static', num_threads=num_threads):
            sum_g[c] = 0
            sum_gd[c] = 0
            m = mean[c] if has_x else 0.0
            for n in range(N):
                off = (n * C + c) * S
                if floating is float:
                    bn_mask_grad_sums_f(&grad_y[0, 0, 0] + off, &y[0, 0, 0] + off,
                                        (&x[0, 0, 0] + off) if has_x else NULL,
                                        &grad_m[0, 0, 0] + off, S, m,
                                        &sum_g[c], &sum_gd[c], cap)
                else:
                    bn_mask_grad_sums_d(&grad_y[0, 0, 0] + off, &y[0, 0, 0] + off,
                                        (&x[0, 0, 0] + off) if has_x else NULL,
                                        &grad_m[0, 0, 0] + off, S, m,
                                        &sum_g[c], &sum_gd[c], cap)
