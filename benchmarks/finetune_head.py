"""Head-only fine-tuning of ResNet-18 against the full backward and PyTorch
(issue 16 item 1): one SGD step (forward, loss, backward, update) per call.

    PYTHONPATH=. python benchmarks/finetune_head.py [--batch 16] [--size 64]
                                                    [--threads 2] [--repeat 10]

    convcore head        freeze(model); unfreeze(model, "fc"): backward
                         stops at fc
    convcore head, no stop   the same, but the network's first conv is
                         not marked first_layer, so the input gradient runs
                         through the frozen backbone (the behaviour before
                         the backward stopped; frozen weights get no grad)
    convcore full        every parameter trainable
    torch head           the same network in torch (requires_grad False on
                         the backbone), same weights and threads

Steps are timed interleaved (one of each per round, after a warm-up round)
and the medians printed.
"""
import argparse
import statistics
import time

import numpy as np

import convcore
from convcore import models, nn, optim
from convcore.bench.networks import copy_weights, to_torch
from convcore.training import freeze, unfreeze


def convcore_step(model, x, y, stop=True):
    freeze(model)
    unfreeze(model, "fc")
    model.conv1.first_layer = stop
    loss = nn.CrossEntropyLoss()
    opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad()
        loss(model(x), y)
        model.backward(loss.backward())
        opt.step()
    return step


def full_step(model, x, y):
    unfreeze(model)
    model.conv1.first_layer = True
    loss = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad()
        loss(model(x), y)
        model.backward(loss.backward())
        opt.step()
    return step


def torch_step(torch, tmodel, x, y):
    for name, p in tmodel.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    opt = torch.optim.SGD([p for p in tmodel.parameters() if p.requires_grad], lr=0.01,
                          momentum=0.9)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
        opt.step()
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    convcore.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    # one model per variant: each keeps its own frozen set and optimizer
    make = lambda: models.resnet18(num_classes=10, input_size=args.size, rng=0)  # noqa: E731
    steps = {"convcore head": convcore_step(make(), x, y),
             "convcore head, no stop": convcore_step(make(), x, y, stop=False),
             "convcore full": full_step(make(), x, y)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        model = make()
        tmodel = to_torch(model, torch)
        copy_weights(model, tmodel, torch)
        steps["torch head"] = torch_step(torch, tmodel, x, y)
    times = {k: [] for k in steps}
    for r in range(args.repeat + 1):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[k].append(time.perf_counter() - t0)
    print(f"ResNet-18, batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, "
          f"median of {args.repeat} SGD steps")
    print("| variant | ms/step |\n|---|---:|")
    for k, ts in times.items():
        print(f"| {k} | {1e3 * statistics.median(ts):.1f} |")


if __name__ == "__main__":
    main()
