/* Batch norm's elementwise row loops, in double arithmetic for float32
   too, so x close to the mean keeps its digits in (x - m). The channel
   sums live in row_reductions.h. */
#ifndef CONVCORE_BATCHNORM_H
#define CONVCORE_BATCHNORM_H

#include <stddef.h>
#include <math.h>
#include "simd.h"   /* CONVCORE_CLONES */
#include "row_reductions.h"

#define CONVCORE_BN_ROWS(T, SUFFIX)                                            \
/* y = clamp(T((x - m) * k + b) [+ r], lo, hi): the normalisation alone        \
   (lo = -inf, hi = +inf), or with a fused ReLU (lo = 0) or ReLU6-like cap     \
   (hi finite) and a residual r added before it. The affine is rounded to      \
   T first and r added in T, so the result is bit for bit the unfused          \
   normalisation, then the add, then the ReLU. `v < lo ? lo : v` lets NaN      \
   through, as torch's relu and hardtanh do. r may be NULL; y may be x (in     \
   place). */                                                                  \
CONVCORE_CLONES                                                                \
static void bn_affine_clamp_##SUFFIX(const T* x, const T* r, T* y,             \
                                     ptrdiff_t n, double m, double k,          \
                                     double b, double lo, double hi) {         \
    const T l = (T)lo, h = (T)hi;                                              \
    /* One loop per case, each as lean as the unfused op it replaces: a        \
       clamp at -inf or +inf would still cost a compare per element. */        \
    if (lo == -HUGE_VAL && hi == HUGE_VAL && !r) {                             \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t i = 0; i < n; ++i)                                      \
            y[i] = (T)(((double)x[i] - m) * k + b);                            \
    } else if (hi < HUGE_VAL) {                                                \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t i = 0; i < n; ++i) {                                    \
            T v = (T)(((double)x[i] - m) * k + b);                             \
            if (r) v = v + r[i];                                               \
            v = v < l ? l : v;                                                 \
            y[i] = v > h ? h : v;                                              \
        }                                                                      \
    } else if (r) {                                                            \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t i = 0; i < n; ++i) {                                    \
            T v = (T)(((double)x[i] - m) * k + b); v = v + r[i];               \
            y[i] = v < l ? l : v;                                              \
        }                                                                      \
    } else {                                                                   \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t i = 0; i < n; ++i) {                                    \
            T v = (T)(((double)x[i] - m) * k + b);                             \
            y[i] = v < l ? l : v;                                              \
        }                                                                      \
    }                                                                          \
}                                                                              \
/* out = g * ka + (x - m) * kb + kd */                                         \
CONVCORE_CLONES                                                                \
static void bn_input_grad_##SUFFIX(const T* g, const T* x, T* out,             \
                                   ptrdiff_t n, double m, double ka,           \
                                   double kb, double kd) {                     \
    _Pragma("omp simd")                                                        \
    for (ptrdiff_t i = 0; i < n; ++i)                                          \
        out[i] = (T)((double)g[i] * ka + ((double)x[i] - m) * kb + kd);        \
}                                                                              \
/* ReLU backward fused with the reductions that follow it:                     \
   gm = (y > 0 ? g : 0) (torch's threshold_backward: zero where y <= 0)        \
   written out (gm may be g, in place), and sum(gm), and when x is not         \
   NULL sum(gm * (x - m)). Per block of 1024: the mask loop (a vector          \
   select; a branch would mispredict on half the elements, and GCC does        \
   not if-convert it inside the reduction loop), then the sums over the        \
   block just written, still in L1: one pass over memory. */                   \
CONVCORE_CLONES                                                                \
static void bn_mask_grad_sums_##SUFFIX(const T* g, const T* y, const T* x,     \
                                       T* gm, ptrdiff_t n, double m,           \
                                       double* sum_g, double* sum_gd,          \
                                       double cap) {                           \
    const T c = (T)cap;                                                        \
    const int capped = cap < HUGE_VAL;                                         \
    for (ptrdiff_t lo = 0; lo < n; lo += 1024) {                               \
        ptrdiff_t len = n - lo < 1024 ? n - lo : 1024;                         \
        const T* gb = g + lo; const T* yb = y + lo; T* mb = gm + lo;           \
        if (capped) { /* hardtanh_backward: none at 0, cap and beyond */       \
            _Pragma("omp simd")                                                \
            for (ptrdiff_t i = 0; i < len; ++i) {                              \
                T gv = gb[i], yv = yb[i];                                      \
                mb[i] = (yv <= 0) | (yv >= c) ? (T)0 : gv;                     \
            }                                                                  \
        } else {                                                               \
            _Pragma("omp simd")                                                \
            for (ptrdiff_t i = 0; i < len; ++i) {                              \
                T gv = gb[i]; mb[i] = yb[i] <= 0 ? (T)0 : gv;                  \
            }                                                                  \
        }                                                                      \
        if (x) {                                                               \
            convcore_row_grad_sums_##SUFFIX(mb, NULL, x + lo, len, m,          \
                                            sum_g, sum_gd);                    \
        } else {                                                               \
            *sum_g += convcore_row_sum_##SUFFIX(mb, len);                      \
        }                                                                      \
    }                                                                          \
}

CONVCORE_BN_ROWS(float, f)
CONVCORE_BN_ROWS(double, d)

#endif /* CONVCORE_BATCHNORM_H */
