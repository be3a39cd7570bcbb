"""convcore.distributed: world size 1 in this process (MPI is never
initialised here), and the real thing under `mpiexec -n 2` (tests/distributed/mpi/),
skipped cleanly where mpiexec or mpi4py is absent (pip install ".[mpi]")."""
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import convcore
from convcore import nn, optim
from convcore._runtime import mpi as _mpi
from convcore.data import DataLoader
from convcore.distributed import DistributedDataParallel, DistributedSampler
from convcore.nn import SyncBatchNorm

from subprocess_helpers import convcore_env

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "mpi", "scenarios.py")
MPIEXEC = shutil.which("mpiexec")
HAVE_MPI = MPIEXEC is not None and importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason='needs mpiexec and mpi4py: '
                               'pip install ".[mpi]"')


def mpirun(n, *args, timeout=240):
    """`mpiexec -n N python args...` importing the convcore under test, from
    a neutral directory (subprocess_helpers says why); one thread per rank."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args],
                              env=convcore_env(OMP_NUM_THREADS="1"), cwd=tmp,
                              capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


# -- world size 1, no MPI -------------------------------------------------------
def test_not_initialised_is_one_rank_and_collectives_are_identities():
    assert _mpi.world_size() == 1 and _mpi.rank() == 0 and not _mpi.active()
    a = np.arange(6.0).reshape(2, 3)
    assert _mpi.all_reduce(a, "mean") is a and np.array_equal(a, np.arange(6.0).reshape(2, 3))
    assert np.array_equal(_mpi.broadcast(a), a)
    g = _mpi.all_gather(a)
    assert g.shape == (1, 2, 3) and np.array_equal(g[0], a)
    _mpi.barrier()


@pytest.mark.parametrize("call,match", [
    (lambda: _mpi.all_reduce([1.0, 2.0]), "numpy.ndarray"),
    (lambda: _mpi.all_reduce(np.zeros((3, 4))[:, ::2]), "C-contiguous"),
    (lambda: _mpi.all_reduce(np.zeros(3), "avg"), "op must be one of"),
    (lambda: _mpi.all_reduce(np.zeros(3, np.int64), "mean"), "float array"),
    (lambda: _mpi.broadcast(np.zeros(3), root=1), "root must be a rank"),
    (lambda: _mpi.all_reduce(np.array(["a"])), "numeric"),
])
def test_collectives_refuse_bad_arrays(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_init_without_mpi_names_the_install_command(monkeypatch):
    def missing():
        raise RuntimeError(f"convcore.distributed: MPI is not available. Install it "
                           f"with: {_mpi.INSTALL_HINT}")
    monkeypatch.setattr(_mpi, "_import_mpi", missing)
    monkeypatch.setattr(_mpi, "_state", _mpi._State())
    assert _mpi.init() == 1 and _mpi.is_initialized()   # alone: world size 1
    monkeypatch.setattr(_mpi, "_state", _mpi._State())
    monkeypatch.setenv("PMI_SIZE", "4")                  # started by mpiexec -n 4
    with pytest.raises(RuntimeError, match=r'convcore\[mpi\]'):
        _mpi.init()


def _net(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, dtype=dtype), nn.BatchNorm2d(4, dtype=dtype),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3, dtype=dtype))
    for p in m.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    return m


def test_ddp_at_world_size_one_is_the_model():
    x = np.random.default_rng(1).standard_normal((5, 3, 6, 6))
    gy = np.random.default_rng(2).standard_normal((5, 3))
    plain, wrapped = _net(), DistributedDataParallel(_net())
    assert list(wrapped.state_dict()) == list(plain.state_dict())  # no "module." prefix
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in wrapped.module.parameters()]
    np.testing.assert_array_equal(wrapped(x), plain(x))
    wrapped.backward(gy)
    plain.backward(gy)
    for p, q in zip(plain.parameters(), wrapped.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    wrapped.eval()
    assert not wrapped.training and not wrapped.module[1].training
    with pytest.raises(TypeError, match="convcore Module"):
        DistributedDataParallel(lambda x: x)
    with pytest.raises(ValueError, match="bucket_bytes"):
        DistributedDataParallel(_net(), bucket_bytes=0)


def test_parameter_grad_hook_runs_after_accumulation_and_removes():
    p = nn.Parameter(np.zeros(3))
    seen = []
    handle = p.register_post_accumulate_grad_hook(lambda q: seen.append(q.grad.copy()))
    p.accumulate_grad(np.ones(3))
    p.accumulate_grad(np.ones(3))
    handle.remove()
    p.accumulate_grad(np.ones(3))
    assert [s.tolist() for s in seen] == [[1, 1, 1], [2, 2, 2]]
    with pytest.raises(TypeError, match="callable"):
        p.register_post_accumulate_grad_hook(3)


def test_sync_batch_norm_alone_is_batch_norm_and_converts_in_place():
    x = np.random.default_rng(3).standard_normal((4, 3, 5, 5))
    ref = _net()
    model = SyncBatchNorm.convert_sync_batchnorm(_net())
    bn = model[1]
    assert type(bn) is SyncBatchNorm and list(model.state_dict()) == list(ref.state_dict())
    np.testing.assert_array_equal(model(x), ref(x))
    model.backward(np.ones((4, 3)))
    ref.backward(np.ones((4, 3)))
    for p, q in zip(ref.parameters(), model.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, ref[1].running_mean)
    # a lone SyncBatchNorm on 5-D input (N, C, D, H, W), as torch's
    sbn = SyncBatchNorm(3, dtype=np.float64)
    y = sbn(x[:, :, None])
    assert y.shape == (4, 3, 1, 5, 5)
    assert sbn.backward(np.ones(y.shape)).shape == y.shape
    converted = SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(4))
    assert type(converted) is SyncBatchNorm


@pytest.mark.parametrize("n,world,drop_last", [(10, 3, False), (10, 3, True), (9, 3, False),
                                               (2, 4, False), (0, 2, False)])
def test_sampler_shards_cover_the_data_once(n, world, drop_last):
    shards = [DistributedSampler(np.zeros(n), num_replicas=world, rank=r, seed=1,
                                 drop_last=drop_last) for r in range(world)]
    for s in shards:
        s.set_epoch(2)
    parts = [list(s) for s in shards]
    assert len({len(p) for p in parts}) == 1 and all(len(p) == len(s)
                                                     for p, s in zip(parts, shards))
    flat = [i for p in parts for i in p]
    if drop_last:
        assert len(flat) == n - n % world and len(set(flat)) == len(flat)
    else:
        assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world
        # padding repeats the epoch's first indices, as torch's sampler
        order = shards[0].global_order()
        assert list(order[n:]) == list(order[:len(order) - n])


def test_sampler_order_depends_on_seed_and_epoch_not_on_world_size():
    a = DistributedSampler(np.zeros(12), num_replicas=2, rank=0, seed=7)
    b = DistributedSampler(np.zeros(12), num_replicas=3, rank=0, seed=7)
    assert np.array_equal(a.global_order(3), b.global_order(3))
    assert not np.array_equal(a.global_order(3), a.global_order(4))
    assert list(DistributedSampler(np.zeros(5), 2, 1, shuffle=False)) == [1, 3, 0]  # padded
    with pytest.raises(ValueError, match="rank 2 is not below num_replicas 2"):
        DistributedSampler(np.zeros(5), num_replicas=2, rank=2)
    with pytest.raises(TypeError, match="length"):
        DistributedSampler(3)


def test_data_loader_takes_a_sampler():
    x = np.arange(20, dtype=np.float32).reshape(10, 1, 1, 2)
    y = np.arange(10)
    s = DistributedSampler(x, num_replicas=2, rank=1, seed=0)
    loader = DataLoader((x, y), 2, sampler=s)
    assert len(loader) == 3
    loader.set_epoch(5)
    labels = np.concatenate([t for _, t in loader])
    assert labels.tolist() == s.indices(5).tolist()
    with pytest.raises(ValueError, match="shuffle=True or a sampler"):
        DataLoader((x, y), 2, shuffle=True, sampler=s)
    with pytest.raises(TypeError, match="sampler must have"):
        DataLoader((x, y), 2, sampler=5)
    with pytest.raises(IndexError, match="outside 0..9"):
        list(DataLoader((x, y), 2, sampler=[3, 12]))


def test_fit_alone_with_distributed_true_or_false_trains_the_same():
    from convcore.training import fit
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 6, 6))
    y = rng.integers(0, 3, 16)
    results = []
    for distributed in (False, None):
        model = _net()
        h = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), (x, y),
                epochs=2, batch_size=4, progress=False, distributed=distributed)
        results.append((h["train_loss"], model.state_dict()))
    assert results[0][0] == results[1][0]


# -- several ranks ----------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_ranks_match_one_process_with_the_global_batch(n):
    """SGD (momentum) and Adam, float32 and float64, with and without
    SyncBatchNorm: N ranks x b images == 1 process x N*b after 3 steps."""
    proc, _ = mpirun(n, os.path.join(HERE, "mpi", "ddp_equivalence.py"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.split("\n")
    assert sum(" sgd " in line or " adam " in line for line in lines) == 8, proc.stdout


@needs_mpi
@pytest.mark.parametrize("scenario", ["bitwise", "no_sync", "sampler"])
def test_two_ranks(scenario):
    proc, _ = mpirun(2, SCENARIOS, scenario)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{scenario} ok" in proc.stdout


@needs_mpi
def test_a_different_model_on_one_rank_is_refused_with_both_shapes():
    proc, _ = mpirun(2, SCENARIOS, "mismatch")
    assert proc.returncode != 0
    assert "(9, 4)" in proc.stdout and "(8, 4)" in proc.stdout, proc.stdout


@needs_mpi
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_ends_the_job(how):
    """Rank 1 fails in epoch 2 of a 50-epoch run: the job ends non-zero,
    well before its ranks could have finished, with the rank named (by
    convcore for an exception, by the launcher's PID line for a kill)."""
    proc, seconds = mpirun(2, SCENARIOS, "fails", how, timeout=120)
    assert proc.returncode != 0
    assert seconds < 60
    if how == "raise":
        assert "rank 1 of 2 failed in fit(): RuntimeError: injected failure" in proc.stderr
    else:
        assert "BAD TERMINATION" in proc.stdout + proc.stderr or proc.returncode in (9, 137)


@needs_mpi
def test_fit_resumes_on_another_world_size_with_the_same_schedule(tmp_path):
    ck = str(tmp_path / "ck.npz")
    first, _ = mpirun(2, SCENARIOS, "train", "2", ck)
    assert first.returncode == 0, first.stderr
    resumed, _ = mpirun(3, SCENARIOS, "train", "4", str(tmp_path / "ck2.npz"), ck)
    assert resumed.returncode == 0, resumed.stderr
    lines = dict(line.split(" ", 1) for line in resumed.stdout.strip().split("\n"))
    assert lines["epochs"] == "[1, 2, 3, 4]"
    assert lines["lr"] == "[0.1, 0.05, 0.025, 0.0125]"   # the StepLR schedule goes on
    before = dict(line.split(" ", 1) for line in first.stdout.strip().split("\n"))
    assert lines["val_acc"].startswith(before["val_acc"][:-1])  # history kept


@needs_mpi
def test_cli_train_distributed_and_info(tmp_path):
    out = str(tmp_path / "w.npz")
    proc, _ = mpirun(2, "-m", "convcore", "train", "--distributed", "--epochs", "2",
                     "--no-progress", "--save", out)
    assert proc.returncode == 0, proc.stderr
    assert "2 ranks x 1 thread each (global batch 64)" in proc.stdout
    assert proc.stdout.count("test accuracy") == 1          # one report, from rank 0
    assert "rank 1: pid" in proc.stderr
    assert convcore.load(out)
    info, _ = mpirun(2, "-m", "convcore", "info")
    assert info.returncode == 0 and "world size 2" in info.stdout
    assert info.stdout.count("MPI ") == 1
