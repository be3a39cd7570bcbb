"""Python overhead per layer at batch 1 (issue 13, item 3).

    python benchmarks/python_overhead.py [--threads 1] [--rounds 3] [--json out.json]
    python benchmarks/python_overhead.py --resnet18 [--threads 2]

Two deep thin networks, where the arithmetic per layer is a few
microseconds and anything Python does per call shows:

  thin    50 x (Conv2d(16, 16, 3, padding=1) + ReLU) on 1x16x8x8
  mobile  13 x (depthwise Conv2d(32, 32, 3, padding=1, groups=32) + ReLU
          + Conv2d(32, 32, 1) + ReLU) on 1x32x14x14

Each runs as a network (Sequential) forward under no_grad, forward with
grad, and forward + backward, and as its bare arithmetic: the same
algorithm objects' forward/backward (the ones "auto" picks) on
preallocated arrays, and np.maximum / np.multiply for the ReLUs, in the
same order. overhead = (network - bare) / modules: what the functional
checks, the layers and the containers add per module. The algorithms'
own Python (algorithms.py: thread planning, the BLAS thread context) is
inside "bare"; the per-layer table below shows it separately:

  raw kernel     the kernel module's driver called directly
  algo           ConvAlgorithm.forward (what "bare" sums)
  F.conv2d       the functional call (checks, plan, allocation)
  layer          Conv2d.__call__ (module machinery, cache for backward)

Medians of `--rounds` interleaved rounds. At one thread the clock is the
process's CPU time (--clock cpu, the default there): on a shared machine
wall time also counts the time other processes hold the core, which
swamps microsecond differences; with more threads it is wall time (idle
and spinning worker threads would distort CPU time). Compare runs made
back to back.
"""
import argparse
import json
import os
import statistics
import sys
import time
import timeit

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:  # an installed convcore (or one on PYTHONPATH) comes first ...
    import convcore
except ImportError:  # ... else the checkout's in-place build
    sys.path.insert(0, ROOT)
    import convcore
from convcore import nn  # noqa: E402
from convcore._runtime import threads as _threads
from convcore._kernels import conv_depthwise, conv_gemm  # noqa: E402
from convcore._kernels.conv_direct import bias_grad  # noqa: E402
from convcore.algorithms import _blas_has_small_gemm, select_algorithm  # noqa: E402
from convcore.functional import conv2d  # noqa: E402
from convcore.functional._conv_spec import conv_spec  # noqa: E402


_clock = time.perf_counter


def _median_time(f, reps, inner):
    samples = []
    for _ in range(reps):
        t = _clock()
        for _ in range(inner):
            f()
        samples.append((_clock() - t) / inner)
    return statistics.median(samples)


def thin(depth=50, c=16):
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(c, c, 3, padding=1, rng=0), nn.ReLU()]
    return nn.Sequential(*layers), (1, c, 8, 8)


def mobile(depth=13, c=32):
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(c, c, 3, padding=1, groups=c, rng=0), nn.ReLU(),
                   nn.Conv2d(c, c, 1, rng=0), nn.ReLU()]
    return nn.Sequential(*layers), (1, c, 14, 14)


def _spec(m, x):
    return conv_spec(x.shape, m.weight.shape, x.dtype, m.stride, m.padding,
                     m.dilation, m.groups)


def bare(net, x):
    """(forward, forward + backward) closures running only the arithmetic."""
    fwd, bwd = [], []
    y = x
    for m in net:
        if isinstance(m, nn.Conv2d):
            spec = _spec(m, y)
            algo = select_algorithm(spec)
            out = np.empty(spec.out_shape, y.dtype)
            gx, gw = np.empty(y.shape, y.dtype), np.empty(m.weight.shape, y.dtype)
            gb = np.empty(spec.K, y.dtype)
            w, b = m.weight.data, m.bias.data
            fwd.append(lambda a=algo, x=y, w=w, b=b, o=out, s=spec: a.forward(x, w, b, o, s))
            bwd.append(lambda a=algo, x=y, w=w, o=out, s=spec, gx=gx, gw=gw, gb=gb: (
                a.backward(o, x, w, gx, gw, True, True, s),
                bias_grad(o, gb, _threads.kernel_threads(o.size))))
        else:
            out, g = np.empty_like(y), np.empty_like(y)
            fwd.append(lambda x=y, o=out: np.maximum(x, 0, out=o))
            bwd.append(lambda x=y, o=out, g=g: np.multiply(x, o > 0, out=g))
        y = out

    def forward():
        for f in fwd:
            f()

    def forward_backward():
        forward()
        for f in reversed(bwd):
            f()
    return forward, forward_backward


def network(name, net, shape, rounds):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    n = len(net)
    net.train()
    gy = np.ones_like(net(x))

    def no_grad():
        with convcore.no_grad():
            net(x)

    def fwd_bwd():
        net(x)
        net.backward(gy)
    bare_f, bare_fb = bare(net, x)
    runs = {}
    for _ in range(rounds):
        for key, f, inner in (("fwd_nograd", no_grad, 5), ("fwd_grad", lambda: net(x), 5),
                              ("fwd_bwd", fwd_bwd, 2), ("bare_fwd", bare_f, 5),
                              ("bare_fwd_bwd", bare_fb, 2)):
            runs.setdefault(key, []).append(_median_time(f, 20, inner) * 1e6)
    r = {k: statistics.median(v) for k, v in runs.items()}
    r.update(name=name, modules=n,
             overhead_fwd_us=(r["fwd_nograd"] - r["bare_fwd"]) / n,
             overhead_fwd_bwd_us=(r["fwd_bwd"] - r["bare_fwd_bwd"]) / n,
             share_fwd=(r["fwd_nograd"] - r["bare_fwd"]) / r["fwd_nograd"],
             share_fwd_bwd=(r["fwd_bwd"] - r["bare_fwd_bwd"]) / r["fwd_bwd"])
    return r


def layer(c, hw, groups, k):
    """Per-call time of one layer at four depths of the stack (us, best of 7)."""
    x = np.random.default_rng(0).standard_normal((1, c, hw, hw)).astype(np.float32)
    m = nn.Conv2d(c, c, k, padding=k // 2, groups=groups, rng=0)
    w, b = m.weight.data, m.bias.data
    spec = _spec(m, x)
    algo = select_algorithm(spec)
    y = np.empty(spec.out_shape, np.float32)
    nt = _threads.kernel_threads(spec.flops())
    if algo.name == "im2col":
        # conv_gemm plans the call itself; the raw call runs without the
        # algorithm's BLAS thread handling.
        small = _blas_has_small_gemm()
        raw = lambda: conv_gemm.forward(x, w, b, y, spec.params, nt, small)  # noqa: E731
    elif algo.name == "direct" and algo._depthwise(spec):
        raw = lambda: conv_depthwise.forward(x, w, b, y, spec.params, nt)  # noqa: E731
    else:
        raw = None

    def best(f):
        return min(timeit.repeat(f, number=2000, repeat=7, timer=_clock)) / 2000 * 1e6
    with convcore.no_grad():
        r = dict(layer=f"{c}ch {hw}x{hw} {k}x{k} groups={groups}", algorithm=algo.name,
                 raw_kernel=best(raw) if raw else None,
                 algo=best(lambda: algo.forward(x, w, b, y, spec)),
                 functional=best(lambda: conv2d(x, w, b, 1, k // 2, 1, groups)),
                 layer_call=best(lambda: m(x)))
    relu = nn.ReLU()
    with convcore.no_grad():
        r["relu_layer"] = best(lambda: relu(x))
    r["np_maximum"] = best(lambda: np.maximum(x, 0, out=x.copy()))
    return r


def resnet18(calls=40):
    """ResNet-18 eval forward at batch 1, 224x224, under no_grad: median ms
    of `calls` calls after 3 warm-up calls (wall time)."""
    from convcore.models import get_model
    net = get_model("resnet18")
    net.eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    samples = []
    with convcore.no_grad():
        for _ in range(3):
            net(x)
        for _ in range(calls):
            t = time.perf_counter()
            net(x)
            samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clock", choices=("cpu", "wall"),
                   help="default: cpu at one thread, else wall")
    p.add_argument("--json")
    p.add_argument("--resnet18", action="store_true",
                   help="only ResNet-18 eval forward at batch 1 (wall time)")
    args = p.parse_args(argv)
    if args.resnet18:
        convcore.set_num_threads(args.threads)
        print(f"ResNet-18 eval batch 1, {args.threads} threads: {resnet18():.1f} ms")
        return
    global _clock
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    _clock = time.process_time if clock == "cpu" else time.perf_counter
    convcore.set_num_threads(args.threads)
    out = {"threads": args.threads, "clock": clock, "networks": [], "layers": []}
    for name, (net, shape) in (("thin", thin()), ("mobile", mobile())):
        r = network(name, net, shape, args.rounds)
        out["networks"].append(r)
        print(f"{name:7s} {r['modules']} modules: fwd no_grad {r['fwd_nograd']:.0f} us "
              f"(bare {r['bare_fwd']:.0f}), fwd grad {r['fwd_grad']:.0f}, fwd+bwd "
              f"{r['fwd_bwd']:.0f} (bare {r['bare_fwd_bwd']:.0f}); overhead per module "
              f"fwd {r['overhead_fwd_us']:.1f} us ({100 * r['share_fwd']:.0f}% of the time), "
              f"fwd+bwd {r['overhead_fwd_bwd_us']:.1f} us ({100 * r['share_fwd_bwd']:.0f}%)")
    for cfg in ((16, 8, 1, 3), (32, 14, 32, 3), (32, 14, 1, 1)):
        r = layer(*cfg)
        out["layers"].append(r)
        raw = "-" if r["raw_kernel"] is None else f"{r['raw_kernel']:.1f}"
        print(f"  {r['layer']:28s} {r['algorithm']:8s} raw kernel {raw} us, algo "
              f"{r['algo']:.1f}, F.conv2d {r['functional']:.1f}, layer {r['layer_call']:.1f}; "
              f"ReLU layer {r['relu_layer']:.1f} (np.maximum {r['np_maximum']:.1f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
