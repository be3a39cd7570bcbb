"""`convcore bench --suite networks`: whole networks against PyTorch.

Each zoo network runs three workloads, in convcore and in a PyTorch copy
holding the same weights, in the same process:

    eval_b1    eval forward, batch 1    (model.eval(), convcore.no_grad() /
    eval_b16   eval forward, batch 16    torch.no_grad())
    train      training step: forward, cross entropy, backward, SGD with
               momentum 0.9 (lr 0.01) step, at the network's training batch

How it is measured
    - Each import order (torch imported before convcore, convcore before
      torch) runs in a fresh interpreter (`python -c "import torch; import
      convcore; ..."`), so neither order inherits the other's threads; by
      default two interpreters per order and network, their samples
      pooled, so that the gap between the orders can be read against the
      gap between two processes of the same order.
    - A network's processes run at the same time and take turns
      (convcore/bench/turns.py): one at a time runs a turn while the others
      wait, asleep. A shared machine's speed drifts by tens of percent over
      seconds, and processes run one after the other would differ by that.
    - Both libraries at the same thread count (convcore.set_num_threads and
      torch.set_num_threads).
    - Per workload: one warm-up call each (its outputs give the agreement
      numbers), one more that tells how long a call takes, then turns; in each turn both libraries run a block of
      back-to-back calls, in a fresh random order, so drifts of the machine
      hit both alike. The workload's `budget` seconds (and MAX_ROUNDS
      samples) are spread over about turns.TURNS turns per process; at
      least `repeats` samples. Calls faster than `min_time` are timed in
      groups of `inner` calls, so a sample is the mean of the group. A
      block of calls shorter than turns.WARM_BELOW opens with one call
      timed apart ("cold": it follows the other library's or process's
      calls, which evicted the caches); its median over the samples'
      median is reported as cold/med.
    - Reported: median and 95th percentile of the samples per library, the
      ratio convcore / torch of the medians, p95 / median, and agreement:
      eval, the max |difference| of the outputs (and relative to max |output|);
      train, the |difference| of the first step's loss and the max relative
      difference of the parameter gradients. The agreement step runs with
      dropout off on both sides (the masks are random); the timed steps
      drop as in training.
    - BatchNorm layers start from seeded, non-trivial affine parameters and
      running statistics, so eval mode normalises for real.

The PyTorch copy is built by `to_torch`, which walks the convcore module
tree (Sequential, Residual, Concat and the layers) and builds the
equivalent torch modules under the same names, so the state dict loads
key for key; every zoo network is mirrored without hand-written code.

`--profile NET` times a convcore training step by layer type instead:
the layer classes' forward and backward and the fused steps are wrapped
with a timer (time spent in the timers inside subtracted), so the step
runs fused as it does untimed and each layer type, or fused run of them,
gets its share.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import convcore
from convcore.bench import turns

WORKLOADS = ("eval_b1", "eval_b16", "train")
ORDERS = ("torch-first", "convcore-first")
MAX_ROUNDS = 5000
# Issue 13's bound on a workload's 95th percentile over its median.
P95_TARGET = 1.25
LR, MOMENTUM = 0.01, 0.9

# Agreement: largest relative difference still called agreement. float32
# sums over deep networks differ in the last bits, and the backward of
# batch norm in training mode (means subtracted over small maps) amplifies
# that: parameter gradients of ResNet-50 and the MobileNets differ by a few
# percent in float32 where float64 agrees to 1e-12 (tests/cli/test_bench_networks.py
# checks every network in float64). A wrong layer shows as O(1).
TOL_OUTPUT = {"float32": 1e-3, "float64": 1e-9}
TOL_GRAD = {"float32": 1e-1, "float64": 1e-7}


@dataclass(frozen=True)
class NetworkSpec:
    """A zoo network as the benchmark runs it."""
    name: str                 # key of convcore.models.MODELS
    label: str
    input_shape: tuple        # (C, H, W)
    num_classes: int
    train_batch: int
    train_size: Optional[int] = None   # input height = width of the training step (None: input_shape)
    kwargs: dict = field(default_factory=dict)


# Training batches give a step of a few seconds at most on 2 cores; every
# network at its published input size, except the training steps of
# ResNet-50 and VGG-11, which take several times longer at batch 16 and
# 224x224 and run at 112x112 instead (the report says so).
NETWORKS = OrderedDict((s.name, s) for s in (
    NetworkSpec("lenet5", "LeNet-5", (1, 32, 32), 10, 64),
    NetworkSpec("resnet20", "ResNet-20 (CIFAR)", (3, 32, 32), 10, 128),
    NetworkSpec("resnet18", "ResNet-18", (3, 224, 224), 1000, 16),
    NetworkSpec("resnet50", "ResNet-50", (3, 224, 224), 1000, 16, train_size=112),
    NetworkSpec("vgg11", "VGG-11", (3, 224, 224), 1000, 16, train_size=112),
    NetworkSpec("googlenet", "GoogLeNet", (3, 224, 224), 1000, 16),
    NetworkSpec("mobilenet_v1", "MobileNet-v1", (3, 224, 224), 1000, 16),
    NetworkSpec("mobilenet_v2", "MobileNet-v2", (3, 224, 224), 1000, 16),
))

QUICK_NETWORKS = ("lenet5", "resnet20", "resnet18", "mobilenet_v2")

# (minimum rounds, seconds per workload) of a full and a --quick run; the
# full run takes about 15 minutes on 2 cores (both orders, in turns).
FULL_TIMING = (5, 6.0)
QUICK_TIMING = (3, 1.0)


def workload_batch(spec, workload, train_batch=None):
    if workload == "train":
        return train_batch or spec.train_batch
    return int(workload.rsplit("_b", 1)[1])


# ---------------------------------------------------------------- torch mirror

def _torch_classes(torch):
    """torch.nn.Module subclasses for the containers (built once per torch)."""
    T = torch.nn

    class Residual(T.Module):
        """body(x) + shortcut(x) (identity when None), then the `post`
        children in order (ResNet's ReLU after the sum)."""

        def __init__(self, children, body, shortcut, post):
            super().__init__()
            for name, m in children:
                self.add_module(name, m)
            self._body, self._shortcut, self._post = body, shortcut, post

        def forward(self, x):
            y = getattr(self, self._body)(x)
            y = y + (x if self._shortcut is None else getattr(self, self._shortcut)(x))
            for name in self._post:
                y = getattr(self, name)(y)
            return y

    class Concat(T.Module):
        def __init__(self, children, axis):
            super().__init__()
            for name, m in children:
                self.add_module(name, m)
            self.axis = axis

        def forward(self, x):
            return torch.cat([m(x) for m in self.children()], dim=self.axis)

    class PadShortcut(T.Module):
        """convcore.models.PadShortcut: every stride-th pixel, channels
        zero-padded equally on both sides."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.lo, self.hi, self.stride = (cout - cin) // 2, (cout - cin) // 2, stride

        def forward(self, x):
            s = self.stride
            return T.functional.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, self.lo, self.hi))

    return Residual, Concat, PadShortcut


# Layers that always return a new tensor: a ReLU right after one of them in
# a Sequential may work in place (as torchvision's models do), since
# nothing else reads that tensor.
_FRESH_OUTPUT = ("Conv2d", "BatchNorm1d", "BatchNorm2d", "Linear", "MaxPool2d", "AvgPool2d",
                 "AdaptiveAvgPool2d", "LocalResponseNorm", "GroupNorm", "LayerNorm")


def to_torch(module, torch=None, inplace=True):
    """A torch.nn.Module computing what the convcore `module` computes, with
    the same child names (so `module.state_dict()` loads into it key for
    key) and the same dtype. Weights are not copied: see copy_weights.

    inplace: ReLU/ReLU6 right after a layer that returns a fresh tensor
    work in place, as in torchvision's models. TypeError names a module
    with no torch equivalent here."""
    if torch is None:
        import torch
    from convcore import models, nn
    from convcore.models._common import ResidualReLU
    T = torch.nn
    Residual, Concat, PadShortcut = _torch_classes(torch)

    def conv(m, children, prev):
        name = type(m).__name__
        if isinstance(m, nn.Sequential):
            out, prev_name = [], None
            for cname, child in children:
                out.append((cname, conv(child, list(child.named_children()), prev_name)))
                prev_name = type(child).__name__
            return T.Sequential(OrderedDict(out))
        if isinstance(m, nn.Residual):
            if type(m) not in (nn.Residual, ResidualReLU, models.InvertedResidual):
                raise TypeError(f"to_torch: no torch equivalent for {name} (a Residual "
                                "subclass with its own forward)")
            names = {id(c): n for n, c in children}
            body = names[id(m.body)]
            short = None if m.shortcut is None else names[id(m.shortcut)]
            post = [n for n, _ in children if n not in (body, short)]
            tchildren = []
            for n, c in children:
                # the post-sum activation sees the fresh sum; the body's own
                # first layer sees the block's input, which the shortcut reads
                tchildren.append((n, conv(c, list(c.named_children()),
                                          "Conv2d" if n in post else None)))
            return Residual(tchildren, body, short, post)
        if isinstance(m, nn.Concat):
            return Concat([(n, conv(c, list(c.named_children()), None)) for n, c in children],
                          m.axis)
        if isinstance(m, models.PadShortcut):
            return PadShortcut(m.in_channels, m.out_channels, m.stride)
        if isinstance(m, nn.Conv2d):
            return T.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                            m.dilation, m.groups, bias=m.bias is not None)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            cls = T.BatchNorm2d if isinstance(m, nn.BatchNorm2d) else T.BatchNorm1d
            return cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        in_place = inplace and prev in _FRESH_OUTPUT
        simple = {
            nn.ReLU: lambda: T.ReLU(inplace=in_place),
            nn.ReLU6: lambda: T.ReLU6(inplace=in_place),
            nn.Tanh: T.Tanh, nn.Sigmoid: T.Sigmoid,
            nn.LeakyReLU: lambda: T.LeakyReLU(m.negative_slope),
            nn.Softplus: lambda: T.Softplus(m.beta, m.threshold),
            nn.MaxPool2d: lambda: T.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                                              ceil_mode=m.ceil_mode),
            nn.AvgPool2d: lambda: T.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                              m.count_include_pad),
            nn.AdaptiveAvgPool2d: lambda: T.AdaptiveAvgPool2d(m.output_size),
            nn.Linear: lambda: T.Linear(m.in_features, m.out_features, bias=m.bias is not None),
            nn.Flatten: lambda: T.Flatten(m.start_dim, m.end_dim),
            nn.Dropout: lambda: T.Dropout(m.p),
            nn.Identity: T.Identity,
            nn.LocalResponseNorm: lambda: T.LocalResponseNorm(m.size, m.alpha, m.beta, m.k),
        }
        make = simple.get(type(m))
        if make is None:
            raise TypeError(f"to_torch: no torch equivalent for {name}")
        if children:
            raise TypeError(f"to_torch: {name} has children; only containers may")
        return make()

    out = conv(module, list(module.named_children()), None)
    dtypes = {p.data.dtype for p in module.parameters()}
    if dtypes == {np.dtype(np.float64)}:
        out = out.double()
    out.train(module.training)
    return out


def copy_weights(module, tmodule, torch=None):
    """Load the convcore module's parameters and buffers into its torch
    mirror (strict: every key on both sides)."""
    if torch is None:
        import torch
    state = OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in module.state_dict().items())
    tmodule.load_state_dict(state, strict=True)


def randomize_batch_norm(model, rng):
    """Seeded non-trivial BatchNorm affine parameters and running statistics
    (fresh ones would make eval-mode BN an identity)."""
    from convcore import nn
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            dt = m.weight.data.dtype if m.affine else np.float32
            n = m.num_features
            if m.affine:
                m.weight.data = rng.uniform(0.5, 1.5, n).astype(dt)
                m.bias.data = (0.1 * rng.standard_normal(n)).astype(dt)
            if m.track_running_stats:
                m.running_mean[...] = 0.1 * rng.standard_normal(n)
                m.running_var[...] = rng.uniform(0.5, 1.5, n)


# ---------------------------------------------------------------- measuring

def _percentile(samples, q):
    return float(np.percentile(np.asarray(samples), q)) if samples else None


def _inner(first_seconds, min_time):
    """Calls per sample so that a sample lasts at least min_time."""
    return max(1, min(1000, int(np.ceil(min_time / max(first_seconds, 1e-9)))))


class _Trainer:
    """One SGD training step of a convcore model and of its torch mirror."""

    def __init__(self, model, tmodel, torch, x, y):
        from convcore import nn, optim
        self.model, self.tmodel, self.torch = model.train(), tmodel, torch
        self.x, self.y = x, y
        self.loss = nn.CrossEntropyLoss()
        self.opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        if tmodel is not None:
            tmodel.train()
            self.tx, self.ty = torch.from_numpy(x), torch.from_numpy(y)
            self.tloss = torch.nn.CrossEntropyLoss()
            self.topt = torch.optim.SGD(tmodel.parameters(), lr=LR, momentum=MOMENTUM)

    def convcore_step(self):
        value = float(self.loss(self.model(self.x), self.y))
        self.opt.zero_grad()
        self.model.backward(self.loss.backward())
        self.opt.step()
        return value

    def torch_step(self):
        self.topt.zero_grad(set_to_none=True)
        loss = self.tloss(self.tmodel(self.tx), self.ty)
        loss.backward()
        self.topt.step()
        return loss.item()


def _set_dropout(model, tmodel, training):
    from convcore import nn
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.training = training
    if tmodel is not None:
        for m in tmodel.modules():
            if type(m).__name__ == "Dropout":
                m.train(training)


def _grad_rel_diff(model, tmodel):
    """max over parameter tensors of |g - g_torch| / |g_torch| (Euclidean
    norms: an element-wise maximum would flag the float32 rounding of sums
    that cancel). Gradients that are nil analytically (the shift of a batch
    norm whose output feeds another batch norm through a linear conv: only
    rounding is left of them) are judged against 1e-3 of the largest
    gradient norm in the model instead of their own."""
    tparams = dict(tmodel.named_parameters())
    pairs = []
    for key, p in model.named_parameters():
        tg = tparams[key].grad
        if p.grad is not None and tg is not None:
            tg = tg.numpy().astype(np.float64)
            pairs.append((float(np.linalg.norm(p.grad - tg)), float(np.linalg.norm(tg))))
    if not pairs:
        return 0.0
    floor = 1e-3 * max(n for _, n in pairs) or 1.0
    return max(d / max(n, floor) for d, n in pairs)


def build_model(spec, dtype="float32", input_size=None, seed=0):
    from convcore import models
    shape = spec.input_shape if input_size is None else (spec.input_shape[0], input_size,
                                                          input_size)
    model = models.get_model(spec.name, num_classes=spec.num_classes,
                             in_channels=shape[0], input_size=shape[1:], rng=seed, dtype=dtype,
                             **spec.kwargs)
    randomize_batch_norm(model, np.random.default_rng(seed + 1))
    return model, shape


def measure_network(spec, workloads, torch=None, dtype="float32", repeats=5, budget=6.0,
                    min_time=2e-4, train_batch=None, input_size=None, seed=0, progress=None,
                    driver=None):
    """Rows (dicts) for one network and the chosen workloads, in this
    process; `torch` is the torch module or None (convcore alone).
    `driver` (turns.InProcess, the default, or a turns.Worker) decides when
    each workload is set up and how many turns of samples it gets."""
    driver = driver or turns.InProcess()
    built = {}

    def models_for(size):
        # one convcore model and its mirror per input size (VGG's classifier
        # depends on it); the same seed gives the same initial weights
        if size not in built:
            model, shape = build_model(spec, dtype, size, seed)
            tmodel = None
            if torch is not None:
                tmodel = to_torch(model, torch)
                copy_weights(model, tmodel, torch)
            built.clear()  # the previous size is not needed any more
            built[size] = model, tmodel, shape
        return built[size]

    rng = np.random.default_rng(seed + 2)
    rows = []
    # eval workloads first: the training steps change the weights
    for w in sorted(workloads, key=WORKLOADS.index):
        if progress is not None:
            progress.set_postfix_str(f"{spec.name} {w}")
        driver.before_setup()
        batch = workload_batch(spec, w, train_batch)
        size = input_size or (spec.train_size if w == "train" else None)
        model, tmodel, shape = models_for(size)
        x = rng.standard_normal((batch,) + tuple(shape)).astype(dtype)
        row = {"network": spec.name, "label": spec.label, "workload": w, "batch": batch,
               "input": "x".join(map(str, shape)), "dtype": dtype}
        if w == "train":
            y = rng.integers(0, spec.num_classes, batch).astype(np.int64)
            trainer = _Trainer(model, tmodel, torch, x, y)
            fns = {"convcore": trainer.convcore_step}
            # agreement step (also the warm-up): dropout off on both sides
            _set_dropout(model, tmodel, False)
            loss = trainer.convcore_step()
            row["loss"] = loss
            if torch is not None:
                fns["torch"] = trainer.torch_step
                tloss = trainer.torch_step()
                row["torch_loss"] = tloss
                row["max_abs_diff"] = abs(loss - tloss)
                row["rel_diff"] = abs(loss - tloss) / max(1.0, abs(tloss))
                row["grad_rel_diff"] = _grad_rel_diff(model, tmodel)
                row["agree"] = bool(row["rel_diff"] <= TOL_OUTPUT[dtype]
                                    and row["grad_rel_diff"] <= TOL_GRAD[dtype])
            _set_dropout(model, tmodel, True)
        else:
            model.eval()
            fns = {"convcore": lambda: _eval(model, x)}
            out = _eval(model, x)
            if torch is not None:
                tmodel.eval()
                tx = torch.from_numpy(x)

                def tfn(tx=tx):
                    with torch.no_grad():
                        return tmodel(tx)
                fns["torch"] = tfn
                tout = tfn().numpy()
                diff = float(np.max(np.abs(out.astype(np.float64) - tout)))
                scale = float(np.max(np.abs(tout))) or 1.0
                row["max_abs_diff"] = diff
                row["rel_diff"] = diff / scale
                row["agree"] = bool(diff / scale <= TOL_OUTPUT[dtype])
        # The first call built plans and caches: the second tells how long a call takes.
        took = {}
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            took[k] = time.perf_counter() - t0
        inner = {k: (1 if w == "train" else _inner(took[k], min_time)) for k in fns}
        cold = {k: took[k] < turns.WARM_BELOW for k in fns}
        sampler = turns.Sampler.for_budget(fns, inner, cold, budget, MAX_ROUNDS, seed=seed)
        driver.sample(sampler, repeats, budget, MAX_ROUNDS)
        for k in fns:
            row[f"{k}_inner"] = inner[k]
        _set_stats(row, sampler.samples, sampler.cold)
        rows.append(row)
        if progress is not None:
            progress.update(1)
    return rows


def _set_stats(row, samples, cold=None):
    """row's timing fields from `samples` ({library: [seconds per call]}):
    median, p95, fastest, p95/median, rounds, the ratio convcore / torch;
    and from `cold` (the calls that opened a block, timed apart) their
    median over the samples' median."""
    for k, s in samples.items():
        row[f"{k}_median_ms"] = float(np.median(s)) * 1e3
        row[f"{k}_p95_ms"] = _percentile(s, 95) * 1e3
        row[f"{k}_min_ms"] = float(np.min(s)) * 1e3
        row[f"{k}_p95_over_median"] = row[f"{k}_p95_ms"] / row[f"{k}_median_ms"]
        if cold and cold.get(k):
            row[f"{k}_cold_over_median"] = float(np.median(cold[k])) * 1e3 / \
                row[f"{k}_median_ms"]
    row["rounds"] = len(samples["convcore"])
    if "torch" in samples:
        row["ratio"] = row["convcore_median_ms"] / row["torch_median_ms"]
    row["samples_s"] = samples
    row["cold_s"] = cold or {}


# Agreement fields of a row: merged replicates keep the worst.
_WORST = ("max_abs_diff", "rel_diff", "grad_rel_diff")


def merge_replicates(rows):
    """One row per network, workload and import order: the samples of that
    order's processes (`replicate` 0, 1, ...) pooled (median, p95), p95 /
    median of each sample over its own process's median, the agreement the
    worst of them, and `process_gap`, how far apart the processes' convcore
    medians lie (max / min - 1): the run-to-run noise that a gap between
    import orders is to be read against."""
    groups = OrderedDict()
    for r in rows:
        groups.setdefault((r["network"], r["workload"], r["order"]), []).append(r)
    merged = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        row = dict(group[0])
        samples = {k: [t for r in group for t in r["samples_s"][k]]
                   for k in group[0]["samples_s"]}
        cold = {k: [t for r in group for t in r.get("cold_s", {}).get(k, [])]
                for k in group[0]["samples_s"]}
        medians = [r["convcore_median_ms"] for r in group]
        _set_stats(row, samples, cold)
        for k in samples:
            # A spike is a call slow for its own process: each sample over
            # its process's median, pooled, not over the pooled median
            # (which a slower process would lift).
            rel = [t / np.median(r["samples_s"][k]) for r in group for t in r["samples_s"][k]]
            row[f"{k}_p95_over_median"] = _percentile(rel, 95)
        for k in _WORST:
            if all(r.get(k) is not None for r in group):
                row[k] = max(r[k] for r in group)
        if all("agree" in r for r in group):
            row["agree"] = all(r["agree"] for r in group)
        row["process_medians_ms"] = medians
        row["process_gap"] = max(medians) / min(medians) - 1
        row.pop("replicate", None)
        merged.append(row)
    return merged


def _eval(model, x):
    with convcore.no_grad():
        return model(x)


# ---------------------------------------------------------------- one process

def run_in_process(plan, progress=True, driver=None):
    """Measure `plan` (a dict, see _plan) in this process; returns the
    result dict {"rows", "torch", "threads", "imported_first"}. `driver`:
    see measure_network."""
    torch = None
    if plan["use_torch"]:
        try:
            import torch
        except ImportError:
            torch = None
    threads = plan["threads"]
    convcore.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    from tqdm import tqdm
    total = len(plan["networks"]) * len(plan["workloads"])
    bar = tqdm(total=total, file=sys.stderr, unit="workload", dynamic_ncols=True,
               desc=plan.get("desc") or "networks", disable=not progress)
    rows = []
    try:
        for i, name in enumerate(plan["networks"]):
            rows += measure_network(NETWORKS[name], plan["workloads"], torch, plan["dtype"],
                                    plan["repeats"], plan["budget"], plan["min_time"],
                                    plan["train_batch"], plan["input_size"],
                                    seed=plan.get("first_seed", 0) + i, progress=bar,
                                    driver=driver)
    finally:
        bar.close()
    for r in rows:
        r["order"] = plan.get("order", "in-process")
        r["threads"] = threads
    return {"rows": rows, "torch": None if torch is None else torch.__version__,
            "threads": threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def worker_main(plan_path, out_path, replies):
    """Entry point of a child interpreter: read the plan, measure in the
    coordinator's turns (its commands on stdin, the replies to `replies`),
    write the result as JSON."""
    with open(plan_path) as f:
        plan = json.load(f)
    result = run_in_process(plan, progress=False, driver=turns.Worker(sys.stdin, replies))
    with open(out_path, "w") as f:
        json.dump(result, f, default=_json_default)
    return 0


_IMPORTS = {
    "torch-first": "import torch\nimport convcore\n",
    "convcore-first": "import convcore\ntry:\n    import torch\nexcept ImportError:\n    pass\n",
}


def _child_argv(order, plan_path, out_path):
    """A fresh interpreter importing torch and convcore in `order`. Its
    stdout carries the replies to the coordinator; anything else it prints
    goes to stderr."""
    code = ("import os, sys\n"
            "replies = os.fdopen(os.dup(1), 'w')\n"
            "os.dup2(2, 1)\n"
            + _IMPORTS[order]
            + "from convcore.bench import networks\n"
            "sys.exit(networks.worker_main(sys.argv[1], sys.argv[2], replies))\n")
    return [sys.executable, "-c", code, plan_path, out_path]


def run_orders(plan, processes, on_workload=None):
    """Run `plan` in fresh interpreters, one per (import order, replicate)
    of `processes`, all at once and taking turns (turns.run_in_turns);
    returns their result dicts in that order. The children get this
    convcore first on PYTHONPATH and run from a neutral directory."""
    home = os.path.dirname(os.path.dirname(os.path.abspath(convcore.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [home, env.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        children, outs = [], []
        for j, (order, rep) in enumerate(processes):
            plan_path = os.path.join(tmp, f"plan{j}.json")
            outs.append(os.path.join(tmp, f"out{j}.json"))
            with open(plan_path, "w") as f:
                json.dump({**plan, "order": order}, f)
            children.append((f"{order} (replicate {rep + 1})",
                             _child_argv(order, plan_path, outs[-1])))
        turns.run_in_turns(children, len(plan["workloads"]), plan["repeats"], plan["budget"],
                           MAX_ROUNDS, env=env, cwd=tmp, on_workload=on_workload)
        results = []
        for (order, rep), out in zip(processes, outs):
            with open(out) as f:
                result = json.load(f)
            for r in result["rows"]:
                r["replicate"] = rep
            results.append(result)
    return results


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return str(o)


# ---------------------------------------------------------------- profile

def _conv_kind(m):
    kh, kw = m.kernel_size
    kind = "depthwise " if m.groups > 1 and m.groups == m.in_channels == m.out_channels else \
        (f"groups={m.groups} " if m.groups > 1 else "")
    stride = "" if m.stride == (1, 1) else f"/{m.stride[0]}"
    return f"Conv2d {kind}{kh}x{kw}{stride}"


def _layer_name(m, by_kind):
    from convcore import nn
    name = _conv_kind(m) if by_kind and isinstance(m, nn.Conv2d) else type(m).__name__
    return name + " (own)" if m._modules else name


def _fused_name(step):
    """A fused step's row: the layers whose work it does itself (its
    convolution or linear layer has its own row)."""
    from convcore import nn
    own = [type(m).__name__ for m in step.modules if not isinstance(m, (nn.Conv2d, nn.Linear))]
    return " + ".join(own) + " (fused)"


def profile_step(spec, steps=3, dtype="float32", train_batch=None, input_size=None, seed=0,
                 by_kind=True):
    """Share of a convcore training step by layer type, fusion as it runs.

    The layer classes' forward and backward, the fused steps of
    convcore.nn._fusion and the convolutions those run are wrapped (on the
    classes, so that the fused paths, which decline modules with a
    forward of their own, still run) with a timer that subtracts the time
    spent in the timers inside it: a container's row is its own work (a
    residual add, a concatenation), a fused step's row ("BatchNorm2d + ReLU
    (fused)") its work beside the convolution or linear layer it runs.
    Convolutions are split by kind ("Conv2d 1x1", "Conv2d depthwise
    3x3/2") when by_kind. Returns {"step_ms": unwrapped median step,
    "wrapped_ms": mean step with the timers, "rows": [(layer type, fwd ms,
    bwd ms, other ms)] (other: the optimizer's zero_grad and step),
    "other_ms": step time outside every timer}."""
    from convcore.nn import _fusion
    model, shape = build_model(spec, dtype, input_size or spec.train_size, seed)
    batch = train_batch or spec.train_batch
    rng = np.random.default_rng(seed + 2)
    x = rng.standard_normal((batch,) + tuple(shape)).astype(dtype)
    y = rng.integers(0, spec.num_classes, batch).astype(np.int64)
    trainer = _Trainer(model, None, None, x, y)
    for _ in range(2):   # the first steps allocate (momentum, cached buffers)
        trainer.convcore_step()
    plain = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.convcore_step()
        plain.append(time.perf_counter() - t0)

    totals = defaultdict(float)
    stack = []
    clock = time.perf_counter

    def timed(fn, key_of, phase):
        def wrapper(*args, **kwargs):
            stack.append(0.0)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = clock() - t0
                inside = stack.pop()
                totals[(key_of(*args), phase)] += elapsed - inside
                if stack:
                    stack[-1] += elapsed
        return wrapper

    names = {}   # id -> row name, worked out at an object's first call

    def keyed_by(name_of):
        """key_of for `timed`: the row of the call's first argument (the
        layer or fused step), named by name_of once per object."""
        def key_of(obj, *_):
            name = names.get(id(obj))
            if name is None:
                name = names[id(obj)] = name_of(obj)
            return name
        return key_of

    layer_key = keyed_by(lambda m: _layer_name(m, by_kind))

    patched = []   # (owner, attribute, its own value before or None)

    def patch(owner, attr, key_of, phase):
        patched.append((owner, attr, owner.__dict__.get(attr)))
        setattr(owner, attr, timed(getattr(owner, attr), key_of, phase))

    try:
        for cls in {type(m) for m in model.modules()}:
            patch(cls, "forward", layer_key, "fwd")
            patch(cls, "backward", layer_key, "bwd")
        for cls in _fusion_step_classes(_fusion.Step):
            for attr, phase in (("__call__", "fwd"), ("backward", "bwd")):
                if attr in cls.__dict__:
                    patch(cls, attr, keyed_by(_fused_name), phase)
        patch(_fusion, "_conv_forward", layer_key, "fwd")
        patch(_fusion, "_conv_backward", layer_key, "bwd")
        loss = trainer.loss
        loss.__dict__["forward"] = timed(loss.forward, lambda *_: "CrossEntropyLoss", "fwd")
        loss.__dict__["backward"] = timed(loss.backward, lambda *_: "CrossEntropyLoss", "bwd")
        opt = trainer.opt
        opt.zero_grad = timed(opt.zero_grad, lambda *_: "SGD.zero_grad", "other")
        opt.step = timed(opt.step, lambda *_: "SGD.step (momentum)", "other")
        trainer.convcore_step()                      # warm the wrappers
        totals.clear()
        t0 = clock()
        for _ in range(steps):
            trainer.convcore_step()
        wrapped = (clock() - t0) / steps
    finally:
        for owner, attr, own in reversed(patched):
            if own is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, own)
    per = defaultdict(lambda: [0.0, 0.0, 0.0])
    for (name, phase), v in totals.items():
        per[name][("fwd", "bwd", "other").index(phase)] += v / steps
    rows = sorted(((k, *v) for k, v in per.items()), key=lambda r: -sum(r[1:]))
    accounted = sum(sum(r[1:]) for r in rows)
    return {"network": spec.name, "batch": batch, "input": "x".join(map(str, shape)),
            "steps": steps, "step_ms": float(np.median(plain)) * 1e3,
            "wrapped_ms": wrapped * 1e3,
            "rows": [(k, f * 1e3, b * 1e3, o * 1e3) for k, f, b, o in rows],
            "other_ms": (wrapped - accounted) * 1e3}


def _fusion_step_classes(base):
    """base and every subclass of it, however deep."""
    out = [base]
    for sub in base.__subclasses__():
        out += _fusion_step_classes(sub)
    return out


def profile_lines(prof, threads, markdown=False):
    wrapped = prof["wrapped_ms"]
    head = (f"convcore {prof['network']} training step, batch {prof['batch']}, input "
            f"{prof['input']}, {threads} thread(s): {prof['step_ms']:.1f} ms (median of "
            f"{prof['steps']} steps), {wrapped:.1f} ms with the timers; share of the timed step:")
    cols = ("layer type", "fwd ms", "bwd ms", "total ms", "share")
    def ms(v, show):
        return f"{v:.2f}" if show else ""
    rows = [(k, ms(f, not o), ms(b, not o), f"{f + b + o:.2f}", f"{(f + b + o) / wrapped:.1%}")
            for k, f, b, o in prof["rows"]]
    rows.append(("step glue (outside every module)", "", "", f"{prof['other_ms']:.2f}",
                 f"{prof['other_ms'] / wrapped:.1%}"))
    if markdown:
        return [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + \
            ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return [head, fmt(cols), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


# ---------------------------------------------------------------- report

COLUMNS = [  # (header, key, format)
    ("network", "label", "s"), ("workload", "workload", "s"), ("batch", "batch", "d"),
    ("input", "input", "s"), ("order", "order", "s"),
    ("cc med ms", "convcore_median_ms", "ms"), ("cc p95 ms", "convcore_p95_ms", "ms"),
    ("cc p95/med", "convcore_p95_over_median", ".2f"),
    ("cc cold/med", "convcore_cold_over_median", ".2f"),
    ("torch med ms", "torch_median_ms", "ms"), ("torch p95 ms", "torch_p95_ms", "ms"),
    ("torch p95/med", "torch_p95_over_median", ".2f"),
    ("torch cold/med", "torch_cold_over_median", ".2f"),
    ("cc/torch", "ratio", ".2f"), ("max |diff|", "max_abs_diff", ".1e"),
    ("rel diff", "rel_diff", ".1e"), ("grad rel", "grad_rel_diff", ".1e"),
    ("rounds", "rounds", "d"),
]


def _fmt(v, how):
    if v is None:
        return "-"
    if how == "s":
        return str(v)
    if how == "d":
        return str(int(v))
    if how == "ms":
        return f"{v:.3f}" if v < 10 else (f"{v:.2f}" if v < 100 else f"{v:.1f}")
    return format(v, how)


def table_lines(rows, markdown=False):
    cols = [c for c in COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    body = [[_fmt(r.get(k), how) for _, k, how in cols] for r in rows]
    heads = [h for h, _, _ in cols]
    if markdown:
        return ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)] + \
            ["| " + " | ".join(b) + " |" for b in body]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(heads)]
    left = 5
    fmt = lambda cells: "  ".join(c.ljust(w) if i < left else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(heads), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]


def summarize(rows):
    """Headline numbers: the ratio's median and worst, p95/median, the gap
    between import orders, agreement."""
    out = {}
    ratios = [r["ratio"] for r in rows if r.get("ratio") is not None]
    if ratios:
        worst = max(rows, key=lambda r: r.get("ratio") or 0)
        out["median_ratio"] = float(np.median(ratios))
        out["max_ratio"] = worst["ratio"]
        out["max_ratio_at"] = f"{worst['label']} {worst['workload']} ({worst['order']})"
        out["share_at_most_0.9"] = float(np.mean([q <= 0.9 for q in ratios]))
        out["by_order"] = {o: float(np.median([r["ratio"] for r in rows
                                               if r["order"] == o and r.get("ratio")]))
                           for o in dict.fromkeys(r["order"] for r in rows)
                           if any(r["order"] == o and r.get("ratio") for r in rows)}
    p = [r["convcore_p95_over_median"] for r in rows]
    out["workloads"] = len(rows)
    worst_p = max(rows, key=lambda r: r["convcore_p95_over_median"])
    out["max_p95_over_median"] = worst_p["convcore_p95_over_median"]
    out["max_p95_over_median_at"] = (f"{worst_p['label']} {worst_p['workload']} "
                                     f"({worst_p['order']})")
    out["median_p95_over_median"] = float(np.median(p))
    out["p95_over_median_above_target"] = sum(v > P95_TARGET for v in p)
    t = [r["torch_p95_over_median"] for r in rows if r.get("torch_p95_over_median") is not None]
    if t:
        out["torch_median_p95_over_median"] = float(np.median(t))
        out["torch_p95_over_median_above_target"] = sum(v > P95_TARGET for v in t)
    gaps = _order_gaps(rows, "convcore_median_ms")
    if gaps:
        k = max(gaps, key=gaps.get)
        out["max_order_gap"] = gaps[k]
        out["max_order_gap_at"] = f"{k[0]} {k[1]}"
        out["order_gaps"] = {f"{a} {b}": g for (a, b), g in gaps.items()}
    gaps = {(r["label"], r["workload"], r["order"]): r["process_gap"]
            for r in rows if r.get("process_gap") is not None}
    if gaps:
        k = max(gaps, key=gaps.get)
        out["max_process_gap"] = gaps[k]
        out["max_process_gap_at"] = f"{k[0]} {k[1]} ({k[2]})"
        out["median_process_gap"] = float(np.median(list(gaps.values())))
    # The same gap measured on convcore / PyTorch: a slower machine while
    # one process ran slows both libraries of that process, and cancels.
    gaps = _order_gaps(rows, "ratio")
    if gaps:
        k = max(gaps, key=gaps.get)
        out["max_order_gap_vs_torch"] = gaps[k]
        out["max_order_gap_vs_torch_at"] = f"{k[0]} {k[1]}"
    agree = [r["agree"] for r in rows if "agree" in r]
    out["all_agree"] = all(agree) if agree else None
    return out


def _order_gaps(rows, field):
    """{(network label, workload): max/min - 1 of `field` over the import
    orders}, for the workloads measured in more than one order."""
    by_key = defaultdict(dict)
    for r in rows:
        if r.get(field) is not None:
            by_key[(r["label"], r["workload"])][r["order"]] = r[field]
    return {k: max(v.values()) / min(v.values()) - 1 for k, v in by_key.items() if len(v) > 1}


def summary_lines(summary):
    lines = []
    if "median_ratio" in summary:
        lines.append(f"convcore / PyTorch median time, median over all workloads: "
                     f"{summary['median_ratio']:.2f} (issue 13 target <= 0.7); worst "
                     f"{summary['max_ratio']:.2f} at {summary['max_ratio_at']} (target <= 0.9 "
                     f"everywhere; {100 * summary['share_at_most_0.9']:.0f}% of workloads are)")
        lines.append("median ratio by import order: " + ", ".join(
            f"{o} {v:.2f}" for o, v in summary["by_order"].items()))
    lines.append(f"convcore p95 / median: median {summary['median_p95_over_median']:.2f}, worst "
                 f"{summary['max_p95_over_median']:.2f} at {summary['max_p95_over_median_at']} "
                 f"(target <= {P95_TARGET:g}; above it in "
                 f"{summary['p95_over_median_above_target']} of {summary['workloads']})")
    if "torch_median_p95_over_median" in summary:
        lines.append(f"PyTorch p95 / median, in the same turns: median "
                     f"{summary['torch_median_p95_over_median']:.2f}, above {P95_TARGET:g} in "
                     f"{summary['torch_p95_over_median_above_target']} of {summary['workloads']}")
    if "max_order_gap" in summary:
        lines.append(f"import orders, convcore medians differ by at most "
                     f"{100 * summary['max_order_gap']:.0f}% ({summary['max_order_gap_at']}; "
                     f"target <= 10%)")
    if "max_process_gap" in summary:
        lines.append(f"two processes of the same import order, convcore medians differ by "
                     f"{100 * summary['median_process_gap']:.0f}% (median over workloads), at "
                     f"most {100 * summary['max_process_gap']:.0f}% "
                     f"({summary['max_process_gap_at']}): the run-to-run noise that the gap "
                     f"between orders is to be read against")
    if "max_order_gap_vs_torch" in summary:
        lines.append(f"import orders, convcore / PyTorch in the same process differs by at most "
                     f"{100 * summary['max_order_gap_vs_torch']:.0f}% "
                     f"({summary['max_order_gap_vs_torch_at']}; each process's own PyTorch as "
                     f"the yardstick)")
    if summary["all_agree"] is not None:
        lines.append("outputs, losses and gradients agree with PyTorch: "
                     + ("all" if summary["all_agree"] else "NOT ALL (see rel diff / grad rel)"))
    return lines


def ratio_matrix_lines(rows):
    """Markdown: one line per network and workload, a ratio column per order."""
    orders = list(dict.fromkeys(r["order"] for r in rows))
    keys = list(dict.fromkeys((r["label"], r["workload"]) for r in rows))
    get = {(r["label"], r["workload"], r["order"]): r for r in rows}
    lines = ["| network | workload | " + " | ".join(f"cc/torch {o}" for o in orders)
             + " | " + " | ".join(f"cc ms {o}" for o in orders) + " |",
             "|" + "---|" * (2 + 2 * len(orders))]
    for label, w in keys:
        rs = [get.get((label, w, o)) for o in orders]
        lines.append(f"| {label} | {w} | " + " | ".join(
            _fmt(r.get("ratio") if r else None, ".2f") for r in rs) + " | " + " | ".join(
            _fmt(r["convcore_median_ms"] if r else None, "ms") for r in rs) + " |")
    return lines


def to_csv(path, rows):
    import csv
    fields = []
    for r in rows:
        for k in r:
            if k not in ("samples_s", "cold_s") and k not in fields:
                fields.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})


def markdown_lines(meta, plan, rows, summary, title, notes=(), profiles=()):
    lines = [f"# {title}", "",
             f"- date: {meta['date_utc']}",
             f"- machine: {meta['cpu']} ({meta['usable_cpus']} usable of {meta['logical_cpus']} "
             f"logical CPUs; SIMD {', '.join(meta['simd'])}), {meta['platform']}",
             f"- threads: {plan['threads']} (convcore.set_num_threads and torch.set_num_threads)",
             f"- versions: convcore {meta['convcore']}, Python {meta['python']}, numpy "
             f"{meta['numpy']}, scipy {meta['scipy']}, PyTorch {meta['torch'] or 'not installed'}; "
             f"BLAS {'; '.join(meta['blas'])}; OpenMP {'on' if meta['openmp'] else 'off'}",
             f"- command: `{meta['command']}`",
             f"- {plan['dtype']}; import orders: {', '.join(plan['orders'])} ("
             + (f"{plan.get('replicates', 1)} fresh processes per network and order, their "
                "samples pooled" if plan.get("replicates", 1) > 1 else
                "a fresh process per network and order")
             + "; a network's processes run at the same time and take turns, one at a time, "
             "so that all of them see the same machine); eval = model.eval() under "
             "convcore.no_grad() / torch.no_grad(); train = "
             f"forward, cross entropy, backward, SGD(lr={LR}, momentum={MOMENTUM}) step",
             f"- per workload: two warm-up calls each, then turns: in each, each library a "
             "block of back-to-back calls, the libraries in a random order; at least "
             f"{plan['repeats']} samples and more while {plan['budget']:g} s last (shared by "
             f"an order's processes; at most {MAX_ROUNDS} per process), spread over about "
             f"{turns.TURNS} turns per process; calls under {plan['min_time'] * 1e3:g} ms are "
             "timed in groups (a sample is the group's mean); a block of calls under "
             f"{turns.WARM_BELOW * 1e3:g} ms opens with a call timed apart (cold/med: its "
             "median over the median; it follows the other library's or process's calls)",
             "- PyTorch model: convcore.bench.networks.to_torch (the same module tree and names, "
             "ReLUs in place after a fresh tensor as in torchvision), loaded with the convcore "
             "model's state dict; BatchNorm starts from seeded non-trivial statistics",
             "- agreement: eval, max |output difference| (rel diff: over max |output|); train, "
             "|loss difference| of the first step (dropout off on both sides for that step) "
             "and the largest parameter-gradient difference |g - g_torch| / |g_torch| (norms per "
             "parameter tensor; at least 1e-3 of the largest gradient norm as denominator, "
             "for gradients that are nil but for rounding)",
             ]
    if plan.get("input_size"):
        lines.append(f"- input size overridden: {plan['input_size']}x{plan['input_size']}")
    else:
        small = [f"{NETWORKS[n].label} at {NETWORKS[n].train_size}x{NETWORKS[n].train_size}"
                 for n in plan["networks"] if NETWORKS[n].train_size]
        if small and "train" in plan["workloads"]:
            lines.append("- training steps at a smaller input, so that a step takes a few "
                         "seconds: " + ", ".join(small) + " (their eval workloads at 224x224)")
    if plan.get("train_batch"):
        lines.append(f"- training batch overridden: {plan['train_batch']}")
    state = meta.get("machine_state")
    if state:
        lines.append("- the machine at the start / end of the run: memory copy "
                     f"{state['start']['copy_gbs']:.1f} / {state['end']['copy_gbs']:.1f} GB/s "
                     "(one thread), GEMM peak "
                     f"{state['start']['sgemm_gflops']:.0f} / {state['end']['sgemm_gflops']:.0f} "
                     f"GFLOP/s ({plan['threads']} threads)")
    lines += [f"- note: {n}" for n in notes]
    lines += ["", "## Summary", ""] + [f"- {s}" for s in summary_lines(summary)]
    if any(r.get("ratio") is not None for r in rows):
        lines += ["", "## convcore / PyTorch by import order", "",
                  "Medians; below 1: convcore faster.", ""] + ratio_matrix_lines(rows)
    lines += ["", "## All measurements", "",
              "cc = convcore. Times per call (median, 95th percentile of the samples); "
              "p95/med shows the spikes (with several processes per order, each sample "
              "over its own process's median); cold/med: the first call of a block, after the "
              "other library's or process's calls, over the median; rounds = samples per "
              "library.", ""]
    lines += table_lines(rows, markdown=True)
    for prof in profiles:
        lines += [""] + profile_lines(prof, plan["threads"], markdown=True)
    return lines + [""]


# ---------------------------------------------------------------- command line

def add_arguments(parser):
    """Options of the networks suite (`convcore bench --suite networks`)."""
    g = parser.add_argument_group(
        "networks suite (--suite networks): whole zoo networks against PyTorch")
    g.add_argument("--networks", nargs="+", metavar="NET", choices=list(NETWORKS),
                   help=f"networks to run (default: all; --quick: {', '.join(QUICK_NETWORKS)}); "
                        f"choose from {', '.join(NETWORKS)}")
    g.add_argument("--workloads", nargs="+", metavar="W", choices=WORKLOADS,
                   help=f"workloads to run (default: all of {', '.join(WORKLOADS)})")
    g.add_argument("--orders", nargs="+", metavar="ORDER", choices=ORDERS + ("in-process",),
                   help="import orders, each in a fresh process (default: torch-first "
                        "convcore-first); in-process: measure in this process instead")
    g.add_argument("--replicates", type=_positive_int, metavar="N",
                   help="fresh processes per import order and network, their samples "
                        "pooled (default 2, --quick 1): with two, how far the processes of "
                        "one order lie apart shows the noise an order gap is read against")
    g.add_argument("--train-batch", type=_positive_int, metavar="N",
                   help="batch of the training step for every network (default: each "
                        "network's own, 64 for LeNet-5, 128 for ResNet-20, 16 otherwise)")
    g.add_argument("--input-size", type=_positive_int, metavar="S",
                   help="input height = width for every network and workload (default: "
                        "each network's published size, 32 for LeNet-5 and ResNet-20, 224 "
                        "otherwise; the ResNet-50 and VGG-11 training steps at 112)")
    g.add_argument("--profile", metavar="NET", choices=list(NETWORKS),
                   help="instead of the comparison: convcore's training step of NET by "
                        "layer type (each type's forward and backward share of the step)")
    g.add_argument("--profile-steps", type=_positive_int, default=3, metavar="N",
                   help="steps timed by --profile (default 3, after two warm-up steps)")


def _positive_int(text):
    from convcore.cli.args import positive_int
    return positive_int(text)


def _plan(args):
    quick = bool(getattr(args, "quick", False))
    repeats, budget = QUICK_TIMING if quick else FULL_TIMING
    # find_spec: whether torch is installed, without importing it here (the
    # parent process stays free of torch's threads)
    from importlib.util import find_spec
    use_torch = not args.no_torch and find_spec("torch") is not None
    return {
        "networks": list(args.networks or (QUICK_NETWORKS if quick else NETWORKS)),
        "workloads": list(args.workloads or WORKLOADS),
        "orders": list(args.orders or ORDERS) if use_torch else ["in-process"],
        "replicates": args.replicates or (1 if quick else 2),
        "threads": args.threads or 2,
        "repeats": args.repeats or repeats,
        "budget": args.budget if args.budget is not None else budget,
        "min_time": args.min_time,
        "dtype": args.dtype,
        "train_batch": args.train_batch,
        "input_size": args.input_size,
        "use_torch": use_torch,
        "progress": not args.no_progress,
        "quick": quick,
    }


def _results(plan):
    """The result dicts of every import order. The processes of a network,
    `replicates` fresh interpreters per order, run at the same time and
    take turns of a fraction of a second (turns.py): a shared machine's
    speed drifts over seconds, and orders measured one after the other
    would differ by that drift. Which order opens the turns alternates
    (two replicates: A B B A, then B A A B for the next network). The
    workload's time budget is shared among an order's processes."""
    if plan["orders"] == ["in-process"]:
        yield run_in_process(plan, plan["progress"])
        return
    replicates = plan.get("replicates", 1)
    fresh = [o for o in plan["orders"] if o != "in-process"]
    from tqdm import tqdm
    bar = tqdm(total=len(plan["networks"]) * len(plan["workloads"]), file=sys.stderr,
               unit="workload", dynamic_ncols=True, desc="networks",
               disable=not plan["progress"])
    try:
        for i, name in enumerate(plan["networks"]):
            one = {**plan, "networks": [name], "first_seed": i,
                   "budget": plan["budget"] / replicates}
            if "in-process" in plan["orders"]:  # measured alone, before the others
                yield run_in_process(one, False)
            processes = [(order, rep) for rep in range(replicates)
                         for order in (fresh if (i + rep) % 2 == 0 else fresh[::-1])]
            bar.set_postfix_str(f"{NETWORKS[name].label}, {len(processes)} processes in turns")

            def workload_done(k, name=name):
                bar.update(1)
                if k + 1 < len(plan["workloads"]):
                    bar.set_postfix_str(f"{NETWORKS[name].label} {plan['workloads'][k + 1]}")
            yield from run_orders(one, processes, on_workload=workload_done)
    finally:
        bar.close()


def machine_state(threads):
    """What the shared machine gives now: memory copy bandwidth (GB/s, one
    thread, 64 MiB) and the GEMM peak (GFLOP/s on `threads`). Phases of
    slow memory on the host slow the memory-bound layers between the
    convolutions more than PyTorch's, so runs are read against it."""
    from convcore.bench.engine import measure_peak
    src = np.ones(1 << 24, np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(9):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return {"copy_gbs": 2 * src.nbytes / float(np.median(times)) / 1e9,
            "sgemm_gflops": measure_peak(np.float32, threads)}


def run(args):
    """`convcore bench --suite networks [...]` and `--profile NET`."""
    if args.profile:
        convcore.set_num_threads(args.threads or 2)
        prof = profile_step(NETWORKS[args.profile], args.profile_steps, args.dtype,
                            args.train_batch, args.input_size)
        print("\n".join(profile_lines(prof, args.threads or 2)))
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write("\n".join(profile_lines(prof, args.threads or 2, markdown=True)) + "\n")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(prof, f, indent=1, default=_json_default)
        return 0
    plan = _plan(args)
    rows, torch_version = [], None
    state = {"start": machine_state(plan["threads"])}
    for result in _results(plan):
        rows += result["rows"]
        torch_version = torch_version or result["torch"]
    state["end"] = machine_state(plan["threads"])
    rows = merge_replicates(rows)
    if not args.no_torch and torch_version is None:
        print("networks: PyTorch is not installed; convcore measured alone", file=sys.stderr)
    summary = summarize(rows)
    print("\n".join(table_lines(rows)))
    print()
    print("\n".join(summary_lines(summary)))
    from convcore.bench import report
    meta = report.machine_info([plan["threads"]], torch_version)
    meta["machine_state"] = state
    written = []
    if args.markdown:
        title = args.title or "Whole networks: convcore vs PyTorch (CPU)"
        notes = [args.note] if args.note else []
        with open(args.markdown, "w") as f:
            f.write("\n".join(markdown_lines(meta, plan, rows, summary, title, notes)))
        written.append(args.markdown)
    if args.csv:
        to_csv(args.csv, rows)
        written.append(args.csv)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "plan": plan, "summary": summary, "rows": rows}, f,
                      indent=1, default=_json_default)
        written.append(args.json)
    if written:
        print("wrote " + ", ".join(written), file=sys.stderr)
    return 0 if summary["all_agree"] in (None, True) else 1


__all__ = ["NETWORKS", "WORKLOADS", "ORDERS", "NetworkSpec", "to_torch", "copy_weights",
           "measure_network", "run_in_process", "run_orders", "profile_step", "summarize",
           "add_arguments", "run"]
