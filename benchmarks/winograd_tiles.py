"""im2col against Winograd F(2x2) and F(4x4) on square 3x3 layers (C -> C,
padding 1), pass by pass as training runs them (forward, backward-data,
weight gradient), the weight transforms paid per call: the measurements
behind the Winograd rows of results/auto_choice.md and the tile that
WinogradConv._tile picks per pass.

    python benchmarks/winograd_tiles.py --channels 256 512 --sizes 6 10 14 --batches 8 16

Prints one line per layer: forward / backward-data / weight-gradient ms
of each, the fastest per pass, and the tiles "winograd" runs. Medians of
--repeats calls on convcore's threads (the BLAS held to one, as the
algorithms run it). A benchmark, not a test.
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
PASSES = ("forward", "backward_data", "backward_weight")


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def tile_passes(x, w, gy, spec, tile, nt):
    """Forward, backward-data and weight-gradient closures of one tile,
    transforms included."""
    C = w.shape[0]
    y = np.empty(spec.out_shape, x.dtype)
    gx, gw = np.empty_like(x), np.empty_like(w)
    bias = np.empty(0, x.dtype)

    def forward():
        u = WinogradConv._transform(w, tile)
        with threads.blas_single():
            winograd.forward(x, u, bias, y, spec.params, tile, nt)

    def backward_data():
        u = WinogradConv._transform(WinogradConv._flipped(w, spec), tile)
        with threads.blas_single():
            winograd.backward_data(gy, u, gx, spec.params, tile, nt)

    def backward_weight():
        du = np.empty((winograd.points(tile), C, C), x.dtype)
        with threads.blas_single():
            winograd.backward_weight(x, gy, du, spec.params, tile, nt)
        winograd.untransform_weight_grad(du, gw, tile, nt)

    return forward, backward_data, backward_weight


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
                times = {"im2col": tuple(median_ms(f, args.repeats) for f in (
                    lambda: F.conv2d(x, w, None, 1, 1, 1, 1, "im2col"),
                    lambda: F.conv2d_backward(gy, x, w, 1, 1, 1, 1, "im2col", bias=False,
                                              weight_grad=False),
                    lambda: F.conv2d_backward(gy, x, w, 1, 1, 1, 1, "im2col", bias=False,
                                              input_grad=False)))}
                for tile in TILES:
                    times[tile[-2:]] = tuple(median_ms(f, args.repeats)
                                             for f in tile_passes(x, w, gy, spec, tile, args.threads))
                cells = " ".join(f"{k} " + "/".join(f"{t:.2f}" for t in v) for k, v in times.items())
                fastest = "/".join(min(times, key=lambda k: times[k][i]) for i in range(3))
                chosen = "/".join(WinogradConv._tile(spec, p)[-2:] for p in PASSES)
                print(f"C{C} {S}x{S} N{N}: {cells} | fastest {fastest} | winograd runs {chosen}",
                      flush=True)


if __name__ == "__main__":
    main()
