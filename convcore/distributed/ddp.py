"""DistributedDataParallel: the same model on every rank, gradients averaged.

    ddp = DistributedDataParallel(model)      # broadcasts rank 0's weights
    out = ddp(x)                              # this rank's share of the batch
    ddp.backward(loss.backward())             # grads: the mean over ranks
    optimizer.step()                          # identical on every rank

Gradients are averaged in buckets of about `bucket_bytes`, in the reverse
order of model.parameters() (roughly the order backward produces them, as
PyTorch's DDP orders its buckets). Each parameter announces its gradient
through Parameter.register_post_accumulate_grad_hook; when every parameter
of a bucket has its gradient, the bucket is copied into one flat array and
a non-blocking MPI_Iallreduce starts on it while the backward pass goes on.
Buckets start strictly in index order, so every rank issues the same
collectives in the same order whatever its timing. MPI libraries make
progress on a non-blocking collective only inside MPI calls (unless they run
a progress thread, which would take a core), so each hook polls the
buckets in flight. backward() returns after waiting for all of them and
writing sum / world_size into each .grad.

The first backward after construction learns how many gradient
contributions each parameter receives (a parameter shared by two layers
gets two) and reduces everything after the backward pass; later ones
overlap. A parameter that received nothing on a rank contributes zeros.

Buffers (batch norm running statistics) are broadcast from rank 0 before
each training forward, as DDP's broadcast_buffers=True, so evaluation and
checkpoints agree on every rank.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import numpy as np

from convcore._runtime import mpi as _mpi
from convcore.nn.module import Module

DEFAULT_BUCKET_BYTES = 25 * 2**20   # as PyTorch DDP's bucket_cap_mb=25
FIRST_BUCKET_BYTES = 2**20          # a small first bucket starts the overlap early


class _Bucket:
    __slots__ = ("params", "flat", "offsets", "pending", "handle", "expected")

    def __init__(self, params, dtype):
        self.params = params
        sizes = [p.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.flat = np.empty(int(self.offsets[-1]), dtype=dtype)
        self.pending = 0
        self.handle = None
        self.expected = 0

    def pack(self):
        for p, a, b in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            if p.grad is None:
                self.flat[a:b] = 0
            else:
                self.flat[a:b] = p.grad.reshape(-1)

    def unpack(self, scale):
        self.flat *= scale
        for p, a, b in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            view = self.flat[a:b].reshape(p.shape)
            if p.grad is None or p.grad.shape != p.shape:
                p.grad = view.copy()
            else:
                np.copyto(p.grad, view)


def _model_signature(model):
    return [(name, tuple(p.shape), str(p.dtype)) for name, p in model.named_parameters()]


class DistributedDataParallel(Module):
    """Data-parallel training of `model` over the ranks of the job.

    model : a convcore Module, built the same way on every rank (its
        parameter names, shapes and dtypes are compared across ranks; a
        mismatch raises ValueError on every rank, naming both)
    bucket_bytes : gradient bytes per all-reduce bucket (default 25 MiB,
        PyTorch's; the first bucket is at most 1 MiB so that communication
        starts early in the backward pass)
    broadcast_buffers : broadcast rank 0's buffers before each training
        forward (default True, as PyTorch)

    parameters(), state_dict(), load_state_dict(), train(), eval() are the
    wrapped model's, with its key names (no "module." prefix); the model
    is `ddp.module`. Started by mpiexec it joins the job itself
    (convcore.distributed.init); with world size 1 it only wraps.
    """

    def __init__(self, model: Module, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 broadcast_buffers: bool = True) -> None:
        fn = "DistributedDataParallel"
        if not isinstance(model, Module):
            raise TypeError(f"{fn}: model must be a convcore Module, got {type(model).__name__}")
        if isinstance(model, DistributedDataParallel):
            raise TypeError(f"{fn}: the model is already wrapped")
        if not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 1:
            raise ValueError(f"{fn}: bucket_bytes must be a positive int, got {bucket_bytes!r}")
        if not _mpi.is_initialized() and _mpi.launched_size() > 1:
            _mpi.init()   # started by mpiexec: join the job
        d = self.__dict__
        d["module"] = model   # first: Module.__init__ sets .training, a property here
        super().__init__()
        d["bucket_bytes"] = int(bucket_bytes)
        d["broadcast_buffers"] = bool(broadcast_buffers)
        d["_sync"] = True
        d["_learned"] = False
        d["_counts"] = {}
        d["_hooks"] = []
        d["_late"] = False
        d["comm_wait_seconds"] = 0.0   # time backward() spent waiting, summed
        self._check_same_model(fn)
        self._broadcast_state()
        d["_buckets"] = self._make_buckets() if _mpi.active() else []
        d["_bucket_of"] = {id(p): b for b in self._buckets for p in b.params}
        for b in self._buckets:
            for p in b.params:
                self._hooks.append(p.register_post_accumulate_grad_hook(self._on_grad))

    # -- setup ------------------------------------------------------------------
    def _check_same_model(self, fn):
        mine = _model_signature(self.module)
        everyone = _mpi.all_gather_object(mine)
        for r, theirs in enumerate(everyone):
            if theirs != mine:
                raise ValueError(
                    f"{fn}: rank {r} has a different model from rank {_mpi.rank()}: "
                    f"{_describe_difference(theirs, mine, r, _mpi.rank())}. Build the same "
                    "model on every rank")

    def _broadcast_state(self):
        for p in self.module.parameters():
            _mpi.broadcast(p.data)
            p.bump()
        self._broadcast_buffers()

    def _broadcast_buffers(self):
        if not _mpi.active():
            return
        for m in self.module.modules():
            changed = False
            for b in m._buffers.values():
                if b is not None and b.flags.c_contiguous and b.flags.writeable:
                    _mpi.broadcast(b)
                    changed = True
            if changed:
                m.bump_buffers()

    def _make_buckets(self):
        buckets, current, size, dtype = [], [], 0, None
        cap = min(FIRST_BUCKET_BYTES, self.bucket_bytes)
        for p in reversed(self.module.parameters()):
            if not p.requires_grad:
                continue
            if current and (p.dtype != dtype or size + p.data.nbytes > cap):
                buckets.append(_Bucket(current, dtype))
                current, size, cap = [], 0, self.bucket_bytes
            current.append(p)
            size += p.data.nbytes
            dtype = p.dtype
        if current:
            buckets.append(_Bucket(current, dtype))
        return buckets

    def close(self) -> None:
        """Stop watching the model's gradients (the model stays as it is);
        fit() calls it on the wrapper it made."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.__dict__["_buckets"] = []
        self.__dict__["_bucket_of"] = {}

    # -- the wrapped model's face -----------------------------------------------
    @property
    def training(self):
        return self.module.training

    @training.setter
    def training(self, value):
        self.module.train(value)

    def named_children(self):
        return self.module.named_children()

    def named_modules(self, prefix="", _seen=None):
        return self.module.named_modules(prefix, _seen)

    def extra_repr(self):
        return f"world_size={_mpi.world_size()}, buckets={len(self._buckets)}"

    def __repr__(self):
        return f"DistributedDataParallel({self.extra_repr()},\n  module=" + \
            repr(self.module).replace("\n", "\n  ") + "\n)"

    # -- running ----------------------------------------------------------------
    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate local gradients without
        communicating (gradient accumulation); the first backward after
        the block averages everything accumulated."""
        previous = self._sync
        self.__dict__["_sync"] = False
        try:
            yield
        finally:
            self.__dict__["_sync"] = previous

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.broadcast_buffers and self.module.training:
            self._broadcast_buffers()
        return self.module(x)

    def __call__(self, x):
        return self.forward(x)

    def _on_grad(self, p):
        if not self._sync:
            return
        counts = self._counts
        counts[id(p)] = counts.get(id(p), 0) + 1
        if not self._learned:
            return
        bucket = self._bucket_of[id(p)]
        if bucket.handle is not None:
            # More contributions than learned: its bucket left without it.
            # _finish() notices (on every rank) and reduces again.
            self.__dict__["_late"] = True
            return
        bucket.pending -= 1
        self._start_ready()

    def _start_ready(self, force=False):
        """Start every bucket whose turn has come (all earlier ones started)
        and whose gradients are all in; with force, every bucket left."""
        for bucket in self._buckets:
            if bucket.handle is not None:
                bucket.handle.test()  # progress for the collectives in flight
                continue
            if bucket.pending > 0 and not force:
                return
            bucket.pack()
            bucket.handle = _mpi.iall_reduce_sum(bucket.flat)

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        """The model's backward; when it returns (outside no_sync()), every
        parameter's .grad is the mean over ranks. Returns the input gradient."""
        if not _mpi.active():
            return self.module.backward(grad_y)
        sync = self._sync
        if sync:
            self.__dict__["_late"] = False
            self._counts.clear()
            for b in self._buckets:
                b.pending = b.expected
                b.handle = None
        grad_x = self.module.backward(grad_y)
        if sync:
            self._finish()
        return grad_x

    def _reduce_rest(self):
        """Start every bucket not started yet, in order, and wait for all."""
        self._start_ready(force=True)
        for b in self._buckets:
            b.handle.wait()

    def _finish(self):
        t0 = time.perf_counter()
        self._reduce_rest()
        # Did a gradient arrive after its bucket had left, on any rank? Then
        # every rank reduces everything again, and learns the new pattern.
        if self._learned:
            late = np.array([self._late], dtype=np.int32)
            if _mpi.all_reduce(late, "max")[0]:
                self.__dict__["_learned"] = False
                for b in self._buckets:
                    b.handle = None
                self._reduce_rest()
        if not self._learned:
            for b in self._buckets:
                b.expected = sum(self._counts.get(id(p), 0) for p in b.params)
            self.__dict__["_learned"] = True
        scale = 1.0 / _mpi.world_size()
        for b in self._buckets:
            b.unpack(scale)
            b.handle = None
        self.__dict__["comm_wait_seconds"] += time.perf_counter() - t0


def _describe_difference(theirs, mine, r, me):
    if len(theirs) != len(mine):
        return (f"{len(theirs)} parameters ({sum(np.prod(s) for _, s, _ in theirs):,} "
                f"values) on rank {r} against {len(mine)} "
                f"({sum(np.prod(s) for _, s, _ in mine):,} values) on rank {me}")
    for (n1, s1, d1), (n2, s2, d2) in zip(theirs, mine):
        if (n1, s1, d1) != (n2, s2, d2):
            return (f"'{n1}' {s1} {d1} on rank {r} against '{n2}' {s2} {d2} on rank {me}")
    return "the parameter lists differ"
