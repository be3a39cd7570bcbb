/* OpenMP runtime calls that compile with or without OpenMP: without it the
   stubs make every kernel run serially (one thread, thread number 0). */
#ifndef CONVCORE_OPENMP_STUBS_H
#define CONVCORE_OPENMP_STUBS_H

#ifdef _OPENMP
#include <omp.h>
#define CONVCORE_USE_OPENMP 1
#else
#define CONVCORE_USE_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_procs(void) { return 1; }
static inline double omp_get_wtime(void) { return 0.0; }
#endif

#endif /* CONVCORE_OPENMP_STUBS_H */
