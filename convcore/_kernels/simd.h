/* Vector helpers shared by the kernels: load-time AVX2 copies of hot loops
   (CONVCORE_CLONES) and the short row loops of the direct kernels.

   A plain loop `acc += a[i]` does not vectorise: reordering a float sum
   needs permission (-ffast-math, which convcore refuses: it breaks NaN
   handling). `#pragma omp simd reduction` grants it for one loop only
   (-fopenmp or -fopenmp-simd; ignored otherwise). The order is fixed by the
   binary, so results do not depend on the thread count. */
#ifndef CONVCORE_SIMD_H
#define CONVCORE_SIMD_H

#include <stddef.h>

/* CONVCORE_CLONES before a hot row loop's definition compiles it twice
   where GCC (12 and later) can pick at load time (an ifunc: x86-64 Linux):
   once for x86-64-v3 (AVX2+FMA: Intel Haswell, AMD Zen and later; chosen
   by CPU features, where "arch=haswell" would test the CPU model and skip
   AMD's) and once for the baseline. The build itself stays -O3 without
   -march, so it runs on any x86-64. The AVX2 copy rounds differently
   (fused multiply-adds): results then depend on the CPU, still not on the
   thread count. Off for clang, in sanitizer builds and with
   CONVCORE_NO_CLONES (setup.py defines it for CONVCORE_NATIVE=1,
   CONVCORE_DEBUG=1, CONVCORE_SANITIZE=1 and CONVCORE_NO_CLONES=1 builds). */
#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__) \
    && defined(__x86_64__) && defined(__linux__) \
    && !defined(__SANITIZE_ADDRESS__) && !defined(CONVCORE_NO_CLONES)
#define CONVCORE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define CONVCORE_HAVE_CLONES 1
#else
#define CONVCORE_CLONES
#define CONVCORE_HAVE_CLONES 0
#endif

/* y[i] += a * x[i]: a row of one kernel tap. omp simd promises no overlap
   between y and x, which GCC would otherwise test at run time on every
   (short) row, falling back to scalar code. */
static inline void convcore_saxpy(float* y, const float* x, float a, ptrdiff_t n) {
    #pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) y[i] += a * x[i];
}

static inline void convcore_daxpy(double* y, const double* x, double a, ptrdiff_t n) {
    #pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) y[i] += a * x[i];
}

/* acc[i] += a[i] * b[i] */
static inline void convcore_smuladd(float* acc, const float* a, const float* b, ptrdiff_t n) {
    #pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) acc[i] += a[i] * b[i];
}

static inline void convcore_dmuladd(double* acc, const double* a, const double* b, ptrdiff_t n) {
    #pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) acc[i] += a[i] * b[i];
}

/* Sums in the input's own precision: the direct kernels' bias and weight
   gradient rows, which accumulate in the dtype like the GEMM paths do.
   The norms and pooling use row_reductions.h (double) instead. */
static inline float convcore_ssum(const float* a, ptrdiff_t n) {
    float acc = 0.0f;
    #pragma omp simd reduction(+:acc)
    for (ptrdiff_t i = 0; i < n; ++i) acc += a[i];
    return acc;
}

static inline double convcore_dsum(const double* a, ptrdiff_t n) {
    double acc = 0.0;
    #pragma omp simd reduction(+:acc)
    for (ptrdiff_t i = 0; i < n; ++i) acc += a[i];
    return acc;
}

#endif /* CONVCORE_SIMD_H */
