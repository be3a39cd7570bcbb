/* Depthwise convolution's row loops (conv_depthwise.pyx drives them).

   3x3: y[i, j] = base[i, j] + sum_{r,s} w[r, s] x[i*sh + r*dh, j*sw + s*dw]
   over a block of rows: all nine taps per output with the weights in
   registers, each output stored once. base is y itself (accumulate: pitch
   ypitch) or one row of the bias or of zeros (pitch 0). When sh == dh, two
   output rows are done together: they share two of their input rows,
   loaded once (each output's sum is the same expression either way). The
   geometry macro arguments are literals (1) in the common instance, so the
   compiler folds them, or the run-time values. omp simd promises that y
   does not overlap x (GCC would otherwise test it on every row and fall
   back to scalar code).

   The weight gradient sums g[i, j] x[i*sh + r*dh, j*sw + s*dw] over a block
   of rows for the nine taps, in nine vector accumulators that are reduced
   once per row (or row pair).

   The generators are macros because each is instantiated with literal
   geometry (folded away) as well as run-time geometry, for float and
   double. */
#ifndef CONVCORE_DEPTHWISE_H
#define CONVCORE_DEPTHWISE_H

#include <stddef.h>
#include "simd.h"   /* CONVCORE_CLONES */

#define CONVCORE_DW_TAPS3(x0, x1, x2, c, dw)                                   \
    ((w0 * x0[c] + w1 * x0[c + dw] + w2 * x0[c + 2 * dw])                      \
     + (w3 * x1[c] + w4 * x1[c + dw] + w5 * x1[c + 2 * dw])                    \
     + (w6 * x2[c] + w7 * x2[c + dw] + w8 * x2[c + 2 * dw]))
#define CONVCORE_DW_ROWS3(NAME, T, SH, SW, DH, DW)                             \
CONVCORE_CLONES                                                                \
static void NAME(T* y, ptrdiff_t ypitch, const T* base, ptrdiff_t bpitch,      \
                 const T* x, ptrdiff_t xpitch, ptrdiff_t rows,                 \
                 ptrdiff_t cols, ptrdiff_t sh, ptrdiff_t sw,                   \
                 ptrdiff_t dh, ptrdiff_t dw, const T* w) {                     \
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4];             \
    const T w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];                        \
    const ptrdiff_t rs = (SH) * xpitch, rd = (DH) * xpitch;                    \
    ptrdiff_t i = 0;                                                           \
    (void)sh; (void)sw; (void)dh; (void)dw;                                    \
    if ((SH) == (DH)) {                                                        \
        for (; i + 2 <= rows; i += 2) {                                        \
            const T* x0 = x + i * rs;                                          \
            const T* x1 = x0 + rd;                                             \
            const T* x2 = x1 + rd;                                             \
            const T* x3 = x2 + rd;                                             \
            const T* b0 = base + i * bpitch;                                   \
            const T* b1 = b0 + bpitch;                                         \
            T* y0 = y + i * ypitch;                                            \
            T* y1 = y0 + ypitch;                                               \
            _Pragma("omp simd")                                                \
            for (ptrdiff_t j = 0; j < cols; ++j) {                             \
                const T u = CONVCORE_DW_TAPS3(x0, x1, x2, j * (SW), (DW));     \
                const T v = CONVCORE_DW_TAPS3(x1, x2, x3, j * (SW), (DW));     \
                const T bu = b0[j], bv = b1[j];                                \
                y0[j] = bu + u;                                                \
                y1[j] = bv + v;                                                \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    for (; i < rows; ++i) {                                                    \
        const T* x0 = x + i * rs;                                              \
        const T* x1 = x0 + rd;                                                 \
        const T* x2 = x1 + rd;                                                 \
        const T* b0 = base + i * bpitch;                                       \
        T* y0 = y + i * ypitch;                                                \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t j = 0; j < cols; ++j)                                   \
            y0[j] = b0[j] + CONVCORE_DW_TAPS3(x0, x1, x2, j * (SW), (DW));     \
    }                                                                          \
}
#define CONVCORE_DW_DOT3(g, x0, x1, x2, c, dw)                                 \
    a0 += g * x0[c]; a1 += g * x0[c + dw]; a2 += g * x0[c + 2 * dw];           \
    a3 += g * x1[c]; a4 += g * x1[c + dw]; a5 += g * x1[c + 2 * dw];           \
    a6 += g * x2[c]; a7 += g * x2[c + dw]; a8 += g * x2[c + 2 * dw];
#define CONVCORE_DW_WGRAD3(NAME, T, SH, SW, DH, DW)                            \
static void NAME(const T* g, ptrdiff_t gpitch, const T* x,                     \
                 ptrdiff_t xpitch, ptrdiff_t rows, ptrdiff_t cols,             \
                 ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh,                     \
                 ptrdiff_t dw, T* out) {                                       \
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;          \
    T s8 = 0;                                                                  \
    const ptrdiff_t rs = (SH) * xpitch, rd = (DH) * xpitch;                    \
    ptrdiff_t i = 0, step;                                                     \
    (void)sh; (void)sw; (void)dh; (void)dw;                                    \
    for (; i < rows; i += step) {                                              \
        const T* g0 = g + i * gpitch;                                          \
        const T* g1 = g0 + gpitch;                                             \
        const T* x0 = x + i * rs;                                              \
        const T* x1 = x0 + rd;                                                 \
        const T* x2 = x1 + rd;                                                 \
        const T* x3 = x2 + rd;                                                 \
        T a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;      \
        T a8 = 0;                                                              \
        step = (SH) == (DH) && i + 2 <= rows ? 2 : 1;                          \
        if (step == 2) {                                                       \
            _Pragma("omp simd reduction(+:a0,a1,a2,a3,a4,a5,a6,a7,a8)")        \
            for (ptrdiff_t j = 0; j < cols; ++j) {                             \
                const T gu = g0[j], gv = g1[j];                                \
                CONVCORE_DW_DOT3(gu, x0, x1, x2, j * (SW), (DW))               \
                CONVCORE_DW_DOT3(gv, x1, x2, x3, j * (SW), (DW))               \
            }                                                                  \
        } else {                                                               \
            _Pragma("omp simd reduction(+:a0,a1,a2,a3,a4,a5,a6,a7,a8)")        \
            for (ptrdiff_t j = 0; j < cols; ++j) {                             \
                const T gu = g0[j];                                            \
                CONVCORE_DW_DOT3(gu, x0, x1, x2, j * (SW), (DW))               \
            }                                                                  \
        }                                                                      \
        s0 += a0; s1 += a1; s2 += a2; s3 += a3; s4 += a4;                      \
        s5 += a5; s6 += a6; s7 += a7; s8 += a8;                                \
    }                                                                          \
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3; out[4] = s4;           \
    out[5] = s5; out[6] = s6; out[7] = s7; out[8] = s8;                        \
}
/* Instances: unit (stride 1, dilation 1), s2 (stride 2, dilation 1),
   rows (unit column steps), any (all run-time); the dispatchers pick
   one from the geometry. */
#define CONVCORE_DW_PICK(SUF, KIND)                                            \
    (sh == 1 && sw == 1 && dh == 1 && dw == 1 ? KIND##_unit_##SUF              \
     : sh == 2 && sw == 2 && dh == 1 && dw == 1 ? KIND##_s2_##SUF              \
     : sw == 1 ? KIND##_rows_##SUF : KIND##_any_##SUF)
#define CONVCORE_DW_3X3(SUF, T)                                                \
CONVCORE_DW_ROWS3(convcore_dw_rows3_unit_##SUF, T, 1, 1, 1, 1)                 \
CONVCORE_DW_ROWS3(convcore_dw_rows3_s2_##SUF, T, 2, 2, 1, 1)                   \
CONVCORE_DW_ROWS3(convcore_dw_rows3_rows_##SUF, T, sh, 1, dh, dw)              \
CONVCORE_DW_ROWS3(convcore_dw_rows3_any_##SUF, T, sh, sw, dh, dw)              \
CONVCORE_DW_WGRAD3(convcore_dw_wgrad3_unit_##SUF, T, 1, 1, 1, 1)               \
CONVCORE_DW_WGRAD3(convcore_dw_wgrad3_s2_##SUF, T, 2, 2, 1, 1)                 \
CONVCORE_DW_WGRAD3(convcore_dw_wgrad3_rows_##SUF, T, sh, 1, dh, dw)            \
CONVCORE_DW_WGRAD3(convcore_dw_wgrad3_any_##SUF, T, sh, sw, dh, dw)            \
static void convcore_dw_rows3_##SUF(T* y, ptrdiff_t ypitch, const T* base,     \
        ptrdiff_t bpitch, const T* x, ptrdiff_t xpitch, ptrdiff_t rows,        \
        ptrdiff_t cols, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh,              \
        ptrdiff_t dw, const T* w) {                                            \
    CONVCORE_DW_PICK(SUF, convcore_dw_rows3)(y, ypitch, base, bpitch, x,       \
        xpitch, rows, cols, sh, sw, dh, dw, w);                                \
}                                                                              \
static void convcore_dw_wgrad3_##SUF(const T* g, ptrdiff_t gpitch,             \
        const T* x, ptrdiff_t xpitch, ptrdiff_t rows, ptrdiff_t cols,          \
        ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw,                \
        T* out) {                                                              \
    CONVCORE_DW_PICK(SUF, convcore_dw_wgrad3)(g, gpitch, x, xpitch, rows,      \
        cols, sh, sw, dh, dw, out);                                            \
}
CONVCORE_DW_3X3(f, float)
CONVCORE_DW_3X3(d, double)
/* d[i, j] = s[i, j] (ADD 0: a plane into the padded buffer) or
   b + s[i, j] (ADD 1: a result computed at the buffer's row length out
   to the plane), rows at a time, no overlap. */
#define CONVCORE_DW_COPY(NAME, T, ADD)                                         \
static void NAME(T* d, ptrdiff_t dpitch, const T* s, ptrdiff_t spitch,         \
                 ptrdiff_t rows, ptrdiff_t n, T b) {                           \
    (void)b;                                                                   \
    for (ptrdiff_t i = 0; i < rows; ++i) {                                     \
        T* dr = d + i * dpitch;                                                \
        const T* sr = s + i * spitch;                                          \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t j = 0; j < n; ++j) dr[j] = (ADD) ? b + sr[j] : sr[j];   \
    }                                                                          \
}
CONVCORE_DW_COPY(convcore_dw_copy_f, float, 0)
CONVCORE_DW_COPY(convcore_dw_copy_d, double, 0)
CONVCORE_DW_COPY(convcore_dw_unpitch_f, float, 1)
CONVCORE_DW_COPY(convcore_dw_unpitch_d, double, 1)
/* Kernels other than 3x3 go a kernel row at a time, up to three taps
   per pass (NT, a literal: the unused taps vanish at compile time):
   y[i, j] = base[i, j] + sum_t w[t] x[i*xpitch + j*SW + t*dw], x
   already offset to the pass's first tap, xpitch the input rows
   between output rows; and the weight gradient's pass, out[t] = the
   sum of g[i, j] times the same inputs. */
#define CONVCORE_DW_PASS(NAME, T, NT, SW)                                      \
CONVCORE_CLONES                                                                \
static void NAME(T* y, ptrdiff_t ypitch, const T* base, ptrdiff_t bpitch,      \
                 const T* x, ptrdiff_t xpitch, ptrdiff_t rows,                 \
                 ptrdiff_t cols, ptrdiff_t sw, ptrdiff_t dw,                   \
                 const T* w) {                                                 \
    const T w0 = w[0], w1 = (NT) > 1 ? w[1] : 0, w2 = (NT) > 2 ? w[2] : 0;     \
    (void)sw;                                                                  \
    for (ptrdiff_t i = 0; i < rows; ++i) {                                     \
        const T* xr = x + i * xpitch;                                          \
        const T* br = base + i * bpitch;                                       \
        T* yr = y + i * ypitch;                                                \
        _Pragma("omp simd")                                                    \
        for (ptrdiff_t j = 0; j < cols; ++j) {                                 \
            const ptrdiff_t c = j * (SW);                                      \
            T a = w0 * xr[c];                                                  \
            if ((NT) > 1) a += w1 * xr[c + dw];                                \
            if ((NT) > 2) a += w2 * xr[c + 2 * dw];                            \
            yr[j] = br[j] + a;                                                 \
        }                                                                      \
    }                                                                          \
}
#define CONVCORE_DW_WPASS(NAME, T, NT, SW)                                     \
static void NAME(const T* g, ptrdiff_t gpitch, const T* x,                     \
                 ptrdiff_t xpitch, ptrdiff_t rows, ptrdiff_t cols,             \
                 ptrdiff_t sw, ptrdiff_t dw, T* out) {                         \
    T s0 = 0, s1 = 0, s2 = 0;                                                  \
    (void)sw;                                                                  \
    for (ptrdiff_t i = 0; i < rows; ++i) {                                     \
        const T* gr = g + i * gpitch;                                          \
        const T* xr = x + i * xpitch;                                          \
        T a0 = 0, a1 = 0, a2 = 0;                                              \
        _Pragma("omp simd reduction(+:a0,a1,a2)")                              \
        for (ptrdiff_t j = 0; j < cols; ++j) {                                 \
            const T gv = gr[j];                                                \
            const ptrdiff_t c = j * (SW);                                      \
            a0 += gv * xr[c];                                                  \
            if ((NT) > 1) a1 += gv * xr[c + dw];                               \
            if ((NT) > 2) a2 += gv * xr[c + 2 * dw];                           \
        }                                                                      \
        s0 += a0; s1 += a1; s2 += a2;                                          \
    }                                                                          \
    out[0] = s0;                                                               \
    if ((NT) > 1) out[1] = s1;                                                 \
    if ((NT) > 2) out[2] = s2;                                                 \
}
/* Instances for 1..3 taps, unit or run-time column stride, and the
   dispatchers the Cython code calls. */
#define CONVCORE_DW_PASSES(SUF, T)                                             \
CONVCORE_DW_PASS(convcore_dw_pass1u_##SUF, T, 1, 1)                            \
CONVCORE_DW_PASS(convcore_dw_pass2u_##SUF, T, 2, 1)                            \
CONVCORE_DW_PASS(convcore_dw_pass3u_##SUF, T, 3, 1)                            \
CONVCORE_DW_PASS(convcore_dw_pass1s_##SUF, T, 1, sw)                           \
CONVCORE_DW_PASS(convcore_dw_pass2s_##SUF, T, 2, sw)                           \
CONVCORE_DW_PASS(convcore_dw_pass3s_##SUF, T, 3, sw)                           \
CONVCORE_DW_WPASS(convcore_dw_wpass1u_##SUF, T, 1, 1)                          \
CONVCORE_DW_WPASS(convcore_dw_wpass2u_##SUF, T, 2, 1)                          \
CONVCORE_DW_WPASS(convcore_dw_wpass3u_##SUF, T, 3, 1)                          \
CONVCORE_DW_WPASS(convcore_dw_wpass1s_##SUF, T, 1, sw)                         \
CONVCORE_DW_WPASS(convcore_dw_wpass2s_##SUF, T, 2, sw)                         \
CONVCORE_DW_WPASS(convcore_dw_wpass3s_##SUF, T, 3, sw)                         \
static void convcore_dw_pass_##SUF(T* y, ptrdiff_t ypitch, const T* base,      \
        ptrdiff_t bpitch, const T* x, ptrdiff_t xpitch, ptrdiff_t rows,        \
        ptrdiff_t cols, ptrdiff_t sw, ptrdiff_t dw, const T* w,                \
        ptrdiff_t nt) {                                                        \
    void (*f)(T*, ptrdiff_t, const T*, ptrdiff_t, const T*, ptrdiff_t,         \
              ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const T*) =          \
        sw == 1 ? (nt == 1 ? convcore_dw_pass1u_##SUF : nt == 2                \
                   ? convcore_dw_pass2u_##SUF : convcore_dw_pass3u_##SUF)      \
                : (nt == 1 ? convcore_dw_pass1s_##SUF : nt == 2                \
                   ? convcore_dw_pass2s_##SUF : convcore_dw_pass3s_##SUF);     \
    f(y, ypitch, base, bpitch, x, xpitch, rows, cols, sw, dw, w);              \
}                                                                              \
static void convcore_dw_wpass_##SUF(const T* g, ptrdiff_t gpitch,              \
        const T* x, ptrdiff_t xpitch, ptrdiff_t rows, ptrdiff_t cols,          \
        ptrdiff_t sw, ptrdiff_t dw, T* out, ptrdiff_t nt) {                    \
    void (*f)(const T*, ptrdiff_t, const T*, ptrdiff_t, ptrdiff_t,             \
              ptrdiff_t, ptrdiff_t, ptrdiff_t, T*) =                           \
        sw == 1 ? (nt == 1 ? convcore_dw_wpass1u_##SUF : nt == 2               \
                   ? convcore_dw_wpass2u_##SUF : convcore_dw_wpass3u_##SUF)    \
                : (nt == 1 ? convcore_dw_wpass1s_##SUF : nt == 2               \
                   ? convcore_dw_wpass2s_##SUF : convcore_dw_wpass3s_##SUF);   \
    f(g, gpitch, x, xpitch, rows, cols, sw, dw, out);                          \
}
CONVCORE_DW_PASSES(f, float)
CONVCORE_DW_PASSES(d, double)

#endif /* CONVCORE_DEPTHWISE_H */
