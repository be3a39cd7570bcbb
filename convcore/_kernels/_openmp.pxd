# OpenMP runtime calls that compile with or without OpenMP: without it the
# stubs below make every kernel run serially (one thread, thread number 0).
cdef extern from *:
    """
    #ifdef _OPENMP
        #include <omp.h>
        #define CONVCORE_USE_OPENMP 1
    #else
        #define CONVCORE_USE_OPENMP 0
        static int omp_get_max_threads(void) { return 1; }
        static int omp_get_thread_num(void) { return 0; }
        static int omp_get_num_procs(void) { return 1; }
    #endif
    """
    bint CONVCORE_USE_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_procs() noexcept nogil
