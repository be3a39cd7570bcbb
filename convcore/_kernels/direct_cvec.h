/* Direct convolution of small images, float32, vectors along the output
   channels (conv_direct.pyx drives it: the forward at any stride and
   dilation, and backward-data at stride 1 as the forward of grad_y with
   the flipped kernel).

   On small images the row-vector kernels of direct_block.h fill few lanes
   (a 7-pixel row in a 16-lane vector) and im2col's GEMM multiplies the
   zero padding with everything else: a 3x3 kernel with padding 1 reads
   real data for 49 of its 81 (tap, pixel) pairs on a 3x3 image, 100 of
   144 on 4x4. Here the input is copied image-minor, x2[pos][c][n] (pos =
   ih*W + iw, n up to Np, a whole number of tiles, the rest zero), so that
   the same pixel of NP consecutive images lies side by side, and the
   weights as wpk[kb][t][c][KB] (t = r*S + s, KB output channels of block
   kb, zero past K). A task is one block of KB output channels at one
   output position (oh, ow) for a run of tiles of NP images (the driver
   chooses: every tile, or one): for each tile and each tap that
   reads inside the image (the others are skipped, not multiplied by
   zero) and each input channel, it loads KB/VL weight vectors and
   broadcasts NP input values, for KB/VL * NP multiply-adds into
   accumulators that stay in registers for the whole sum, like a GEMM
   micro-kernel over (output channels) x (images).

   Each output is bias + sum over the valid taps in order, and within a
   tap over the input channels in order, whatever the task, thread or
   instance order: the result does not depend on the thread count. The
   instances (VL, KB, NP) are chosen per CPU at run time with
   convcore_dblock_best: AVX-512 (16, 32, 8), AVX2+FMA (8, 24, 4), the
   baseline (4, 8, 6); they keep KB/VL * NP accumulators, KB/VL weights
   and one broadcast within the vector registers (32, 16, 16). Layers of
   at most 16 filters have AVX-512's narrow instance (16, 16, 16) besides,
   whose 16 images keep as many accumulators as the wide one. The packed
   weights are 64-byte aligned and loaded as aligned vectors: GCC splits
   unaligned 256-bit loads in two for generic x86-64-v3 tuning. */
#ifndef CONVCORE_DIRECT_CVEC_H
#define CONVCORE_DIRECT_CVEC_H

#include <stddef.h>
#include "direct_block.h"   /* convcore_dblock_best, CONVCORE_HAVE_CLONES */

typedef struct {
    ptrdiff_t C, K;            /* input channels, output channels */
    ptrdiff_t H, W, OH, OW;
    ptrdiff_t R, S;
    ptrdiff_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
    ptrdiff_t N, Np;           /* images; images in x2 (whole tiles) */
} convcore_cvec;

/* Output channels [kb*KB, +KB) at output position pos (oh*OW + ow) of
   the images [n_begin, n_end) (whole tiles; images past N are not
   written): y (N, K, OH, OW); bias NULL or per output channel. */
typedef void (*convcore_cvec_fn)(const float* x2, const float* wpk, const float* bias,
                                 float* y, const convcore_cvec* d, ptrdiff_t kb,
                                 ptrdiff_t pos, ptrdiff_t n_begin, ptrdiff_t n_end);

typedef struct {
    convcore_cvec_fn run;
    ptrdiff_t KB, NP;
} convcore_cvec_kernel;

#define CONVCORE_CVEC_KERNEL(NAME, ATTR, VL, KB, NP)                           \
ATTR static void NAME(const float* x2, const float* wpk, const float* bias,    \
                      float* y, const convcore_cvec* d, ptrdiff_t kb,          \
                      ptrdiff_t pos, ptrdiff_t n_begin, ptrdiff_t n_end) {     \
    typedef float vec __attribute__((vector_size((VL) * 4)));                  \
    typedef float uvec __attribute__((vector_size((VL) * 4), aligned(4),       \
                                      may_alias));                             \
    enum { NVEC = (KB) / (VL) };                                               \
    const ptrdiff_t C = d->C, K = d->K, S = d->S, Np = d->Np;                  \
    const ptrdiff_t oh = pos / d->OW, ow = pos % d->OW;                        \
    const ptrdiff_t P = d->OH * d->OW, k0 = kb * (KB);                         \
    const ptrdiff_t nk = K - k0 < (KB) ? K - k0 : (KB);                        \
    const float* wb = wpk + kb * d->R * S * C * (KB);                          \
    for (ptrdiff_t n0 = n_begin; n0 < n_end; n0 += (NP)) {                     \
        vec acc[NP][NVEC];                                                     \
        _Pragma("GCC unroll 16")                                               \
        for (int j = 0; j < (NP); ++j)                                         \
            _Pragma("GCC unroll 4")                                            \
            for (int v = 0; v < NVEC; ++v) acc[j][v] = (vec){0};               \
        for (ptrdiff_t r = 0; r < d->R; ++r) {                                 \
            const ptrdiff_t ih = oh * d->stride_h - d->pad_h + r * d->dil_h;   \
            if (ih < 0 || ih >= d->H) continue;                                \
            for (ptrdiff_t s = 0; s < S; ++s) {                                \
                const ptrdiff_t iw = ow * d->stride_w - d->pad_w + s * d->dil_w; \
                if (iw < 0 || iw >= d->W) continue;                            \
                const float* xp = x2 + (ih * d->W + iw) * C * Np + n0;         \
                const float* wp = wb + (r * S + s) * C * (KB);                 \
                for (ptrdiff_t c = 0; c < C; ++c) {                            \
                    vec wv[NVEC];                                              \
                    _Pragma("GCC unroll 4")                                    \
                    for (int v = 0; v < NVEC; ++v)                             \
                        wv[v] = *(const vec*)(wp + v * (VL));  /* aligned */   \
                    _Pragma("GCC unroll 16")                                   \
                    for (int j = 0; j < (NP); ++j) {                           \
                        const vec xv = xp[j] - (vec){0};  /* x - 0 is x */     \
                        _Pragma("GCC unroll 4")                                \
                        for (int v = 0; v < NVEC; ++v) acc[j][v] += wv[v] * xv; \
                    }                                                          \
                    xp += Np;                                                  \
                    wp += (KB);                                                \
                }                                                              \
            }                                                                  \
        }                                                                      \
        for (ptrdiff_t j = 0; j < (NP) && n0 + j < d->N; ++j) {                \
            float out[KB];                                                     \
            memcpy(out, acc[j], sizeof out);                                   \
            float* yj = y + ((n0 + j) * K + k0) * P + pos;                     \
            for (ptrdiff_t k = 0; k < nk; ++k)                                 \
                yj[k * P] = out[k] + (bias != NULL ? bias[k0 + k] : 0.0f);     \
        }                                                                      \
    }                                                                          \
}

CONVCORE_CVEC_KERNEL(convcore_cvec_base, , 4, 8, 6)
#if CONVCORE_HAVE_CLONES
CONVCORE_CVEC_KERNEL(convcore_cvec_avx2, __attribute__((target("arch=x86-64-v3"))), 8, 24, 4)
CONVCORE_CVEC_KERNEL(convcore_cvec_avx512, __attribute__((target("arch=x86-64-v4"))), 16, 32, 8)
/* Few filters (one vector of them: LeNet's 16) over more images, to keep
   as many accumulators. */
CONVCORE_CVEC_KERNEL(convcore_cvec_avx512_narrow, __attribute__((target("arch=x86-64-v4"))),
                     16, 16, 16)
#endif

/* Instance `which` (0 baseline, 1 AVX2+FMA, 2 AVX-512: convcore_dblock_best's
   numbering), the baseline where it was not compiled. */
static inline convcore_cvec_kernel convcore_cvec_instance(int which) {
    convcore_cvec_kernel kern = {convcore_cvec_base, 8, 6};
#if CONVCORE_HAVE_CLONES
    if (which == 2) {
        kern.run = convcore_cvec_avx512; kern.KB = 32; kern.NP = 8;
    } else if (which == 1) {
        kern.run = convcore_cvec_avx2; kern.KB = 24; kern.NP = 4;
    }
#else
    (void)which;
#endif
    return kern;
}

/* The instance for at most one vector of filters: AVX-512's (16, 16, 16);
   none (run NULL) on other CPUs. */
static inline convcore_cvec_kernel convcore_cvec_narrow_instance(int which) {
    convcore_cvec_kernel kern = {NULL, 0, 0};
#if CONVCORE_HAVE_CLONES
    if (which == 2) {
        kern.run = convcore_cvec_avx512_narrow; kern.KB = 16; kern.NP = 16;
    }
#else
    (void)which;
#endif
    return kern;
}

/* x2[pos][c][n] = x[n][c][pos] for the channels [c0, c1) of N images of C
   planes of P pixels; images N..Np-1 zero. */
static inline void convcore_cvec_pack_input(const float* x, ptrdiff_t N, ptrdiff_t C,
                                            ptrdiff_t P, ptrdiff_t Np, ptrdiff_t c0,
                                            ptrdiff_t c1, float* x2) {
    for (ptrdiff_t c = c0; c < c1; ++c)
        for (ptrdiff_t pos = 0; pos < P; ++pos) {
            float* dst = x2 + (pos * C + c) * Np;
            for (ptrdiff_t n = 0; n < N; ++n) dst[n] = x[(n * C + c) * P + pos];
            for (ptrdiff_t n = N; n < Np; ++n) dst[n] = 0.0f;
        }
}

/* wpk[kb][t][c][KB] = w[kb*KB + k][c][t] (w: K filters of C x R x S), zero
   past K, for the blocks [kb0, kb1). flip: the kernel of backward-data
   instead, read from the forward's w (C x K x R x S, here K' = C filters
   of C' = K channels): wpk[..] = w[c][kb*KB + k][R*S - 1 - t]. A block is
   a transpose of KB rows of w: done through a tile of CONVCORE_CVEC_TILE
   columns of every row, so that w is read a cache line at a time and wpk
   written KB floats at a time (a gather of the KB filters per (c, t), or
   a filter at a time, ran at a third of the speed at 512 channels). */
#define CONVCORE_CVEC_TILE 16
static inline void convcore_cvec_pack_weights(const float* w, ptrdiff_t K, ptrdiff_t C,
                                              ptrdiff_t taps, ptrdiff_t KB, int flip,
                                              ptrdiff_t kb0, ptrdiff_t kb1, float* wpk) {
    const ptrdiff_t cols = C * taps;
    float tile[64][CONVCORE_CVEC_TILE];   /* KB <= 64 */
    for (ptrdiff_t kb = kb0; kb < kb1; ++kb) {
        float* blk = wpk + kb * cols * KB;
        const ptrdiff_t nk = K - kb * KB < KB ? K - kb * KB : KB;
        if (flip) {
            /* for each c the block's filters w[c][kb*KB ..][taps] are one run */
            for (ptrdiff_t c = 0; c < C; ++c) {
                const float* src = w + (c * K + kb * KB) * taps;
                for (ptrdiff_t t = 0; t < taps; ++t) {
                    float* dst = blk + ((taps - 1 - t) * C + c) * KB;
                    for (ptrdiff_t k = 0; k < KB; ++k)
                        dst[k] = k < nk ? src[k * taps + t] : 0.0f;
                }
            }
            continue;
        }
        for (ptrdiff_t j0 = 0; j0 < cols; j0 += CONVCORE_CVEC_TILE) {
            const ptrdiff_t nj = cols - j0 < CONVCORE_CVEC_TILE ? cols - j0 : CONVCORE_CVEC_TILE;
            for (ptrdiff_t k = 0; k < KB; ++k) {
                const float* src = w + (kb * KB + k) * cols + j0;
                if (k >= nk)
                    memset(tile[k], 0, sizeof tile[k]);
                else if (nj == CONVCORE_CVEC_TILE)
                    memcpy(tile[k], src, sizeof tile[k]);   /* inlined: fixed size */
                else
                    for (ptrdiff_t j = 0; j < nj; ++j) tile[k][j] = src[j];
            }
            for (ptrdiff_t j = 0; j < nj; ++j) {
                const ptrdiff_t c = (j0 + j) / taps, t = (j0 + j) % taps;
                float* dst = blk + (t * C + c) * KB;
                for (ptrdiff_t k = 0; k < KB; ++k) dst[k] = tile[k][j];
            }
        }
    }
}

#endif /* CONVCORE_DIRECT_CVEC_H */
