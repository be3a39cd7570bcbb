"""Whole-network training benchmark: convcore against PyTorch (CPU).

    python benchmarks/network_bench.py [--threads 2] [--quick] [--no-torch]
                                       [--markdown benchmarks/results/network.md]

Workloads (whole-network training):
  1. LeNet-5 (convcore.models.lenet5, 28x28 input: C1 padded by 2, tanh, avg
     pools) over an MNIST-shaped synthetic set of 60,000 seeded random 1x28x28
     images, batch 64, SGD(lr=0.01, momentum=0.9), cross entropy. A fixed
     number of batches is timed after warm-up and extrapolated to the epoch
     (938 batches); the output says so.
  2. ResNet-20 (convcore.models.resnet20: option-A zero-padding shortcuts,
     269,722 parameters) training step at batch 128 on 3x32x32 inputs, same
     SGD: median step time.
  3. Peak memory of that ResNet-20 step, each library in a fresh subprocess:
     ru_maxrss after the steps minus the RSS after imports, model and data.

The PyTorch networks mirror convcore's layer for layer (the parameter counts
are checked) and start from convcore's initial weights, so both libraries
run the same arithmetic; the first-batch losses are printed side by side.
Both libraries get the same thread count (--threads). Measurements are
interleaved (chunks of LeNet batches, single ResNet steps, alternating
libraries) so that a drift of the shared machine hits both alike.
Without torch installed, only convcore is measured.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:  # an installed convcore (or one on PYTHONPATH) comes first ...
    import convcore
except ImportError:  # ... else the checkout's in-place build
    sys.path.insert(0, ROOT)
    import convcore
from convcore import nn, optim  # noqa: E402
from convcore.models import lenet5, resnet20  # noqa: E402

EPOCH_IMAGES = 60000
LENET_BATCH = 64
RESNET_BATCH = 128
LR, MOMENTUM = 0.01, 0.9


def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# ---------------------------------------------------------------- networks

def torch_lenet5(torch):
    """convcore.models.lenet5(input_size=28) in torch: the same layers, names
    and parameter shapes (C1 padded by 2 for 28x28 input)."""
    from collections import OrderedDict
    tnn = torch.nn
    return tnn.Sequential(OrderedDict([
        ("c1", tnn.Conv2d(1, 6, 5, padding=2)), ("act1", tnn.Tanh()), ("s2", tnn.AvgPool2d(2)),
        ("c3", tnn.Conv2d(6, 16, 5)), ("act3", tnn.Tanh()), ("s4", tnn.AvgPool2d(2)),
        ("c5", tnn.Conv2d(16, 120, 5)), ("act5", tnn.Tanh()), ("flatten", tnn.Flatten()),
        ("f6", tnn.Linear(120, 84)), ("act6", tnn.Tanh()), ("output", tnn.Linear(84, 10)),
    ]))


def torch_resnet20(torch):
    """convcore.models.resnet20 in torch: 3x3 conv 16 + BN + ReLU, three
    stages of 3 basic blocks (16, 32, 64 planes), option-A shortcuts (every
    second pixel, channels zero-padded on both sides), global average pool,
    fc. Module names match convcore's state-dict keys."""
    from collections import OrderedDict
    tnn, tF = torch.nn, torch.nn.functional

    class PadShortcut(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.pad, self.stride = (cout - cin) // 2, stride

        def forward(self, x):
            s = self.stride
            return tF.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, self.pad, self.pad))

    class Block(tnn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.body = tnn.Sequential(OrderedDict([
                ("conv1", tnn.Conv2d(cin, planes, 3, stride, 1, bias=False)),
                ("bn1", tnn.BatchNorm2d(planes)), ("relu", tnn.ReLU(inplace=True)),
                ("conv2", tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)),
                ("bn2", tnn.BatchNorm2d(planes))]))
            self.shortcut = (PadShortcut(cin, planes, stride)
                             if stride != 1 or cin != planes else None)

        def forward(self, x):
            s = x if self.shortcut is None else self.shortcut(x)
            return torch.relu(self.body(x) + s)

    layers = [("conv1", tnn.Conv2d(3, 16, 3, 1, 1, bias=False)), ("bn1", tnn.BatchNorm2d(16)),
              ("relu", tnn.ReLU(inplace=True))]
    c = 16
    for i, planes in enumerate((16, 32, 64)):
        blocks = []
        for j in range(3):
            blocks.append(Block(c, planes, 2 if i > 0 and j == 0 else 1))
            c = planes
        layers.append((f"layer{i + 1}", tnn.Sequential(*blocks)))
    layers += [("avgpool", tnn.AdaptiveAvgPool2d(1)), ("flatten", tnn.Flatten()),
               ("fc", tnn.Linear(64, 10))]
    return tnn.Sequential(OrderedDict(layers))


def count_params(model, torch_model=False):
    if torch_model:
        return sum(p.numel() for p in model.parameters())
    return sum(p.data.size for p in model.parameters())


def copy_weights(torch, cc_model, t_model):
    """Load convcore's initial weights into the torch mirror (same keys)."""
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32))
             for k, v in cc_model.state_dict().items()}
    missing, unexpected = t_model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"weight copy: missing {missing}, unexpected {unexpected}")


# ---------------------------------------------------------------- steps

class ConvcoreTrainer:
    """One SGD training step of a convcore model (as convcore.training.train_epoch)."""

    def __init__(self, model):
        self.model = model.train()
        self.loss = nn.CrossEntropyLoss()
        self.opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def step(self, x, y):
        value = float(self.loss(self.model(x), y))
        self.opt.zero_grad()
        self.model.backward(self.loss.backward())
        self.opt.step()
        return value


class TorchTrainer:
    def __init__(self, torch, model):
        self.torch = torch
        self.model = model.train()
        self.loss = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def step(self, x, y):
        x, y = self.torch.from_numpy(x), self.torch.from_numpy(y)
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()


def set_threads(torch, n):
    convcore.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


# ---------------------------------------------------------------- data

def mnist_like(n, seed=0):
    """n seeded random MNIST-shaped images (float32 in [0, 1), 1x28x28) and
    labels 0..9; no download."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=n, dtype=np.int64)
    return x, y


def cifar_like(n, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3, 32, 32), dtype=np.float32),
            rng.integers(0, 10, size=n, dtype=np.int64))


# ---------------------------------------------------------------- workloads

def bench_lenet(torch, batches, warmup, chunk, log):
    """Median seconds per batch for each library, timed in alternating
    chunks of `chunk` consecutive batches over the synthetic set."""
    images = EPOCH_IMAGES if batches * LENET_BATCH <= EPOCH_IMAGES else batches * LENET_BATCH
    x, y = mnist_like(images)
    nb = images // LENET_BATCH
    cc_model = lenet5(input_size=28, rng=0)
    trainers = {"convcore": ConvcoreTrainer(cc_model)}
    params = {"convcore": count_params(cc_model)}
    if torch is not None:
        t_model = torch_lenet5(torch)
        copy_weights(torch, cc_model, t_model)
        params["torch"] = count_params(t_model, True)
        trainers["torch"] = TorchTrainer(torch, t_model)
    check_params("LeNet-5", params)
    cursor = {k: 0 for k in trainers}

    def run(name, count):
        t0 = time.perf_counter()
        for _ in range(count):
            b = cursor[name] % nb
            cursor[name] += 1
            sl = slice(b * LENET_BATCH, (b + 1) * LENET_BATCH)
            trainers[name].step(x[sl], y[sl])
        return time.perf_counter() - t0

    first = {k: t.step(x[:LENET_BATCH], y[:LENET_BATCH]) for k, t in trainers.items()}
    for k in trainers:
        cursor[k] = 1
        run(k, max(0, warmup - 1))
    per_batch = {k: [] for k in trainers}
    done = 0
    while done < batches:
        n = min(chunk, batches - done)
        order = list(trainers) if (done // chunk) % 2 == 0 else list(trainers)[::-1]
        for k in order:
            per_batch[k].append(run(k, n) / n)
        done += n
    log(f"  timed {batches} batches per library after {warmup} warm-up, in chunks of "
        f"{chunk}, alternating; epoch = {EPOCH_IMAGES} images / {LENET_BATCH} = "
        f"{-(-EPOCH_IMAGES // LENET_BATCH)} batches, extrapolated from the median batch time")
    return {"params": params, "first_loss": first, "per_batch": per_batch}


def bench_resnet(torch, steps, warmup, log):
    x, y = cifar_like(RESNET_BATCH)
    cc_model = resnet20(rng=0)
    trainers = {"convcore": ConvcoreTrainer(cc_model)}
    params = {"convcore": count_params(cc_model)}
    if torch is not None:
        t_model = torch_resnet20(torch)
        copy_weights(torch, cc_model, t_model)
        params["torch"] = count_params(t_model, True)
        trainers["torch"] = TorchTrainer(torch, t_model)
    check_params("ResNet-20", params)
    first = {k: t.step(x, y) for k, t in trainers.items()}
    for k, t in trainers.items():
        for _ in range(max(0, warmup - 1)):
            t.step(x, y)
    times = {k: [] for k in trainers}
    for i in range(steps):
        order = list(trainers) if i % 2 == 0 else list(trainers)[::-1]
        for k in order:
            t0 = time.perf_counter()
            trainers[k].step(x, y)
            times[k].append(time.perf_counter() - t0)
    log(f"  {steps} steps per library after {warmup} warm-up, alternating; median step time")
    return {"params": params, "first_loss": first, "step": times}


def check_params(what, params):
    if len(set(params.values())) != 1:
        raise RuntimeError(f"{what}: parameter counts differ: {params}")


def status_kib(field):
    """A /proc/self/status field in KiB (VmRSS: now, VmHWM: peak of this
    process image), 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_worker(lib, threads, steps):
    """Run in a fresh process: RSS after imports + model + data, then the
    ResNet-20 steps, then the peak RSS. Linux carries ru_maxrss over from
    the parent across fork+exec (a big parent makes it meaningless), so the
    peak is VmHWM, reset to the current RSS before the steps; ru_maxrss is
    reported alongside."""
    torch = import_torch() if lib == "torch" else None
    if lib == "torch" and torch is None:
        raise SystemExit("torch not installed")
    set_threads(torch, threads)
    x, y = cifar_like(RESNET_BATCH)
    cc_model = resnet20(rng=0)
    if lib == "torch":
        t_model = torch_resnet20(torch)
        copy_weights(torch, cc_model, t_model)
        trainer = TorchTrainer(torch, t_model)
    else:
        trainer = ConvcoreTrainer(cc_model)
    base = status_kib("VmRSS")
    hwm_reset = reset_peak_rss()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(steps):
        trainer.step(x, y)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = status_kib("VmHWM") if hwm_reset else maxrss
    print(json.dumps({"lib": lib, "base_kib": base, "peak_kib": peak, "maxrss_kib": maxrss,
                      "maxrss_before_kib": maxrss_before, "after_kib": status_kib("VmRSS")}))


def bench_memory(libs, threads, steps):
    out = {}
    for lib in libs:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-worker", lib,
                               "--threads", str(threads), "--memory-steps", str(steps)],
                              capture_output=True, text=True, check=True)
        out[lib] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------- profile

def _layer_category(module, x):
    """"Conv2d 3x3 s1 [winograd]" for convolutions (the algorithm "auto"
    picks for this input), the class name otherwise."""
    name = type(module).__name__
    if name == "Conv2d" and module.algorithm == "auto":
        from convcore.algorithms import select_algorithm
        from convcore.functional._conv_spec import conv_spec
        spec = conv_spec(x.shape, module.weight.shape, x.dtype, *module._geometry(), "profile")
        kh, kw = module.kernel_size
        algo = type(select_algorithm(spec)).__name__.replace("Conv", "").lower()
        return (f"Conv2d {kh}x{kw}/{module.stride[0]} {spec.C}->{spec.K} "
                f"{spec.OH}x{spec.OW} [{algo}]")
    return name


def profile_convcore(model_name, steps, threads, log):
    """Time every leaf layer's forward and backward (by layer type and, for
    convolutions, algorithm), the loss, zero_grad and the optimizer step of
    a convcore training step; the rest of the step is container overhead."""
    from collections import defaultdict
    convcore.set_num_threads(threads)
    if model_name == "resnet20":
        x, y = cifar_like(RESNET_BATCH)
        model = resnet20(rng=0)
    else:
        x, y = mnist_like(LENET_BATCH)
        model = lenet5(input_size=28, rng=0)
    trainer = ConvcoreTrainer(model)
    totals = defaultdict(float)
    clock = time.perf_counter

    def wrap(module):
        fwd, bwd = module.forward, module.backward
        category = {}

        def forward(inp):
            if "c" not in category:
                category["c"] = _layer_category(module, inp)
            t0 = clock()
            out = fwd(inp)
            totals[(category["c"], "fwd")] += clock() - t0
            return out

        def backward(grad):
            t0 = clock()
            out = bwd(grad)
            totals[(category["c"], "bwd")] += clock() - t0
            return out
        module.__dict__["forward"] = forward
        module.__dict__["backward"] = backward

    for m in model.modules():
        if not m._modules:
            wrap(m)
    for name in ("zero_grad", "step"):
        method = getattr(trainer.opt, name)

        def timed(method=method, name=name):
            t0 = clock()
            method()
            totals[(f"SGD.{name}", "")] += clock() - t0
        setattr(trainer.opt, name, timed)
    loss_call, loss_bwd = trainer.loss.forward, trainer.loss.backward

    def loss_forward(*a):
        t0 = clock()
        out = loss_call(*a)
        totals[("CrossEntropyLoss", "fwd")] += clock() - t0
        return out

    def loss_backward(*a):
        t0 = clock()
        out = loss_bwd(*a)
        totals[("CrossEntropyLoss", "bwd")] += clock() - t0
        return out
    trainer.loss.__dict__["forward"] = loss_forward
    trainer.loss.__dict__["backward"] = loss_backward
    trainer.step(x, y)  # warm-up
    totals.clear()
    t0 = clock()
    for _ in range(steps):
        trainer.step(x, y)
    wall = (clock() - t0) / steps
    rows = sorted(((v / steps, k) for k, v in totals.items()), reverse=True)
    accounted = sum(v for v, _ in rows)
    log(f"convcore {model_name} training step, {threads} thread(s), mean of {steps} steps: "
        f"{wall * 1e3:.1f} ms")
    log(f"  {'layer type':<40} {'pass':<4} {'ms/step':>8} {'share':>6}")
    for v, (cat, phase) in rows:
        log(f"  {cat:<40} {phase:<4} {v * 1e3:8.2f} {v / wall:6.1%}")
    rest = wall - accounted
    log(f"  {'containers, glue (unaccounted)':<40} {'':<4} {rest * 1e3:8.2f} {rest / wall:6.1%}")
    return wall, rows


def profile_lines(model_name, label, steps, threads):
    """profile_convcore's table as Markdown (layer types under 0.5% folded
    into the glue row)."""
    wall, rows = profile_convcore(model_name, steps, threads, lambda msg: None)
    lines = [f"convcore {label} step by layer type ({threads} threads, mean of {steps} steps, "
             f"{wall * 1e3:.1f} ms; convolutions by the algorithm auto picks):", "",
             "| layer type | pass | ms/step | share |", "|---|---|---|---|"]
    shown = 0.0
    for v, (cat, phase) in rows:
        if v / wall >= 0.005:
            shown += v
            lines.append(f"| {cat} | {phase} | {v * 1e3:.2f} | {v / wall:.1%} |")
    rest = wall - shown
    lines.append(f"| containers, glue, layers < 0.5% | | {rest * 1e3:.2f} | {rest / wall:.1%} |")
    return lines


# ---------------------------------------------------------------- report

def fmt_ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def build_report(args, torch, lenet, resnet, memory):
    libs = ["convcore"] + (["torch"] if torch is not None else [])
    rows = []
    if lenet:
        med = {k: statistics.median(v) for k, v in lenet["per_batch"].items()}
        best = {k: min(v) for k, v in lenet["per_batch"].items()}
        for k in libs:
            rows.append(("LeNet-5 epoch (extrapolated)", k, f"{lenet['params'][k]:,}",
                         f"{med[k] * 1e3:.2f} ms/batch", f"{LENET_BATCH / med[k]:,.0f} img/s",
                         f"{med[k] * EPOCH_IMAGES / LENET_BATCH:.1f} s",
                         f"{best[k] * 1e3:.2f}", f"{lenet['first_loss'][k]:.4f}"))
        lenet_ratio = (med["convcore"] / med["torch"]) if torch is not None else None
        lenet_best_ratio = (best["convcore"] / best["torch"]) if torch is not None else None
    if resnet:
        med_r = {k: statistics.median(v) for k, v in resnet["step"].items()}
        best_r = {k: min(v) for k, v in resnet["step"].items()}
        for k in libs:
            rows.append(("ResNet-20 step b128", k, f"{resnet['params'][k]:,}",
                         f"{med_r[k] * 1e3:.1f} ms/step", f"{RESNET_BATCH / med_r[k]:,.0f} img/s",
                         "-", f"{best_r[k] * 1e3:.1f}", f"{resnet['first_loss'][k]:.4f}"))
    lines = []
    headers = ("workload", "library", "params", "median time", "throughput", "epoch",
               "fastest (ms)", "first loss")
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    for r in rows:
        lines.append("| " + " | ".join(r) + " |")
    lines.append("")
    if torch is not None:
        lines.append("Ratios convcore / PyTorch (below 1: convcore faster):")
        lines.append("")
        if lenet:
            lines.append(f"- LeNet-5 epoch: {lenet_ratio:.2f} (median), {lenet_best_ratio:.2f} "
                         f"(fastest chunks)")
        if resnet:
            lines.append(f"- ResNet-20 step: {med_r['convcore'] / med_r['torch']:.2f} (median), "
                         f"{best_r['convcore'] / best_r['torch']:.2f} (fastest steps)")
    if memory:
        lines += ["", f"Peak memory of the ResNet-20 step (batch {RESNET_BATCH}, "
                  f"{args.memory_steps} steps, fresh process per library, run before the "
                  "other workloads): peak RSS during the steps minus RSS after imports, model "
                  "and data. Peak RSS is VmHWM reset just before the steps (ru_maxrss is "
                  "shown too; it also counts anything earlier in the process).", "",
                  "| library | RSS before steps (MiB) | peak RSS (MiB) | peak growth (MiB) "
                  "| ru_maxrss (MiB) |",
                  "|---|---|---|---|---|"]
        growth = {}
        for k, m in memory.items():
            growth[k] = (m["peak_kib"] - m["base_kib"]) / 1024
            lines.append(f"| {k} | {m['base_kib'] / 1024:.1f} | {m['peak_kib'] / 1024:.1f} | "
                         f"{growth[k]:.1f} | {m['maxrss_kib'] / 1024:.1f} |")
        if "torch" in growth:
            lines += ["", f"- peak growth convcore / PyTorch: "
                      f"{fmt_ratio(growth['convcore'], growth['torch'])}"]
    return lines


def command_args():
    """This run's arguments, the text of each --note elided (notes are listed
    at the end of the report)."""
    out, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            out.append("...")
        elif not a.startswith("--note="):
            out.append(a)
        skip = a == "--note"
    return " ".join(out)


def header_lines(args, torch):
    from convcore.bench.report import machine_info
    meta = machine_info([args.threads], torch.__version__ if torch is not None else None)
    return [
        "# Whole-network training: convcore vs PyTorch (CPU)", "",
        f"- date: {meta['date_utc']}",
        f"- machine: {meta['cpu']} ({meta['usable_cpus']} usable of {meta['logical_cpus']} "
        f"logical CPUs; SIMD {', '.join(meta['simd'])}), {meta['platform']}",
        f"- threads: {args.threads} (convcore.set_num_threads and torch.set_num_threads alike)",
        f"- versions: convcore {meta['convcore']}, Python {meta['python']}, numpy {meta['numpy']}, "
        f"scipy {meta['scipy']}, PyTorch {meta['torch'] or 'not installed'}; "
        f"BLAS {'; '.join(meta['blas'])}",
        f"- command: `python benchmarks/network_bench.py {command_args()}`",
        "- float32; SGD(lr=0.01, momentum=0.9), cross entropy; the PyTorch networks mirror "
        "convcore.models.lenet5(input_size=28) and resnet20 (parameter counts checked equal) and "
        "start from convcore's initial weights (first-batch losses shown)",
        f"- LeNet-5: 60,000 seeded random 1x28x28 images, batch {LENET_BATCH}; "
        f"{args.lenet_batches} batches timed per library after {args.warmup_batches} warm-up "
        f"(alternating chunks of {args.chunk}) and extrapolated to the 938-batch epoch",
        f"- ResNet-20: batch {RESNET_BATCH} of 3x32x32, median of {args.resnet_steps} steps "
        f"after {args.resnet_warmup} warm-up, libraries alternating step by step",
        "- shared 2-core machine with other jobs running: expect noise; the fastest samples "
        "are less affected by descheduling than the medians",
        "",
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="fewer batches/steps (LeNet 40 after 5 warm-up, ResNet 4 after 2)")
    p.add_argument("--no-torch", action="store_true", help="measure convcore only")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--markdown", metavar="PATH", help="also write the report as Markdown")
    p.add_argument("--lenet-batches", type=int)
    p.add_argument("--warmup-batches", type=int)
    p.add_argument("--chunk", type=int)
    p.add_argument("--resnet-steps", type=int)
    p.add_argument("--resnet-warmup", type=int)
    p.add_argument("--memory-steps", type=int, default=3)
    p.add_argument("--profile", choices=("resnet20", "lenet5"),
                   help="only profile convcore's training step by layer type")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--with-profile", action="store_true",
                   help="append convcore's ResNet-20 step profile by layer type to the report")
    p.add_argument("--note", action="append", default=[],
                   help="a line for the report's notes (repeatable)")
    p.add_argument("--memory-worker", choices=("convcore", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.memory_worker:
        memory_worker(args.memory_worker, args.threads, args.memory_steps)
        return 0
    if args.profile:
        profile_convcore(args.profile, args.profile_steps, args.threads,
                         lambda msg: print(msg, flush=True))
        return 0
    defaults = (40, 5, 10, 4, 2) if args.quick else (200, 10, 20, 10, 3)
    for name, value in zip(("lenet_batches", "warmup_batches", "chunk", "resnet_steps",
                            "resnet_warmup"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.chunk = max(1, min(args.chunk, args.lenet_batches))
    torch = None if args.no_torch else import_torch()
    set_threads(torch, args.threads)

    def log(msg):
        print(msg, flush=True)

    log(f"convcore {convcore.__version__}, torch "
        f"{torch.__version__ if torch is not None else 'not installed (convcore only)'}, "
        f"threads {args.threads}")
    memory = None
    if not args.no_memory and args.memory_steps > 0:
        # first, while this process is small (children inherit its ru_maxrss)
        log(f"ResNet-20 step peak memory ({args.memory_steps} steps, fresh process each):")
        memory = bench_memory(["convcore"] + (["torch"] if torch is not None else []),
                              args.threads, args.memory_steps)
    log("LeNet-5 training epoch (60,000 synthetic 28x28 images, batch 64):")
    lenet = bench_lenet(torch, args.lenet_batches, args.warmup_batches, args.chunk, log)
    log("ResNet-20 training step (batch 128, 3x32x32):")
    resnet = bench_resnet(torch, args.resnet_steps, args.resnet_warmup, log)
    lines = build_report(args, torch, lenet, resnet, memory)
    if args.with_profile:
        for model_name, label, steps in (("resnet20", "ResNet-20", max(1, args.profile_steps)),
                                         ("lenet5", "LeNet-5", 20 * max(1, args.profile_steps))):
            lines += [""] + profile_lines(model_name, label, steps, args.threads)
    if args.note:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in args.note]
    print("\n".join(lines))
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as f:
            f.write("\n".join(header_lines(args, torch) + lines) + "\n")
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
