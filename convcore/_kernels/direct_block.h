/* Register-blocked direct convolution, stride 1 and undilated, float32
   (conv_direct.pyx drives it: the forward, backward-data as the forward
   of grad_y with the flipped kernel, and the weight gradient).

   The input of one image and group is first copied into a zero-padded
   plane per channel (convcore_dblock_fill), so that every tap of every
   output is a plain unaligned vector load: rows OH + R - 1, columns at
   least the output width rounded up to whole vectors plus S - 1. An
   output block is KB output channels times NV vectors of VL output
   pixels along the rows (a vector never spans two rows; the last one of a
   row is partly past the output and stored in part). For each input
   channel and tap it loads NV vectors of input and KB broadcast weights
   and does KB*NV multiply-adds into accumulators that stay in registers
   for the whole sum: the same blocking as oneDNN's direct kernels, here
   on NCHW with the weights packed (convcore_dblock_pack) as
   [K/KB][C][R][S][KB], so that a tap's KB weights are adjacent.

   Each output is bias + sum over (c, r, s) in that order, whatever the
   block, the thread or the instance: the result does not depend on the
   thread count. The instances (VL, KB, NV) are chosen per CPU at run time
   (convcore_dblock_best): AVX-512 (16, 8, 3), AVX2+FMA (8, 4, 3), and
   the baseline (4, 4, 3) everywhere else; they keep KB*NV accumulators
   plus NV inputs and a weight within the vector registers (32, 16, 16).
   The AVX ones use fused multiply-adds, so results depend on the CPU (as
   the BLAS's do), not on the thread count. GCC's vector extensions give
   the vector width: the baseline compiles for any target.

   The weight gradient (convcore_dblock_wgrad_*) keeps KBW output channels
   times TT taps of vector partial sums in registers over an image's rows:
   per output vector it loads KBW vectors of grad_y and TT shifted input
   vectors for KBW*TT multiply-adds. Instances (VL, KBW, TT): AVX-512
   (16, 3, 9), AVX2+FMA (8, 1, 9), baseline (4, 1, 9). */
#ifndef CONVCORE_DIRECT_BLOCK_H
#define CONVCORE_DIRECT_BLOCK_H

#include <stddef.h>
#include <string.h>
#include "simd.h"   /* CONVCORE_HAVE_CLONES: GCC on x86-64 Linux */

/* GCC folds a vector load into every multiply-add that uses it (one
   load per use): this keeps one load in a register for all of them. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CONVCORE_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define CONVCORE_IN_REGISTER(v) ((void)0)
#endif

typedef struct {
    ptrdiff_t C, K;      /* input channels read, output channels made (one group) */
    ptrdiff_t R, S;
    ptrdiff_t OH, OW;
    ptrdiff_t Hp, Wp;    /* the padded planes: rows, columns */
} convcore_dblock;

typedef void (*convcore_dblock_fn)(const float* xp, const float* wpk, const float* bias,
                                   float* y, ptrdiff_t ypitch, const convcore_dblock* d,
                                   ptrdiff_t kb0, ptrdiff_t kb1);

typedef void (*convcore_dblock_wgrad_fn)(const float* xp, const float* gyp, ptrdiff_t C,
                                         ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t OH,
                                         ptrdiff_t OWv, const ptrdiff_t* toff,
                                         ptrdiff_t chunks, float* accv);

typedef struct {
    convcore_dblock_fn run;
    ptrdiff_t VL, KB;
    convcore_dblock_wgrad_fn wgrad;
    ptrdiff_t KBW;       /* output channels per weight-gradient block */
} convcore_dblock_kernel;

/* Output channels [kb0*KB, min(kb1*KB, K)) of one image and group: y has
   their planes ypitch apart (OH x OW each); xp the padded input planes
   (C of them, Hp x Wp); wpk the packed weights; bias NULL or per output
   channel of the group. */
#define CONVCORE_DBLOCK_KERNEL(NAME, ATTR, VL, KB, NV)                          \
ATTR static void NAME(const float* xp, const float* wpk, const float* bias,    \
                      float* y, ptrdiff_t ypitch, const convcore_dblock* d,    \
                      ptrdiff_t kb0, ptrdiff_t kb1) {                          \
    typedef float vec __attribute__((vector_size((VL) * 4)));                  \
    typedef float uvec __attribute__((vector_size((VL) * 4), aligned(4),       \
                                      may_alias));                             \
    const ptrdiff_t C = d->C, K = d->K, R = d->R, S = d->S;                    \
    const ptrdiff_t OH = d->OH, OW = d->OW, Wp = d->Wp;                        \
    const ptrdiff_t plane = d->Hp * Wp, taps = R * S;                          \
    const ptrdiff_t per_row = (OW + (VL) - 1) / (VL), npos = OH * per_row;     \
    for (ptrdiff_t kb = kb0; kb < kb1; ++kb) {                                 \
        const float* wb = wpk + kb * C * taps * (KB);                          \
        const ptrdiff_t k0 = kb * (KB);                                        \
        const ptrdiff_t nk = K - k0 < (KB) ? K - k0 : (KB);                    \
        for (ptrdiff_t pos0 = 0; pos0 < npos; pos0 += (NV)) {                  \
            ptrdiff_t off[NV], oh[NV], ow[NV];                                 \
            const ptrdiff_t nv = npos - pos0 < (NV) ? npos - pos0 : (NV);      \
            for (int j = 0; j < (NV); ++j) {                                   \
                /* a short last block repeats its last vector, not stored */   \
                const ptrdiff_t pos = pos0 + (j < nv ? j : nv - 1);            \
                oh[j] = pos / per_row;                                         \
                ow[j] = (pos - oh[j] * per_row) * (VL);                        \
                off[j] = oh[j] * Wp + ow[j];                                   \
            }                                                                  \
            vec acc[KB][NV];                                                   \
            _Pragma("GCC unroll 8")                                            \
            for (int k = 0; k < (KB); ++k) {                                   \
                const float b = bias != NULL && k < nk ? bias[k0 + k] : 0.0f;  \
                _Pragma("GCC unroll 4")                                        \
                for (int j = 0; j < (NV); ++j) acc[k][j] = (vec){0} + b;       \
            }                                                                  \
            for (ptrdiff_t c = 0; c < C; ++c) {                                \
                const float* xc = xp + c * plane;                              \
                const float* wc = wb + c * taps * (KB);                        \
                for (ptrdiff_t r = 0; r < R; ++r) {                            \
                    for (ptrdiff_t s = 0; s < S; ++s) {                        \
                        const float* xr = xc + r * Wp + s;                     \
                        const float* wt = wc + (r * S + s) * (KB);             \
                        vec xv[NV];                                            \
                        _Pragma("GCC unroll 4")                                \
                        for (int j = 0; j < (NV); ++j)                         \
                            xv[j] = *(const uvec*)(xr + off[j]);               \
                        _Pragma("GCC unroll 8")                                \
                        for (int k = 0; k < (KB); ++k) {                       \
                            const vec wv = wt[k] - (vec){0}; /* x - 0 is x */  \
                            _Pragma("GCC unroll 4")                            \
                            for (int j = 0; j < (NV); ++j)                     \
                                acc[k][j] += wv * xv[j];                       \
                        }                                                      \
                    }                                                          \
                }                                                              \
            }                                                                  \
            for (ptrdiff_t k = 0; k < nk; ++k) {                               \
                float* yk = y + (k0 + k) * ypitch;                             \
                for (ptrdiff_t j = 0; j < nv; ++j) {                           \
                    float* dst = yk + oh[j] * OW + ow[j];                      \
                    if (ow[j] + (VL) <= OW) {                                  \
                        *(uvec*)dst = acc[k][j];                               \
                    } else {                                                   \
                        float part[VL];                                        \
                        memcpy(part, &acc[k][j], sizeof part);                 \
                        memcpy(dst, part, (OW - ow[j]) * sizeof(float));       \
                    }                                                          \
                }                                                              \
            }                                                                  \
        }                                                                      \
    }                                                                          \
}

CONVCORE_DBLOCK_KERNEL(convcore_dblock_base, , 4, 4, 3)
#if CONVCORE_HAVE_CLONES
CONVCORE_DBLOCK_KERNEL(convcore_dblock_avx2, __attribute__((target("arch=x86-64-v3"))), 8, 4, 3)
CONVCORE_DBLOCK_KERNEL(convcore_dblock_avx512, __attribute__((target("arch=x86-64-v4"))), 16, 8, 3)
#endif

/* The weight gradient of one group, in vector partial sums: for input
   channel c and chunk ch of TT taps (tap offsets toff[ch*TT + t] into a
   padded plane, r*Wp + s; a short last chunk repeats a tap, not kept),
   accv[((c*chunks + ch)*KBW + k)*TT + t] (vectors of VL) += sum over the
   output positions of gyp[k] * xp[c] shifted by the tap, for one image:
   xp its padded input planes (C of Hp x Wp), gyp KBW planes of OH x OWv
   of grad_y (the output width rounded up to whole vectors, zero past it
   and in the planes past the layer's channels). Lanes add in a fixed
   order (image, row, vector), whatever the thread. */
#define CONVCORE_DBLOCK_WGRAD(NAME, ATTR, VL, KBW, TT)                          \
ATTR static void NAME(const float* xp, const float* gyp, ptrdiff_t C,          \
                      ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t OH, ptrdiff_t OWv,  \
                      const ptrdiff_t* toff, ptrdiff_t chunks, float* accv) {  \
    typedef float vec __attribute__((vector_size((VL) * 4)));                  \
    typedef float uvec __attribute__((vector_size((VL) * 4), aligned(4),       \
                                      may_alias));                             \
    const ptrdiff_t gplane = OH * OWv;                                         \
    for (ptrdiff_t c = 0; c < C; ++c) {                                        \
        const float* xc = xp + c * Hp * Wp;                                    \
        for (ptrdiff_t ch = 0; ch < chunks; ++ch) {                            \
            const ptrdiff_t* to = toff + ch * (TT);                            \
            uvec* av = (uvec*)(accv + (c * chunks + ch) * (KBW) * (TT) * (VL)); \
            vec acc[KBW][TT];                                                  \
            _Pragma("GCC unroll 4")                                            \
            for (int k = 0; k < (KBW); ++k)                                    \
                _Pragma("GCC unroll 9")                                        \
                for (int t = 0; t < (TT); ++t) acc[k][t] = av[k * (TT) + t];   \
            for (ptrdiff_t oh = 0; oh < OH; ++oh) {                            \
                for (ptrdiff_t ow = 0; ow < OWv; ow += (VL)) {                 \
                    const float* xb = xc + oh * Wp + ow;                       \
                    vec g[KBW];                                                \
                    _Pragma("GCC unroll 4")                                    \
                    for (int k = 0; k < (KBW); ++k)                            \
                        g[k] = *(const uvec*)(gyp + k * gplane + oh * OWv + ow); \
                    _Pragma("GCC unroll 9")                                    \
                    for (int t = 0; t < (TT); ++t) {                           \
                        vec xv = *(const uvec*)(xb + to[t]);                   \
                        CONVCORE_IN_REGISTER(xv);                              \
                        _Pragma("GCC unroll 4")                                \
                        for (int k = 0; k < (KBW); ++k) acc[k][t] += g[k] * xv; \
                    }                                                          \
                }                                                              \
            }                                                                  \
            _Pragma("GCC unroll 4")                                            \
            for (int k = 0; k < (KBW); ++k)                                    \
                _Pragma("GCC unroll 9")                                        \
                for (int t = 0; t < (TT); ++t) av[k * (TT) + t] = acc[k][t];   \
        }                                                                      \
    }                                                                          \
}

#define CONVCORE_DBLOCK_TT 9   /* taps per chunk: a 3x3 kernel in one */

CONVCORE_DBLOCK_WGRAD(convcore_dblock_wgrad_base, , 4, 1, 9)
#if CONVCORE_HAVE_CLONES
CONVCORE_DBLOCK_WGRAD(convcore_dblock_wgrad_avx2, __attribute__((target("arch=x86-64-v3"))), 8, 1, 9)
CONVCORE_DBLOCK_WGRAD(convcore_dblock_wgrad_avx512, __attribute__((target("arch=x86-64-v4"))), 16, 3, 9)
#endif

/* Instance `which` (0 baseline, 1 AVX2+FMA, 2 AVX-512; the caller checks
   that the CPU has it), the baseline where it was not compiled. */
static inline convcore_dblock_kernel convcore_dblock_instance(int which) {
    convcore_dblock_kernel kern = {convcore_dblock_base, 4, 4, convcore_dblock_wgrad_base, 1};
#if CONVCORE_HAVE_CLONES
    if (which == 2) {
        kern.run = convcore_dblock_avx512; kern.VL = 16; kern.KB = 8;
        kern.wgrad = convcore_dblock_wgrad_avx512; kern.KBW = 3;
    } else if (which == 1) {
        kern.run = convcore_dblock_avx2; kern.VL = 8; kern.KB = 4;
        kern.wgrad = convcore_dblock_wgrad_avx2; kern.KBW = 1;
    }
#else
    (void)which;
#endif
    return kern;
}

/* The best instance this CPU runs: 2, 1 or 0. */
static inline int convcore_dblock_best(void) {
#if CONVCORE_HAVE_CLONES
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 1;
#endif
    return 0;
}

/* Columns of the padded planes for an output of OW pixels a row. */
static inline ptrdiff_t convcore_dblock_width(ptrdiff_t OW, ptrdiff_t S, ptrdiff_t VL) {
    return (OW + VL - 1) / VL * VL + S - 1;
}

/* xp (C planes of Hp x Wp) = x (C planes of H x W) shifted by the
   padding (pad_h, pad_w), which may be negative, where it overlaps x; the
   rest of xp is left as it is: the caller zeroes it once, then refills
   the same geometry image after image (a row of memcpy only: the borders
   cost nothing per image). */
static inline void convcore_dblock_fill(const float* x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W,
                                        ptrdiff_t pad_h, ptrdiff_t pad_w, float* xp,
                                        ptrdiff_t Hp, ptrdiff_t Wp) {
    const ptrdiff_t lo = pad_w > 0 ? pad_w : 0;
    const ptrdiff_t hi = W + pad_w < Wp ? W + pad_w : Wp;
    const ptrdiff_t i0 = pad_h > 0 ? pad_h : 0;
    const ptrdiff_t i1 = H + pad_h < Hp ? H + pad_h : Hp;
    if (hi <= lo) return;
    for (ptrdiff_t c = 0; c < C; ++c)
        for (ptrdiff_t i = i0; i < i1; ++i)
            memcpy(xp + (c * Hp + i) * Wp + lo, x + (c * H + i - pad_h) * W + (lo - pad_w),
                   (hi - lo) * sizeof(float));
}

/* wpk[kb][c][r][s][KB] = w[kb*KB + k][c][r][s] for the K filters of one
   group (C x R x S each), zero past K. flip: the kernel of backward-data
   instead, wpk[..] = w'[c'][k'][R-1-r][S-1-s] with w' the group's
   (K' = C) x (C' = K) transposed filters read from w (K x C x R x S):
   the filters of the output channel k are w[:, k] rotated by 180 degrees. */
static inline void convcore_dblock_pack(const float* w, ptrdiff_t K, ptrdiff_t C,
                                        ptrdiff_t R, ptrdiff_t S, ptrdiff_t KB,
                                        int flip, float* wpk) {
    const ptrdiff_t taps = R * S, blocks = (K + KB - 1) / KB;
    for (ptrdiff_t kb = 0; kb < blocks; ++kb)
        for (ptrdiff_t c = 0; c < C; ++c)
            for (ptrdiff_t t = 0; t < taps; ++t)
                for (ptrdiff_t k = 0; k < KB; ++k) {
                    const ptrdiff_t kk = kb * KB + k;
                    float v = 0.0f;
                    if (kk < K)
                        v = flip ? w[(c * K + kk) * taps + (taps - 1 - t)]
                                 : w[(kk * C + c) * taps + t];
                    wpk[((kb * C + c) * taps + t) * KB + k] = v;
                }
}

#endif /* CONVCORE_DIRECT_BLOCK_H */
