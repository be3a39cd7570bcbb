/* Row reductions of the norms and pooling, in double whatever the input
   dtype: pooling's window sums, batch norm's channel statistics and
   gradient sums, group and layer norm's row statistics and gradient sums.

   One summation for all of them, chosen by benchmarks/row_reductions.py
   (results in benchmarks/results/row_reductions.md): eight double
   accumulators, element i going to lane i % 8, the lanes added pairwise at
   the end. A plain `acc += x[i]` chain runs one add per add latency; eight
   independent chains fill the vector units at any vector width (SSE2 or
   the AVX2 copy), and because the lanes are written out rather than left
   to `omp simd reduction`, the order of the additions is the same in every
   copy: with fused multiply-adds switched off below, the results are the
   same bits on every x86-64 CPU and at every thread count.

   Variances take two passes (mean, then squared deviations from it), which
   keeps them accurate when the mean is large next to the spread. */
#ifndef CONVCORE_ROW_REDUCTIONS_H
#define CONVCORE_ROW_REDUCTIONS_H

#include <stddef.h>
#include "simd.h"

#define CONVCORE_ROW_LANES 8

/* A fused multiply-add in the AVX2 copy would round d * d differently from
   the baseline copy; keeping the product rounded costs nothing here (the
   loops are bound by loads and conversions). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

static inline double convcore_row_lanes_total(const double* a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

#define CONVCORE_ROW_REDUCTIONS(T, SUFFIX)                                    \
/* sum(x) */                                                                  \
CONVCORE_CLONES                                                               \
static double convcore_row_sum_##SUFFIX(const T* x, ptrdiff_t n) {            \
    double a[CONVCORE_ROW_LANES] = {0};                                       \
    ptrdiff_t i = 0, j;                                                       \
    for (; i + CONVCORE_ROW_LANES <= n; i += CONVCORE_ROW_LANES) {            \
        _Pragma("omp simd")                                                   \
        for (j = 0; j < CONVCORE_ROW_LANES; ++j) a[j] += (double)x[i + j];    \
    }                                                                         \
    for (j = 0; j < n - i; ++j) a[j] += (double)x[i + j];                     \
    return convcore_row_lanes_total(a);                                       \
}                                                                             \
/* sum((x - mean)^2) */                                                       \
CONVCORE_CLONES                                                               \
static double convcore_row_sqdev_##SUFFIX(const T* x, ptrdiff_t n,            \
                                          double mean) {                      \
    double a[CONVCORE_ROW_LANES] = {0};                                       \
    ptrdiff_t i = 0, j;                                                       \
    for (; i + CONVCORE_ROW_LANES <= n; i += CONVCORE_ROW_LANES) {            \
        _Pragma("omp simd")                                                   \
        for (j = 0; j < CONVCORE_ROW_LANES; ++j) {                            \
            double d = (double)x[i + j] - mean; a[j] += d * d;                \
        }                                                                     \
    }                                                                         \
    for (j = 0; j < n - i; ++j) {                                             \
        double d = (double)x[i + j] - mean; a[j] += d * d;                    \
    }                                                                         \
    return convcore_row_lanes_total(a);                                       \
}                                                                             \
/* *sum_g += sum(g), *sum_gd += sum(g * (x - mean)), g = gy * w (w NULL:      \
   1): the terms of a normalisation's input and affine gradients. */          \
CONVCORE_CLONES                                                               \
static void convcore_row_grad_sums_##SUFFIX(const T* gy, const T* w,          \
                                            const T* x, ptrdiff_t n,          \
                                            double mean, double* sum_g,       \
                                            double* sum_gd) {                 \
    double a[CONVCORE_ROW_LANES] = {0}, b[CONVCORE_ROW_LANES] = {0};          \
    ptrdiff_t i = 0, j;                                                       \
    if (w) {                                                                  \
        for (; i + CONVCORE_ROW_LANES <= n; i += CONVCORE_ROW_LANES) {        \
            _Pragma("omp simd")                                               \
            for (j = 0; j < CONVCORE_ROW_LANES; ++j) {                        \
                double g = (double)gy[i + j] * (double)w[i + j];              \
                a[j] += g; b[j] += g * ((double)x[i + j] - mean);             \
            }                                                                 \
        }                                                                     \
        for (j = 0; j < n - i; ++j) {                                         \
            double g = (double)gy[i + j] * (double)w[i + j];                  \
            a[j] += g; b[j] += g * ((double)x[i + j] - mean);                 \
        }                                                                     \
    } else {                                                                  \
        for (; i + CONVCORE_ROW_LANES <= n; i += CONVCORE_ROW_LANES) {        \
            _Pragma("omp simd")                                               \
            for (j = 0; j < CONVCORE_ROW_LANES; ++j) {                        \
                double g = (double)gy[i + j];                                 \
                a[j] += g; b[j] += g * ((double)x[i + j] - mean);             \
            }                                                                 \
        }                                                                     \
        for (j = 0; j < n - i; ++j) {                                         \
            double g = (double)gy[i + j];                                     \
            a[j] += g; b[j] += g * ((double)x[i + j] - mean);                 \
        }                                                                     \
    }                                                                         \
    *sum_g += convcore_row_lanes_total(a);                                    \
    *sum_gd += convcore_row_lanes_total(b);                                   \
}

CONVCORE_ROW_REDUCTIONS(float, f)
CONVCORE_ROW_REDUCTIONS(double, d)

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* Pooling windows: rows of a few elements summed one after another inside
   the window loop. The eight lanes' set-up and final total cost more than
   such a row, and a call through the load-time dispatch more again, so
   these are inlined and keep one double accumulator (vectorised by the
   compiler where the row is long enough). They sit outside the
   fp-contract region above: its optimize pragma would keep GCC from
   inlining them. Same precision as the family; the order differs from
   convcore_row_sum_* for rows over two elements. */
static inline double convcore_short_row_sum_f(const float* x, ptrdiff_t n) {
    double acc = 0.0;
    #pragma omp simd reduction(+:acc)
    for (ptrdiff_t i = 0; i < n; ++i) acc += (double)x[i];
    return acc;
}

static inline double convcore_short_row_sum_d(const double* x, ptrdiff_t n) {
    double acc = 0.0;
    #pragma omp simd reduction(+:acc)
    for (ptrdiff_t i = 0; i < n; ++i) acc += x[i];
    return acc;
}

#endif /* CONVCORE_ROW_REDUCTIONS_H */
