/* Flush-to-zero / denormals-are-zero bits of the SSE control register
   MXCSR (per thread); elsewhere than x86 the calls do nothing and
   CONVCORE_HAVE_MXCSR says so. */
#ifndef CONVCORE_FPENV_H
#define CONVCORE_FPENV_H

#if defined(__SSE__) || defined(_M_X64) || defined(_M_IX86)
#include <xmmintrin.h>
#define CONVCORE_HAVE_MXCSR 1
/* FTZ is bit 15 of MXCSR, DAZ bit 6. */
#define CONVCORE_FTZ_DAZ 0x8040u
static inline int convcore_get_ftz(void) {
    return (_mm_getcsr() & CONVCORE_FTZ_DAZ) == CONVCORE_FTZ_DAZ;
}
static inline void convcore_set_ftz(int on) {
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(on ? (csr | CONVCORE_FTZ_DAZ) : (csr & ~CONVCORE_FTZ_DAZ));
}
#else
#define CONVCORE_HAVE_MXCSR 0
static inline int convcore_get_ftz(void) { return 0; }
static inline void convcore_set_ftz(int on) { (void) on; }
#endif

#endif /* CONVCORE_FPENV_H */
