/* Max pooling's branch-free inner loop.

   One tap of a max pool swept along an output row, values and argmax
   together. Random data makes `v > max` a coin toss, so a branch per
   comparison mispredicts half the time: the selects are written as bit
   masks, which compilers turn into straight-line code (gcc otherwise
   branches on the NaN test). take = v > max, or v is NaN (PyTorch lets a
   NaN win), or no tap has been seen yet (index -1). */
#ifndef CONVCORE_POOL_H
#define CONVCORE_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#define CONVCORE_MAX_TAP(T, U, SUFFIX)                                         \
static inline void pool_max_tap_##SUFFIX(                                      \
        const T* x, ptrdiff_t sw, T* y, int64_t* idx, ptrdiff_t lo,            \
        ptrdiff_t hi, int64_t base) {                                          \
    for (ptrdiff_t o = lo; o < hi; ++o) {                                      \
        T v = x[o * sw], cur = y[o];                                           \
        int64_t ci = idx[o];                                                   \
        int take = (v > cur) | (v != v) | (ci < 0);                            \
        U vb, cb, m = (U)0 - (U)take;                                          \
        memcpy(&vb, &v, sizeof vb); memcpy(&cb, &cur, sizeof cb);              \
        cb = (cb & ~m) | (vb & m);                                             \
        memcpy(&y[o], &cb, sizeof cb);                                         \
        int64_t im = -(int64_t)take;                                           \
        idx[o] = (ci & ~im) | ((base + o * sw) & im);                          \
    }                                                                          \
}
CONVCORE_MAX_TAP(float, uint32_t, f)
CONVCORE_MAX_TAP(double, uint64_t, d)

/* The same sweep keeping the winning tap's number (i*kw + j) instead of
   its flat index: an integer as wide as the values, so values, masks and
   tap numbers fill the same vector lanes and the loop vectorises (the
   int64 index of pool_max_tap does not share float32's lanes). The row's
   flat indices are made from the tap numbers once all taps are seen. */
#define CONVCORE_MAX_TAP_ID(T, U, I, SUFFIX)                                   \
static inline void pool_max_tap_id_##SUFFIX(                                   \
        const T* x, ptrdiff_t sw, T* y, I* tap, ptrdiff_t lo, ptrdiff_t hi,    \
        I id) {                                                                \
    for (ptrdiff_t o = lo; o < hi; ++o) {                                      \
        T v = x[o * sw], cur = y[o];                                           \
        I ct = tap[o];                                                         \
        int take = (v > cur) | (v != v) | (ct < 0);                            \
        U vb, cb, m = (U)0 - (U)take;                                          \
        memcpy(&vb, &v, sizeof vb); memcpy(&cb, &cur, sizeof cb);              \
        cb = (cb & ~m) | (vb & m);                                             \
        memcpy(&y[o], &cb, sizeof cb);                                         \
        I im = (I)0 - (I)take;                                                 \
        tap[o] = (ct & ~im) | (id & im);                                       \
    }                                                                          \
}
CONVCORE_MAX_TAP_ID(float, uint32_t, int32_t, f)
CONVCORE_MAX_TAP_ID(double, uint64_t, int64_t, d)

#endif /* CONVCORE_POOL_H */
