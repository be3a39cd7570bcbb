from cython cimport floating

# Batch-norm reductions for one channel c of x viewed as (N, C, S), in
# double; public, nogil, thread-safe for distinct channels.

# mean and biased variance (two passes: the mean, then squared deviations).
cdef void channel_stats(const floating* x, Py_ssize_t N, Py_ssize_t C,
                        Py_ssize_t S, Py_ssize_t c, double* mean,
                        double* var) noexcept nogil

# sum(grad_y) and sum(grad_y * (x - mean)) over the channel.
cdef void channel_grad_sums(const floating* gy, const floating* x,
                            Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                            Py_ssize_t c, double mean, double* sum_g,
                            double* sum_gd) noexcept nogil
