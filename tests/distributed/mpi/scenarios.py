"""Scenarios run by tests/distributed/test_distributed.py under `mpiexec -n N python
tests/distributed/mpi/scenarios.py NAME [ARGS]`. Each exits 0 when its checks hold on
this rank and prints what the test reads (rank 0 only unless said)."""
import os
import signal
import sys

import numpy as np

import convcore
import convcore.distributed as dist
from convcore import nn, optim


def small_net(dtype=np.float32, seed=3):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, dtype=dtype), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1, dtype=dtype), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5, dtype=dtype))
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    return model


def batch(step, dtype=np.float32):
    rng = np.random.default_rng(100 + 10 * step + dist.rank())  # each rank its own data
    return (rng.standard_normal((4, 3, 8, 8)).astype(dtype), rng.integers(0, 5, 4))


def bitwise():
    """Gradients of the overlapped buckets against one all-reduce of every
    gradient after a plain backward: bitwise equal, float32 and float64."""
    for dtype in (np.float32, np.float64):
        ddp = dist.DistributedDataParallel(small_net(dtype), bucket_bytes=512)
        plain = small_net(dtype)
        loss = nn.CrossEntropyLoss()
        assert len(ddp._buckets) > 2, len(ddp._buckets)
        for step in range(3):  # step 0 learns the pattern; 1 and 2 overlap
            x, t = batch(step, dtype)
            for m in (ddp, plain):
                m.zero_grad()
                loss(m(x), t)
                m.backward(loss.backward())
            flat = np.concatenate([p.grad.ravel() for p in plain.parameters()])
            dist.all_reduce(flat, "sum")
            flat *= 1.0 / dist.world_size()
            got = np.concatenate([p.grad.ravel() for p in ddp.parameters()])
            if not np.array_equal(got, flat):
                print(f"rank {dist.rank()} {np.dtype(dtype).name} step {step}: "
                      f"max diff {np.max(np.abs(got - flat))}", file=sys.stderr)
                sys.exit(1)
            # every rank holds the same gradients
            gathered = dist.all_gather(got)
            assert all(np.array_equal(gathered[0], g) for g in gathered)
            for p, q in zip(plain.parameters(), ddp.parameters()):  # step both alike
                p.data -= 0.1 * q.grad
                q.data -= 0.1 * q.grad
    if dist.rank() == 0:
        print("bitwise ok")


def no_sync():
    """Two backward passes, the first in no_sync(): the same gradients as one
    backward over both micro-batches' sum, averaged once."""
    ddp = dist.DistributedDataParallel(small_net(np.float64), bucket_bytes=512)
    plain = small_net(np.float64)
    loss = nn.CrossEntropyLoss()
    for m in (ddp, plain):
        m.zero_grad()
    for step in range(2):
        x, t = batch(step, np.float64)
        if step == 0:
            with ddp.no_sync():
                loss(ddp(x), t)
                ddp.backward(loss.backward())
            local = [p.grad.copy() for p in ddp.parameters()]
        else:
            loss(ddp(x), t)
            ddp.backward(loss.backward())
        loss(plain(x), t)
        plain.backward(loss.backward())
    # inside no_sync the gradients stayed local
    x0, t0 = batch(0, np.float64)
    ref = small_net(np.float64)
    loss(ref(x0), t0)
    ref.backward(loss.backward())
    assert all(np.array_equal(a, p.grad) for a, p in zip(local, ref.parameters()))
    for p, q in zip(plain.parameters(), ddp.parameters()):
        expect = dist.all_reduce(p.grad.copy(), "mean")
        np.testing.assert_allclose(q.grad, expect, rtol=1e-13, atol=1e-15)
    if dist.rank() == 0:
        print("no_sync ok")


def sampler():
    """The ranks' shards cover the data set exactly once per epoch (padding
    aside) and are reshuffled per epoch from the shared seed."""
    n = 103
    for drop_last in (False, True):
        s = dist.DistributedSampler(np.zeros(n), shuffle=True, seed=5, drop_last=drop_last)
        seen = []
        for epoch in range(3):
            s.set_epoch(epoch)
            mine = np.array(list(s), dtype=np.int64)
            everyone = dist.all_gather(mine)           # equal lengths, or this fails
            seen.append(everyone)
            flat = everyone.ravel()
            world = dist.world_size()
            if drop_last:
                assert len(flat) == n - n % world and len(set(flat)) == len(flat)
            else:
                assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world
        assert not np.array_equal(seen[0], seen[1])
    if dist.rank() == 0:
        print("sampler ok")


def mismatch():
    """A rank with a different model is refused on every rank."""
    width = 8 if dist.rank() == 0 else 9
    model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))
    try:
        dist.DistributedDataParallel(model)
    except ValueError as e:
        print(f"rank {dist.rank()}: {e}", flush=True)
        sys.exit(3)
    sys.exit(0)


def fails(how):
    """Rank 1 fails in the middle of fit(): by raising, or killed outright."""
    from convcore.training import Callback, fit

    class Fail(Callback):
        def on_batch_end(self, state, b, logs):
            if dist.rank() == 1 and state.epoch == 1 and b == 2:
                if how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("injected failure")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 256)
    model = small_net()
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), (x, y),
        epochs=50, callbacks=[Fail()], progress=False, batch_size=8)


def train(epochs, checkpoint, resume=None):
    """fit() on the ranks, writing (and maybe resuming) a checkpoint; rank 0
    prints the history's epochs and learning rates, and a weight digest."""
    from convcore.data import DataLoader
    from convcore.optim.lr_scheduler import StepLR
    from convcore.training import fit
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 96)
    model = small_net()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    h = fit(model, nn.CrossEntropyLoss(), opt, DataLoader((x, y), 8, shuffle=True, seed=4),
            (x[:40], y[:40]), epochs=int(epochs), scheduler=sched, checkpoint=checkpoint,
            resume=resume, progress=False)
    digests = dist.all_gather(np.array([sum(float(np.abs(p.data).sum())
                                            for p in model.parameters())]))
    assert np.all(digests == digests[0]), digests   # the same weights on every rank
    if dist.rank() == 0:
        print("epochs", h["epoch"])
        print("lr", h["lr"])
        print("val_acc", h["val_acc"])


if __name__ == "__main__":
    convcore.set_num_threads(1)
    dist.init()
    name, args = sys.argv[1], sys.argv[2:]
    globals()[name](*args)
