# Strided dot product and sum whose reduction the compiler may vectorise: a plain
# Cython loop over `acc += a[i] * b[i*stride]` is not, since reordering a
# float sum needs permission (-ffast-math, which we refuse: it breaks NaN
# handling). `omp simd reduction` grants it for this loop only (-fopenmp or
# -fopenmp-simd; ignored otherwise). The order is fixed by the binary, so
# results do not depend on the thread count.
cdef extern from *:
    """
    #include <stddef.h>
    static inline float convcore_sdot(const float* a, const float* b,
                                      Py_ssize_t n, Py_ssize_t bstride) {
        float acc = 0.0f;
        #pragma omp simd reduction(+:acc)
        for (Py_ssize_t i = 0; i < n; ++i) acc += a[i] * b[i * bstride];
        return acc;
    }
    static inline double convcore_ddot(const double* a, const double* b,
                                       Py_ssize_t n, Py_ssize_t bstride) {
        double acc = 0.0;
        #pragma omp simd reduction(+:acc)
        for (Py_ssize_t i = 0; i < n; ++i) acc += a[i] * b[i * bstride];
        return acc;
    }
    static inline float convcore_ssum(const float* a, Py_ssize_t n) {
        float acc = 0.0f;
        #pragma omp simd reduction(+:acc)
        for (Py_ssize_t i = 0; i < n; ++i) acc += a[i];
        return acc;
    }
    static inline double convcore_dsum(const double* a, Py_ssize_t n) {
        double acc = 0.0;
        #pragma omp simd reduction(+:acc)
        for (Py_ssize_t i = 0; i < n; ++i) acc += a[i];
        return acc;
    }
    """
    float convcore_ssum(const float* a, Py_ssize_t n) noexcept nogil
    double convcore_dsum(const double* a, Py_ssize_t n) noexcept nogil
    float convcore_sdot(const float* a, const float* b, Py_ssize_t n,
                        Py_ssize_t bstride) noexcept nogil
    double convcore_ddot(const double* a, const double* b, Py_ssize_t n,
                         Py_ssize_t bstride) noexcept nogil
