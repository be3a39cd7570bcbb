/* Winograd tile transforms for convcore/_kernels/winograd.pyx.

   Each tile size is a set of transforms behind one descriptor
   (winograd_tile), so that one driver runs every tile size (as NNPACK's
   src/convolution-output.c does with its transform pointers):

     winograd_f2   F(2x2, 3x3): 4x4 input tiles, 2x2 outputs, 16 points
     winograd_f4   F(4x4, 3x3): 6x6 input tiles, 4x4 outputs, 36 points

   Y = A^T [ (G g G^T) . (B^T d B) ] A (Lavin & Gray 2015). The input and
   output transforms work on whole rows of tiles: the point xi of tile j
   of a row goes to v[xi*s + j], so each point's values are contiguous,
   one GEMM operand per point.

   The row loops carry `omp simd`: they have many load/store streams per
   iteration, which GCC's vectoriser leaves scalar unless promised there
   is no dependence between iterations (-fopenmp-simd, no runtime needed).

   The input row step and the output adjoint also return the sum of u - u
   over results u that together see every input: 0, or NaN when an input
   is Inf or NaN (or a sum of two overflows: a false alarm). The driver
   reports it, so the caller can recompute the layer another way: the
   transforms would smear a non-finite value over whole tiles. */
#ifndef CONVCORE_WINOGRAD_H
#define CONVCORE_WINOGRAD_H

#include <stddef.h>
#include <string.h>

/* Filters go through the weight transforms this many at a time (the
   blocks of one call in a prange): enough for long vectors and long runs
   per plane of U, while the block's taps and half-transformed filters
   (27 x this many values) stay in L1. */
#define WINOGRAD_FILTER_BLOCK 128

/* ---- F(2x2, 3x3) ------------------------------------------------------
   B^T = ( 1  0 -1  0 )   G = ( 1    0    0  )   A^T = ( 1  1  1  0 )
         ( 0  1  1  0 )       ( 1/2  1/2  1/2)         ( 0  1 -1 -1 )
         ( 0 -1  1  0 )       ( 1/2 -1/2  1/2)
         ( 0  1  0 -1 )       ( 0    0    1  )                         */

/* t = B^T d along the rows: d and t are 4 rows of n. */
#define WINOGRAD_F2_IN_ROWS(NAME, T)                                       \
static T NAME(const T* r, T* t, ptrdiff_t n) {                             \
    T bad = 0;                                                             \
    _Pragma("omp simd reduction(+:bad)")                                   \
    for (ptrdiff_t j = 0; j < n; ++j) {                                    \
        T t0 = r[j] - r[2 * n + j], t1 = r[n + j] + r[2 * n + j];          \
        T t3 = r[n + j] - r[3 * n + j];                                    \
        t[j] = t0;                                                         \
        t[n + j] = t1;                                                     \
        t[2 * n + j] = r[2 * n + j] - r[n + j];                            \
        t[3 * n + j] = t3;                                                 \
        bad += (t0 - t0) + (t1 - t1) + (t3 - t3);                          \
    }                                                                      \
    return bad;                                                            \
}

/* v[k*s + j] = (t B)[k] for the TW tiles of one row t (tile j starts at
   column 2j). */
#define WINOGRAD_F2_IN_COLS(NAME, T)                                       \
static inline void NAME(const T* t, T* v, ptrdiff_t s, ptrdiff_t TW) {     \
    _Pragma("omp simd")                                                    \
    for (ptrdiff_t j = 0; j < TW; ++j) {                                   \
        T x0 = t[2 * j], x1 = t[2 * j + 1];                                \
        T x2 = t[2 * j + 2], x3 = t[2 * j + 3];                            \
        v[j] = x0 - x2;                                                    \
        v[s + j] = x1 + x2;                                                \
        v[2 * s + j] = x2 - x1;                                            \
        v[3 * s + j] = x1 - x3;                                            \
    }                                                                      \
}

/* Two output rows (out, out + ld; 2*TW wide) of one row of tiles:
   Y = A^T m A + b. */
#define WINOGRAD_F2_OUT(NAME, T)                                           \
static void NAME(const T* m, ptrdiff_t s, T b, T* out, ptrdiff_t ld,       \
                 ptrdiff_t TW) {                                           \
    T* top = out;                                                          \
    T* bottom = out + ld;                                                  \
    _Pragma("omp simd")                                                    \
    for (ptrdiff_t j = 0; j < TW; ++j) {                                   \
        T a0 = m[j] + m[4 * s + j] + m[8 * s + j];                         \
        T a1 = m[s + j] + m[5 * s + j] + m[9 * s + j];                     \
        T a2 = m[2 * s + j] + m[6 * s + j] + m[10 * s + j];                \
        T a3 = m[3 * s + j] + m[7 * s + j] + m[11 * s + j];                \
        T c0 = m[4 * s + j] - m[8 * s + j] - m[12 * s + j];                \
        T c1 = m[5 * s + j] - m[9 * s + j] - m[13 * s + j];                \
        T c2 = m[6 * s + j] - m[10 * s + j] - m[14 * s + j];               \
        T c3 = m[7 * s + j] - m[11 * s + j] - m[15 * s + j];               \
        top[2 * j] = a0 + a1 + a2 + b;                                     \
        top[2 * j + 1] = a1 - a2 - a3 + b;                                 \
        bottom[2 * j] = c0 + c1 + c2 + b;                                  \
        bottom[2 * j + 1] = c1 - c2 - c3 + b;                              \
    }                                                                      \
}

/* The adjoint of the output transform: dm[xi*s + j] = (A gY A^T)[xi] for
   the 2x2 gradient tiles of one row (rows g, g + ld; 2*TW wide). */
#define WINOGRAD_F2_GRAD(NAME, T)                                          \
static T NAME(const T* g, ptrdiff_t ld, T* dm, ptrdiff_t s, ptrdiff_t TW) { \
    const T* top = g;                                                      \
    const T* bottom = g + ld;                                              \
    T bad = 0;                                                             \
    _Pragma("omp simd reduction(+:bad)")                                   \
    for (ptrdiff_t j = 0; j < TW; ++j) {                                   \
        T g00 = top[2 * j], g01 = top[2 * j + 1];                          \
        T g10 = bottom[2 * j], g11 = bottom[2 * j + 1];                    \
        T t10 = g00 + g10, t11 = g01 + g11;                                \
        T t20 = g00 - g10, t21 = g01 - g11;                                \
        dm[j] = g00;                 dm[s + j] = g00 + g01;                \
        dm[2 * s + j] = g00 - g01;   dm[3 * s + j] = -g01;                 \
        dm[4 * s + j] = t10;         dm[5 * s + j] = t10 + t11;            \
        dm[6 * s + j] = t10 - t11;   dm[7 * s + j] = -t11;                 \
        dm[8 * s + j] = t20;         dm[9 * s + j] = t20 + t21;            \
        dm[10 * s + j] = t20 - t21;  dm[11 * s + j] = -t21;                \
        dm[12 * s + j] = -g10;       dm[13 * s + j] = -g10 - g11;          \
        dm[14 * s + j] = g11 - g10;  dm[15 * s + j] = g11;                 \
        bad += (t10 - t10) + (t11 - t11);                                  \
    }                                                                      \
    return bad;                                                            \
}

/* out[i*step] = (G a)[i] for one column a of a filter. */
#define WINOGRAD_F2_G(NAME, T)                                             \
static inline void NAME(T a0, T a1, T a2, T* out, ptrdiff_t step) {        \
    out[0] = a0;                                                           \
    out[step] = (a0 + a1 + a2) * (T) 0.5;                                  \
    out[2 * step] = (a0 - a1 + a2) * (T) 0.5;                              \
    out[3 * step] = a2;                                                    \
}

/* out[r*step] = (G^T b)[r], b[i*bstep]: the adjoint of the above. */
#define WINOGRAD_F2_GT(NAME, T)                                            \
static inline void NAME(const T* b, ptrdiff_t bstep, T* out,               \
                        ptrdiff_t step) {                                  \
    T b0 = b[0], b1 = b[bstep], b2 = b[2 * bstep], b3 = b[3 * bstep];      \
    out[0] = b0 + (b1 + b2) * (T) 0.5;                                     \
    out[step] = (b1 - b2) * (T) 0.5;                                       \
    out[2 * step] = b3 + (b1 + b2) * (T) 0.5;                              \
}

/* ---- F(4x4, 3x3) ------------------------------------------------------
   The transforms scale by up to 8 (points 0, +-1, +-2), so float32 results
   carry more rounding than F(2x2)'s.
   B^T = ( 4  0 -5  0  1  0 )    G = ( 1/4     0     0  )
         ( 0 -4 -4  1  1  0 )        (-1/6  -1/6  -1/6  )
         ( 0  4 -4 -1  1  0 )        (-1/6   1/6  -1/6  )
         ( 0 -2 -1  2  1  0 )        ( 1/24  1/12  1/6  )
         ( 0  2 -1 -2  1  0 )        ( 1/24 -1/12  1/6  )
         ( 0  4  0 -5  0  1 )        ( 0       0     1  )
   A^T = ( 1  1  1  1  1  0 )
         ( 0  1 -1  2 -2  0 )
         ( 0  1  1  4  4  0 )
         ( 0  1 -1  8 -8  1 )                                            */

/* t = B^T d along the rows: d and t are 6 rows of Wp. */
#define WINOGRAD_F4_IN_ROWS(NAME, T)                                       \
static T NAME(const T* d, T* t, ptrdiff_t Wp) {                            \
    T bad = 0;                                                             \
    const T *d0 = d, *d1 = d + Wp, *d2 = d + 2 * Wp;                       \
    const T *d3 = d + 3 * Wp, *d4 = d + 4 * Wp, *d5 = d + 5 * Wp;          \
    T *t0 = t, *t1 = t + Wp, *t2 = t + 2 * Wp;                             \
    T *t3 = t + 3 * Wp, *t4 = t + 4 * Wp, *t5 = t + 5 * Wp;                \
    _Pragma("omp simd reduction(+:bad)")                                   \
    for (ptrdiff_t j = 0; j < Wp; ++j) {                                   \
        T a = d4[j] - 4 * d2[j], b = d3[j] - 4 * d1[j];                    \
        T c = d4[j] - d2[j], e = 2 * (d3[j] - d1[j]);                      \
        t0[j] = 4 * d0[j] - 5 * d2[j] + d4[j];                             \
        t1[j] = a + b;                                                     \
        t2[j] = a - b;                                                     \
        t3[j] = c + e;                                                     \
        t4[j] = c - e;                                                     \
        t5[j] = 4 * d1[j] - 5 * d3[j] + d5[j];                             \
        bad += (t0[j] - t0[j]) + (t5[j] - t5[j]);                          \
    }                                                                      \
    return bad;                                                            \
}

/* v[k*s + j] = (t B)[k] for the TW tiles of one row t (tile j starts at
   column 4j). */
#define WINOGRAD_F4_IN_COLS(NAME, T)                                       \
static inline void NAME(const T* t, T* v, ptrdiff_t s, ptrdiff_t TW) {     \
    _Pragma("omp simd")                                                    \
    for (ptrdiff_t j = 0; j < TW; ++j) {                                   \
        const T* x = t + 4 * j;                                            \
        T a = x[4] - 4 * x[2], b = x[3] - 4 * x[1];                        \
        T c = x[4] - x[2], e = 2 * (x[3] - x[1]);                          \
        v[j] = 4 * x[0] - 5 * x[2] + x[4];                                 \
        v[s + j] = a + b;                                                  \
        v[2 * s + j] = a - b;                                              \
        v[3 * s + j] = c + e;                                              \
        v[4 * s + j] = c - e;                                              \
        v[5 * s + j] = 4 * x[1] - 5 * x[3] + x[5];                         \
    }                                                                      \
}

/* Four output rows (out + q*ld, 4*TW wide) of one row of tiles:
   Y = A^T m A + b. */
#define WINOGRAD_F4_OUT(NAME, T)                                           \
static void NAME(const T* m, ptrdiff_t s, T bias, T* out, ptrdiff_t ld,    \
                 ptrdiff_t TW) {                                           \
    _Pragma("omp simd")                                                    \
    for (ptrdiff_t j = 0; j < TW; ++j) {                                   \
        T r[4][6];                                                         \
        for (int c = 0; c < 6; ++c) {                                      \
            T m0 = m[c * s + j], m1 = m[(6 + c) * s + j];                  \
            T m2 = m[(12 + c) * s + j], m3 = m[(18 + c) * s + j];          \
            T m4 = m[(24 + c) * s + j], m5 = m[(30 + c) * s + j];          \
            T p = m1 + m2, q = m1 - m2, u = m3 + m4, w = m3 - m4;          \
            r[0][c] = m0 + p + u;                                          \
            r[1][c] = q + 2 * w;                                           \
            r[2][c] = p + 4 * u;                                           \
            r[3][c] = q + 8 * w + m5;                                      \
        }                                                                  \
        for (int i = 0; i < 4; ++i) {                                      \
            T p = r[i][1] + r[i][2], q = r[i][1] - r[i][2];                \
            T u = r[i][3] + r[i][4], w = r[i][3] - r[i][4];                \
            T* o = out + i * ld + 4 * j;                                   \
            o[0] = r[i][0] + p + u + bias;                                 \
            o[1] = q + 2 * w + bias;                                       \
            o[2] = p + 4 * u + bias;                                       \
            o[3] = q + 8 * w + r[i][5] + bias;                             \
        }                                                                  \
    }                                                                      \
}

/* The adjoint of the output transform: dm[xi*s + j] = (A gY A^T)[xi] for
   the 4x4 gradient tiles of one row (rows g + q*ld, 4*TW wide). */
#define WINOGRAD_F4_GRAD(NAME, T)                                          \
static T NAME(const T* g, ptrdiff_t ld, T* dm, ptrdiff_t s, ptrdiff_t TW) { \
    T bad = 0;                                                             \
    _Pragma("omp simd reduction(+:bad)")                                   \
    for (ptrdiff_t j = 0; j < TW; ++j) {                                   \
        T r[4][6];                                                         \
        for (int i = 0; i < 4; ++i) {                                      \
            const T* x = g + i * ld + 4 * j;                               \
            T x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];                  \
            r[i][0] = x0;                                                  \
            r[i][1] = x0 + x1 + x2 + x3;                                   \
            r[i][2] = x0 - x1 + x2 - x3;                                   \
            r[i][3] = x0 + 2 * x1 + 4 * x2 + 8 * x3;                       \
            r[i][4] = x0 - 2 * x1 + 4 * x2 - 8 * x3;                       \
            r[i][5] = x3;                                                  \
            bad += r[i][1] - r[i][1];                                      \
        }                                                                  \
        for (int c = 0; c < 6; ++c) {                                      \
            T x0 = r[0][c], x1 = r[1][c], x2 = r[2][c], x3 = r[3][c];      \
            dm[c * s + j] = x0;                                            \
            dm[(6 + c) * s + j] = x0 + x1 + x2 + x3;                       \
            dm[(12 + c) * s + j] = x0 - x1 + x2 - x3;                      \
            dm[(18 + c) * s + j] = x0 + 2 * x1 + 4 * x2 + 8 * x3;          \
            dm[(24 + c) * s + j] = x0 - 2 * x1 + 4 * x2 - 8 * x3;          \
            dm[(30 + c) * s + j] = x3;                                     \
        }                                                                  \
    }                                                                      \
    return bad;                                                            \
}

/* out[i*step] = (G a)[i] for one column a of a filter. Multiplies by 1/6
   rather than dividing: divisions were most of the transform's time, and
   the results differ by an ulp at most. */
#define WINOGRAD_F4_G(NAME, T)                                             \
static inline void NAME(T a0, T a1, T a2, T* out, ptrdiff_t step) {        \
    T sixth = (T) (1.0 / 6.0);                                             \
    T even = a0 + a2, big = a0 * (T) 0.25 + a2;                            \
    out[0] = a0 * (T) 0.25;                                                \
    out[step] = -(even + a1) * sixth;                                      \
    out[2 * step] = -(even - a1) * sixth;                                  \
    out[3 * step] = (big + a1 * (T) 0.5) * sixth;                          \
    out[4 * step] = (big - a1 * (T) 0.5) * sixth;                          \
    out[5 * step] = a2;                                                    \
}

/* out[r*step] = (G^T b)[r], b[i*bstep]: the adjoint of the above. */
#define WINOGRAD_F4_GT(NAME, T)                                            \
static inline void NAME(const T* b, ptrdiff_t bstep, T* out,               \
                        ptrdiff_t step) {                                  \
    T b0 = b[0], b1 = b[bstep], b2 = b[2 * bstep];                         \
    T b3 = b[3 * bstep], b4 = b[4 * bstep], b5 = b[5 * bstep];             \
    T sixth = (T) (1.0 / 6.0);                                             \
    T s12 = (b1 + b2) * sixth, s34 = (b3 + b4) * sixth;                    \
    out[0] = b0 * (T) 0.25 - s12 + s34 * (T) 0.25;                         \
    out[step] = ((b2 - b1) + (b3 - b4) * (T) 0.5) * sixth;                 \
    out[2 * step] = -s12 + s34 + b5;                                       \
}

/* ---- Both tiles -------------------------------------------------------- */

/* The column step of one segment of a row-transformed tile row: row i
   (t + i*Wp) through the tile's one-row step COLS into points alpha*i..
   (v + alpha*i*s). One call per segment, so that the driver calls through
   the tile descriptor once, not once per row. */
#define WINOGRAD_SEGMENT_COLS(NAME, T, ALPHA, COLS)                        \
static void NAME(const T* t, ptrdiff_t Wp, T* v, ptrdiff_t s,              \
                 ptrdiff_t TW) {                                           \
    for (int i = 0; i < ALPHA; ++i, t += Wp, v += ALPHA * s)               \
        COLS(t, v, s, TW);                                                 \
}

/* u[xi*plane + c] = (G w_c G^T)[xi] for cb <= WINOGRAD_FILTER_BLOCK
   consecutive filters w_c = w + 9c, alpha x alpha points. The block's
   taps are first laid out tap by tap, so that both steps of G run across
   the filters as vectors (one filter at a time was scalar code, the
   transform's whole cost), and u is written one point row at a time:
   alpha store streams, not alpha^2. */
#define WINOGRAD_FILTERS(NAME, T, ALPHA, G)                                \
static void NAME(const T* w, ptrdiff_t cb, T* u, ptrdiff_t plane) {        \
    enum { B = WINOGRAD_FILTER_BLOCK };                                    \
    T taps[9 * B];            /* taps[q*B + c] = w_c[q] */                 \
    T t[3 * ALPHA * B];       /* t[(3a + i)*B + c] = (G w_c)[a][i] */      \
    for (ptrdiff_t c = 0; c < cb; ++c)                                     \
        for (int q = 0; q < 9; ++q)                                        \
            taps[q * B + c] = w[9 * c + q];                                \
    for (int i = 0; i < 3; ++i) {   /* t = G w_c, by columns */            \
        _Pragma("omp simd")                                                \
        for (ptrdiff_t c = 0; c < cb; ++c)                                 \
            G(taps[i * B + c], taps[(3 + i) * B + c], taps[(6 + i) * B + c], \
              t + i * B + c, 3 * B);                                       \
    }                                                                      \
    for (int a = 0; a < ALPHA; ++a) {   /* u = t G^T, by rows */           \
        _Pragma("omp simd")                                                \
        for (ptrdiff_t c = 0; c < cb; ++c)                                 \
            G(t[3 * a * B + c], t[(3 * a + 1) * B + c], t[(3 * a + 2) * B + c], \
              u + ALPHA * a * plane + c, plane);                           \
    }                                                                      \
}

/* grad_w[9c..9c+9) = G^T D_c G, D_c[xi] = du[xi*plane + c], for cb
   consecutive filters: the adjoint of WINOGRAD_FILTERS, across the
   filters as vectors in the same way. */
#define WINOGRAD_UNFILTERS(NAME, T, ALPHA, GT)                             \
static void NAME(const T* du, ptrdiff_t plane, ptrdiff_t cb, T* grad_w) {  \
    enum { B = WINOGRAD_FILTER_BLOCK };                                    \
    T t[3 * ALPHA * B];       /* t[(3i + r)*B + c] = (D_c G)[i][r] */      \
    T taps[9 * B];            /* taps[q*B + c] = grad_w_c[q] */            \
    for (int i = 0; i < ALPHA; ++i) {   /* t = D G, by rows */             \
        _Pragma("omp simd")                                                \
        for (ptrdiff_t c = 0; c < cb; ++c)                                 \
            GT(du + ALPHA * i * plane + c, plane, t + 3 * i * B + c, B);   \
    }                                                                      \
    for (int i = 0; i < 3; ++i) {       /* grad_w = G^T t, by columns */   \
        _Pragma("omp simd")                                                \
        for (ptrdiff_t c = 0; c < cb; ++c)                                 \
            GT(t + i * B + c, 3 * B, taps + i * B + c, 3 * B);             \
    }                                                                      \
    for (ptrdiff_t c = 0; c < cb; ++c)                                     \
        for (int q = 0; q < 9; ++q)                                        \
            grad_w[9 * c + q] = taps[q * B + c];                           \
}

/* The dilated rows' gather (dst[j] = src[s*j]) and scatter (dst[s*j] =
   src[j]); DST and SRC give the index of step j at stride s. Stride 2
   gets its own loop, which vectorises as loads and shuffles; other
   strides stay scalar. */
#define WINOGRAD_STRIDED(NAME, T, DST, SRC)                                \
static void NAME(const T* src, ptrdiff_t s, T* dst, ptrdiff_t n) {         \
    if (s == 1) {                                                          \
        memcpy(dst, src, n * sizeof(T));                                   \
    } else if (s == 2) {                                                   \
        _Pragma("omp simd")                                                \
        for (ptrdiff_t j = 0; j < n; ++j) dst[DST(2, j)] = src[SRC(2, j)]; \
    } else {                                                               \
        for (ptrdiff_t j = 0; j < n; ++j) dst[DST(s, j)] = src[SRC(s, j)]; \
    }                                                                      \
}
#define WINOGRAD_AT_STRIDE(s, j) ((s) * (j))
#define WINOGRAD_AT_UNIT(s, j) (j)

#define WINOGRAD_TILE_FUNCTIONS(TILE, T, SUFFIX, ALPHA, UPPER)             \
    UPPER##_IN_ROWS(TILE##_in_rows_##SUFFIX, T)                            \
    UPPER##_IN_COLS(TILE##_in_row_cols_##SUFFIX, T)                        \
    WINOGRAD_SEGMENT_COLS(TILE##_in_cols_##SUFFIX, T, ALPHA,               \
                          TILE##_in_row_cols_##SUFFIX)                     \
    UPPER##_OUT(TILE##_out_##SUFFIX, T)                                    \
    UPPER##_GRAD(TILE##_grad_##SUFFIX, T)                                  \
    UPPER##_G(TILE##_g_##SUFFIX, T)                                        \
    UPPER##_GT(TILE##_gt_##SUFFIX, T)                                      \
    WINOGRAD_FILTERS(TILE##_filters_##SUFFIX, T, ALPHA, TILE##_g_##SUFFIX) \
    WINOGRAD_UNFILTERS(TILE##_unfilters_##SUFFIX, T, ALPHA, TILE##_gt_##SUFFIX)

WINOGRAD_TILE_FUNCTIONS(winograd_f2, float, f, 4, WINOGRAD_F2)
WINOGRAD_TILE_FUNCTIONS(winograd_f2, double, d, 4, WINOGRAD_F2)
WINOGRAD_TILE_FUNCTIONS(winograd_f4, float, f, 6, WINOGRAD_F4)
WINOGRAD_TILE_FUNCTIONS(winograd_f4, double, d, 6, WINOGRAD_F4)
WINOGRAD_STRIDED(winograd_gather_f, float, WINOGRAD_AT_UNIT, WINOGRAD_AT_STRIDE)
WINOGRAD_STRIDED(winograd_gather_d, double, WINOGRAD_AT_UNIT, WINOGRAD_AT_STRIDE)
WINOGRAD_STRIDED(winograd_scatter_f, float, WINOGRAD_AT_STRIDE, WINOGRAD_AT_UNIT)
WINOGRAD_STRIDED(winograd_scatter_d, double, WINOGRAD_AT_STRIDE, WINOGRAD_AT_UNIT)

/* A tile size: its geometry, the work-block size it runs best at, and its
   transforms for both dtypes. */
#define WINOGRAD_TRANSFORMS(T, SUFFIX)                                     \
    T (*in_rows_##SUFFIX)(const T* d, T* t, ptrdiff_t n);                  \
    void (*in_cols_##SUFFIX)(const T* t, ptrdiff_t Wp, T* v, ptrdiff_t s,  \
                             ptrdiff_t TW);                                \
    void (*out_##SUFFIX)(const T* m, ptrdiff_t s, T b, T* out,             \
                         ptrdiff_t ld, ptrdiff_t TW);                      \
    T (*grad_##SUFFIX)(const T* g, ptrdiff_t ld, T* dm, ptrdiff_t s,       \
                       ptrdiff_t TW);                                      \
    void (*filters_##SUFFIX)(const T* w, ptrdiff_t cb, T* u,               \
                             ptrdiff_t plane);                             \
    void (*unfilters_##SUFFIX)(const T* du, ptrdiff_t plane, ptrdiff_t cb, \
                               T* grad_w);

typedef struct winograd_tile {
    ptrdiff_t m;            /* output tile side */
    ptrdiff_t alpha;        /* input tile side, m + 2; alpha^2 points */
    /* Tiles per work block, before the byte budget caps it: thinner GEMMs
       lose to their call overhead, longer ones gain nothing (each tile
       size measured at its own range). */
    ptrdiff_t min_block_tiles, max_block_tiles;
    WINOGRAD_TRANSFORMS(float, f)
    WINOGRAD_TRANSFORMS(double, d)
} winograd_tile;

#define WINOGRAD_TILE_POINTERS(TILE, SUFFIX)                               \
    TILE##_in_rows_##SUFFIX, TILE##_in_cols_##SUFFIX, TILE##_out_##SUFFIX, \
    TILE##_grad_##SUFFIX, TILE##_filters_##SUFFIX, TILE##_unfilters_##SUFFIX

static const winograd_tile winograd_f2 = {
    2, 4, 64, 512,
    WINOGRAD_TILE_POINTERS(winograd_f2, f), WINOGRAD_TILE_POINTERS(winograd_f2, d)};
static const winograd_tile winograd_f4 = {
    4, 6, 32, 256,
    WINOGRAD_TILE_POINTERS(winograd_f4, f), WINOGRAD_TILE_POINTERS(winograd_f4, d)};

#endif /* CONVCORE_WINOGRAD_H */
