/* im2col's row copies.

   The rows of one tap: each row is zeros on [0, lo), a copy of the source
   on [lo, hi), zeros on [hi, n), the row loop in C with no Cython
   bookkeeping between rows. A short copy (< 64 bytes) moves 16 bytes at a
   time, the last move overlapping the one before instead of a scalar tail
   (a 10-float LeNet row is 3 moves): a plain loop would become a memmove
   call per row (GCC's loop-to-library-call pattern), costing more than the
   row. Longer rows go to memcpy, whose run-time dispatched AVX moves beat
   what this baseline x86-64 build can emit (fixed-size memcpy is one SSE
   unaligned load and store). */
#ifndef CONVCORE_IM2COL_H
#define CONVCORE_IM2COL_H

#include <stddef.h>
#include <string.h>
static inline void convcore_im2col_copy(char* restrict y, const char* restrict x,
                                        ptrdiff_t n) {
    if (n >= 64) {
        memcpy(y, x, (size_t) n);
    } else if (n >= 16) {
        ptrdiff_t i;
        for (i = 0; i + 16 <= n; i += 16) memcpy(y + i, x + i, 16);
        if (i < n) memcpy(y + n - 16, x + n - 16, 16);
    } else if (n >= 8) {
        memcpy(y, x, 8);
        memcpy(y + n - 8, x + n - 8, 8);
    } else if (n >= 4) {
        memcpy(y, x, 4);
        memcpy(y + n - 4, x + n - 4, 4);
    }
}
/* STEP, the column stride: 1 copies (above); 2 gathers y[i] = x[2*i], a
   tap at column stride 2. With the step a constant GCC vectorises that
   gather (two loads and a shuffle); at a run-time stride it stays one
   scalar load and store per element, which made im2col nearly half of a
   stride-2 3x3 layer's forward. */
#define CONVCORE_IM2COL_ROWS(NAME, T, STEP)                                    \
static inline void NAME(T* restrict y, const T* restrict x,                    \
                        ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t n,               \
                        ptrdiff_t rows, ptrdiff_t ldy, ptrdiff_t ldx) {        \
    for (ptrdiff_t r = 0; r < rows; ++r, y += ldy, x += ldx) {                 \
        for (ptrdiff_t i = 0; i < lo; ++i) y[i] = 0;                           \
        if (STEP == 1)                                                         \
            convcore_im2col_copy((char*) (y + lo), (const char*) (x + lo),     \
                                 (hi - lo) * (ptrdiff_t) sizeof(T));           \
        else                                                                   \
            for (ptrdiff_t i = lo; i < hi; ++i) y[i] = x[STEP * i];            \
        for (ptrdiff_t i = hi; i < n; ++i) y[i] = 0;                           \
    }                                                                          \
}
CONVCORE_IM2COL_ROWS(convcore_im2col_rows_f, float, 1)
CONVCORE_IM2COL_ROWS(convcore_im2col_rows_d, double, 1)
CONVCORE_IM2COL_ROWS(convcore_im2col_rows_s2_f, float, 2)
CONVCORE_IM2COL_ROWS(convcore_im2col_rows_s2_d, double, 2)

/* col2im's inverse of it: x[2*i] += y[i] on [lo, hi). */
#define CONVCORE_COL2IM_ROW_S2(NAME, T)                                        \
static inline void NAME(T* restrict x, const T* restrict y,                    \
                        ptrdiff_t lo, ptrdiff_t hi) {                          \
    for (ptrdiff_t i = lo; i < hi; ++i) x[2 * i] += y[i];                      \
}
CONVCORE_COL2IM_ROW_S2(convcore_col2im_row_s2_f, float)
CONVCORE_COL2IM_ROW_S2(convcore_col2im_row_s2_d, double)

#endif /* CONVCORE_IM2COL_H */
