# OpenMP runtime calls that compile with or without OpenMP: without it the
# stubs in openmp_stubs.h make every kernel run serially (one thread, thread number 0).
cdef extern from "convcore/_kernels/openmp_stubs.h":
    bint CONVCORE_USE_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_procs() noexcept nogil
    double omp_get_wtime() noexcept nogil
