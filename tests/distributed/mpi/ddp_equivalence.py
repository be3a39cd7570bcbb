"""Run under mpiexec -n N: N ranks with per-rank batch b against one process
with batch N*b on the same data, k steps of SGD (momentum) and Adam; with
plain layers and with SyncBatchNorm; float32 and float64. Rank 0 prints
one line per case, 'case max_abs_diff', and exits non-zero on a mismatch."""
import sys

import numpy as np

import convcore
import convcore.distributed as dist
from convcore import nn, optim


def build(dtype, sync_bn, convert=True):
    rng = np.random.default_rng(7)
    def conv(c, k):
        # No bias before batch norm: its true gradient is 0, and Adam turns
        # the rounding noise there into full steps of either sign.
        return nn.Conv2d(c, k, 3, padding=1, bias=not sync_bn, dtype=dtype)
    layers = [conv(3, 8)]
    if sync_bn:
        layers.append(nn.BatchNorm2d(8, dtype=dtype))
    layers += [nn.ReLU(), conv(8, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(8, 5, dtype=dtype)]
    model = nn.Sequential(*layers)
    for p in model.parameters():  # the same weights in every build
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    if sync_bn and convert:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def run(model, opt_name, xs, ts, steps):
    opt = (optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt_name == "sgd"
           else optim.Adam(model.parameters(), lr=1e-2))
    loss = nn.CrossEntropyLoss()
    for s in range(steps):
        loss(model(xs[s]), ts[s])
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()
    return model.state_dict()


def main():
    dist.init()
    r, n = dist.rank(), dist.world_size()
    b, steps = 4, 3
    worst = 0.0
    failed = False
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 2e-5)):
        for sync_bn in (False, True):
            for opt_name in ("sgd", "adam"):
                rng = np.random.default_rng(1)
                xs = rng.standard_normal((steps, n * b, 3, 6, 6)).astype(dtype)
                ts = rng.integers(0, 5, (steps, n * b))
                # one process on whole batches (plain batch norm: its batch is global)
                ref = run(build(dtype, sync_bn, convert=False), opt_name, xs, ts, steps)
                ddp = dist.DistributedDataParallel(build(dtype, sync_bn), bucket_bytes=256)
                mine = run(ddp, opt_name, xs[:, r * b:(r + 1) * b], ts[:, r * b:(r + 1) * b],
                           steps)
                diff = max(float(np.max(np.abs(mine[k] - ref[k]))) for k in ref
                           if ref[k].dtype.kind == "f")
                case = f"{np.dtype(dtype).name} sync_bn={sync_bn} {opt_name}"
                if r == 0:
                    print(f"{case} {diff:.3g}", flush=True)
                if not diff <= tol:
                    failed = True
                    print(f"rank {r}: {case}: max diff {diff} > {tol}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
