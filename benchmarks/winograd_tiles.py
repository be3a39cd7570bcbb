"""im2col against Winograd F(2x2) and F(4x4) on square 3x3 layers (C -> C,
padding 1), forward and forward+backward with the weight transforms paid
per call, as in training: the measurements behind the Winograd rows of
results/auto_choice.md.

    python benchmarks/winograd_tiles.py --channels 256 512 --sizes 14 28 --batches 2 4 8

Prints one line per layer: forward / forward+backward ms of each, and
which is fastest. Medians of --repeats calls on convcore's threads (the
BLAS held to one, as the algorithms run it). A benchmark, not a test.
"""
import argparse
import time

import numpy as np

import convcore
import convcore.functional as F
from convcore._kernels import winograd
from convcore._runtime import threads
from convcore.algorithms.winograd import WinogradConv
from convcore.functional._conv_spec import conv_spec

TILES = ("winograd_f2", "winograd_f4")


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def tile_passes(x, w, gy, spec, tile, nt):
    """Forward and backward closures of one tile, transforms included."""
    C = w.shape[0]
    y = np.empty(spec.out_shape, x.dtype)
    gx, gw = np.empty_like(x), np.empty_like(w)
    bias = np.empty(0, x.dtype)

    def forward():
        u = WinogradConv._transform(w, tile)
        with threads.blas_single():
            winograd.forward(x, u, bias, y, spec.params, tile, nt)

    def backward():
        u = WinogradConv._transform(WinogradConv._flipped(w, spec), tile)
        du = np.empty((winograd.points(tile), C, C), x.dtype)
        with threads.blas_single():
            winograd.backward_data(gy, u, gx, spec.params, tile, nt)
            winograd.backward_weight(x, gy, du, spec.params, tile, nt)
        winograd.untransform_weight_grad(du, gw, tile, nt)

    return forward, backward


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 7, 10, 14])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    convcore.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    for C in args.channels:
        for S in args.sizes:
            for N in args.batches:
                x = rng.random((N, C, S, S), dtype=np.float32)
                w = rng.random((C, C, 3, 3), dtype=np.float32) - 0.5
                spec = conv_spec(x.shape, w.shape, x.dtype, 1, 1, 1, 1, "winograd_tiles")
                gy = rng.random(spec.out_shape, dtype=np.float32)
                times = {"im2col": (
                    median_ms(lambda: F.conv2d(x, w, None, 1, 1, 1, 1, "im2col"), args.repeats),
                    median_ms(lambda: F.conv2d_backward(gy, x, w, 1, 1, 1, 1, "im2col",
                                                        bias=False), args.repeats))}
                for tile in TILES:
                    fwd, bwd = tile_passes(x, w, gy, spec, tile, args.threads)
                    times[tile[-2:]] = (median_ms(fwd, args.repeats),
                                        median_ms(bwd, args.repeats))
                cells = " ".join(f"{k} {f:.2f}/{f + b:.2f}" for k, (f, b) in times.items())
                fastest_fwd = min(times, key=lambda k: times[k][0])
                fastest_train = min(times, key=lambda k: sum(times[k]))
                print(f"C{C} {S}x{S} N{N}: {cells} | fastest forward {fastest_fwd}, "
                      f"forward+backward {fastest_train}", flush=True)


if __name__ == "__main__":
    main()
