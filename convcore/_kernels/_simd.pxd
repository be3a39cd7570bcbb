# Row loops of the direct kernels and the load-time AVX2 copies
# (CONVCORE_CLONES); the C and why it is written so are in simd.h.
cdef extern from "convcore/_kernels/simd.h":
    int CONVCORE_HAVE_CLONES
    float convcore_ssum(const float* a, Py_ssize_t n) noexcept nogil
    double convcore_dsum(const double* a, Py_ssize_t n) noexcept nogil
    void convcore_saxpy(float* y, const float* x, float a, Py_ssize_t n) noexcept nogil
    void convcore_daxpy(double* y, const double* x, double a, Py_ssize_t n) noexcept nogil
    void convcore_smuladd(float* acc, const float* a, const float* b, Py_ssize_t n) noexcept nogil
    void convcore_dmuladd(double* acc, const double* a, const double* b, Py_ssize_t n) noexcept nogil
