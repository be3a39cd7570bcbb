"""Fused vs unfused layers between convolutions (issue 13 item 2).

    PYTHONPATH=. python benchmarks/fusion_bench.py [--repeat 15] [--threads 2]

Per op: BatchNorm2d + ReLU forward + backward (training) and conv-epilogue
shapes; per network: a ResNet-20 and a MobileNet-v1-like training step
(SGD momentum) and eval forward. Each pair is timed interleaved (fused,
unfused, fused, ...) with convcore.nn.set_fusion, and the medians printed
as a Markdown table.
"""
import argparse
import statistics
import sys
import time
from collections import OrderedDict

import numpy as np

import convcore
from convcore import nn
from convcore.optim import SGD

import convcore.models.resnet  # noqa: F401
resnet = sys.modules["convcore.models.resnet"]


def mobilenet_like(width=32, num_classes=10, dtype=np.float32, rng=0):
    """MobileNet-v1 pattern: conv-BN-ReLU stem, then depthwise 3x3-BN-ReLU,
    pointwise 1x1-BN-ReLU blocks (stride 2 every other block)."""
    kw = dict(dtype=dtype, rng=np.random.default_rng(rng))
    layers = [nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False, **kw),
              nn.BatchNorm2d(width, dtype=dtype), nn.ReLU()]
    c = width
    for i, (out, stride) in enumerate([(2 * width, 1), (4 * width, 2), (4 * width, 1),
                                       (8 * width, 2), (8 * width, 1)]):
        layers += [nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False, **kw),
                   nn.BatchNorm2d(c, dtype=dtype), nn.ReLU(),
                   nn.Conv2d(c, out, 1, bias=False, **kw), nn.BatchNorm2d(out, dtype=dtype),
                   nn.ReLU()]
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes, **kw)]
    return nn.Sequential(*layers)


def interleaved(fns, repeat):
    """{name: [seconds]} timing each fn in turn, `repeat` rounds, one
    warm-up round first."""
    times = {k: [] for k in fns}
    for r in range(repeat + 1):
        for k, (fusion, fn) in fns.items():
            nn.set_fusion(fusion)
            t = time.perf_counter()
            fn()
            if r:
                times[k].append(time.perf_counter() - t)
    nn.set_fusion(True)
    return times


def op_bench(shape, repeat):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    C = shape[1]
    seq = nn.Sequential(nn.BatchNorm2d(C), nn.ReLU())
    conv_epi = nn.Sequential(nn.Conv2d(C, C, 1, bias=True), nn.ReLU())

    def bn_relu():
        seq(x)
        seq.backward(gy)

    out = OrderedDict()
    t = interleaved({"fused": (True, bn_relu), "unfused": (False, bn_relu)}, repeat)
    out["BN+ReLU fwd+bwd train"] = t
    seq.eval()
    t = interleaved({"fused": (True, bn_relu), "unfused": (False, bn_relu)}, repeat)
    out["BN+ReLU fwd+bwd eval"] = t

    def conv_relu():
        conv_epi(x)
        conv_epi.backward(gy)
    t = interleaved({"fused": (True, conv_relu), "unfused": (False, conv_relu)}, repeat)
    out["1x1 conv+bias+ReLU fwd+bwd"] = t
    return out


def net_bench(name, model, x, repeat):
    rng = np.random.default_rng(1)
    with convcore.no_grad():
        nout = model.eval()(x).shape
    gy = rng.standard_normal(nout).astype(np.float32) / nout[0]
    opt = SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step():
        model.train()
        model(x)
        model.backward(gy)
        opt.step()
        opt.zero_grad()

    def eval_fwd():
        model.eval()
        model(x)

    out = OrderedDict()
    out[f"{name} train step"] = interleaved(
        {"fused": (True, train_step), "unfused": (False, train_step)}, repeat)
    out[f"{name} eval forward"] = interleaved(
        {"fused": (True, eval_fwd), "unfused": (False, eval_fwd)}, repeat)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-ops", action="store_true")
    ap.add_argument("--skip-nets", action="store_true")
    args = ap.parse_args(argv)
    convcore.set_num_threads(args.threads)
    rows = []
    if not args.skip_ops:
        for shape in [(16, 64, 56, 56), (32, 32, 112, 112)]:
            for k, t in op_bench(shape, args.repeat).items():
                rows.append((f"{k} {shape}", t))
    if not args.skip_nets:
        rng = np.random.default_rng(2)
        nets = [("ResNet-20 b32 32x32", resnet.resnet20(rng=0),
                 rng.standard_normal((32, 3, 32, 32)).astype(np.float32)),
                ("MobileNet-like b16 112x112", mobilenet_like(),
                 rng.standard_normal((16, 3, 112, 112)).astype(np.float32))]
        for name, model, x in nets:
            rows.extend(net_bench(name, model, x, args.repeat).items())
    print(f"threads={args.threads} repeat={args.repeat}\n")
    print("| workload | fused ms | unfused ms | fused/unfused |")
    print("|---|---:|---:|---:|")
    for k, t in rows:
        f, u = statistics.median(t["fused"]) * 1e3, statistics.median(t["unfused"]) * 1e3
        print(f"| {k} | {f:.2f} | {u:.2f} | {f / u:.2f} |")


if __name__ == "__main__":
    main()
