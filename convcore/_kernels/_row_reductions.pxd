# The row reductions of pooling and every norm (double, a fixed order); the
# C and why it is written so are in row_reductions.h.
cdef extern from "convcore/_kernels/row_reductions.h":
    double convcore_row_sum_f(const float* x, Py_ssize_t n) noexcept nogil
    double convcore_row_sum_d(const double* x, Py_ssize_t n) noexcept nogil
    double convcore_short_row_sum_f(const float* x, Py_ssize_t n) noexcept nogil
    double convcore_short_row_sum_d(const double* x, Py_ssize_t n) noexcept nogil
    double convcore_row_sqdev_f(const float* x, Py_ssize_t n, double mean) noexcept nogil
    double convcore_row_sqdev_d(const double* x, Py_ssize_t n, double mean) noexcept nogil
    void convcore_row_grad_sums_f(const float* gy, const float* w, const float* x,
                                  Py_ssize_t n, double mean, double* sum_g,
                                  double* sum_gd) noexcept nogil
    void convcore_row_grad_sums_d(const double* gy, const double* w, const double* x,
                                  Py_ssize_t n, double mean, double* sum_g,
                                  double* sum_gd) noexcept nogil
