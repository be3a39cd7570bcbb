"""Timing in turns, so that what is compared is measured at the same time.

A shared machine's speed drifts by tens of percent over seconds. Two things
timed a minute apart differ by that drift as much as by themselves; timed in
turns of a fraction of a second, they see the same machine.

- `Sampler` times the callables of one workload in one process (convcore's
  call and PyTorch's): in each turn every callable runs a block of
  back-to-back calls, the callables in a fresh random order each turn.
- `run_in_turns` lets several processes (the import orders, and replicates
  of each) take turns in the same way. A coordinator starts them and lets
  one at a time run a turn of its sampler, while the others wait for their
  next word on a pipe, asleep.

The first call of a block comes after another library's calls, or another
process's, which evicted the caches and woke other threads. A user's loop
of calls does not see that, so when calls are short (under `WARM_BELOW`)
a block starts with one call timed apart from the samples, as "cold".
"""
import math
import subprocess
import time

import numpy as np

# Turns per process and workload that the time budget is spread over.
TURNS = 20
# Calls shorter than this start each block with a call timed apart (cold).
WARM_BELOW = 0.02

_clock = time.perf_counter


class Sampler:
    """Samples of `fns` ({name: callable}) taken in turns.

    `inner` ({name: calls}) calls make one sample (their mean time): calls
    far shorter than the clock's noise are timed in groups. A block lasts
    `block_seconds` (at least one sample, at most `block_cap`); `cold`
    ({name: bool}) says whose blocks start with a call timed apart.
    """

    def __init__(self, fns, inner, cold, block_seconds, block_cap, seed=0):
        self.fns, self.inner, self._cold = dict(fns), dict(inner), dict(cold)
        self.block_seconds, self.block_cap = block_seconds, max(1, int(block_cap))
        self.samples = {k: [] for k in self.fns}
        self.cold = {k: [] for k in self.fns}
        self._names = list(self.fns)
        self._shuffle = np.random.default_rng(seed)

    @classmethod
    def for_budget(cls, fns, inner, cold, budget, max_samples, seed=0):
        """A sampler whose blocks spread `budget` seconds and `max_samples`
        samples per callable over about TURNS turns."""
        return cls(fns, inner, cold, budget / (TURNS * max(1, len(fns))),
                   math.ceil(max_samples / TURNS), seed)

    def turn(self):
        """One block of calls of every callable, in a fresh random order."""
        for j in self._shuffle.permutation(len(self._names)):
            k = self._names[j]
            fn, n = self.fns[k], self.inner[k]
            if self._cold[k]:
                t0 = _clock()
                fn()
                self.cold[k].append(_clock() - t0)
            start, taken = _clock(), 0
            while True:
                t0 = _clock()
                for _ in range(n):
                    fn()
                t1 = _clock()
                self.samples[k].append((t1 - t0) / n)
                taken += 1
                if taken >= self.block_cap or t1 - start >= self.block_seconds:
                    break

    def count(self):
        """Samples of the callable that has fewest."""
        return min(len(s) for s in self.samples.values())

    def run(self, repeats, budget, max_samples):
        """Turns in this process alone: until every callable has `repeats`
        samples, then more while `budget` seconds last (at most
        `max_samples` each)."""
        start = _clock()
        while self.count() < repeats or (_clock() - start < budget
                                         and self.count() < max_samples):
            self.turn()


# ------------------------------------------------------------- processes

class Worker:
    """A process's end of `run_in_turns`: commands come on `commands` (the
    process's stdin), replies go to `replies`, one line each."""

    def __init__(self, commands, replies):
        self._commands, self._replies = commands, replies

    def _expect(self, word):
        line = self._commands.readline().strip()
        if line != word:
            raise RuntimeError(f"turns: expected {word!r} from the coordinator, got {line!r}")

    def _say(self, line):
        self._replies.write(line + "\n")
        self._replies.flush()

    def before_setup(self):
        """Wait until it is this process's turn to set up the next workload
        (setups run one at a time: a first call timed while another
        process sets up would be slow)."""
        self._expect("setup")

    def sample(self, sampler, repeats, budget, max_samples):
        """Say the workload is set up, then run a turn of `sampler` at each
        "turn" until "finish". (The coordinator decides how many.)"""
        self._say("ready")
        while True:
            line = self._commands.readline().strip()
            if line == "turn":
                sampler.turn()
                self._say(f"done {sampler.count()}")
            elif line == "finish":
                return
            else:
                raise RuntimeError(f"turns: unexpected command {line!r}")


class InProcess:
    """The driver of a process measured alone: no coordinator."""

    def before_setup(self):
        pass

    def sample(self, sampler, repeats, budget, max_samples):
        sampler.run(repeats, budget, max_samples)


class _Child:
    def __init__(self, name, argv, env, cwd):
        self.name = name
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def tell(self, word):
        try:
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.fail(f"{word!r} could not be sent")

    def hear(self, word):
        line = self.proc.stdout.readline()
        parts = line.split()
        if not parts or parts[0] != word:
            self.fail(f"expected {word!r}, got {line.strip()!r}")
        return parts[1:]

    def fail(self, what):
        try:  # a child that closed its pipes is exiting: give it a moment
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        raise RuntimeError(f"turns: the {self.name} process: {what}"
                           + ("" if code is None else f" (it exited with status {code})"))


def run_in_turns(children, workloads, repeats, budget, max_samples, env=None, cwd=None,
                 on_workload=None):
    """Start `children` ([(name, argv)]) and take them through `workloads`
    workloads: each sets up in turn, then they run turns round-robin (the
    direction reversed every cycle) until each has `repeats` samples and
    `budget` seconds per child have passed, or each has `max_samples`.
    A child runs `Worker` on its stdin and on its stdout of when it started
    (it should send everything else it prints to stderr). `on_workload(i)`
    is called as workload i ends. Returns when every child has exited
    with status 0; raises RuntimeError naming the one that did not."""
    procs = [_Child(name, argv, env, cwd) for name, argv in children]
    try:
        for i in range(workloads):
            for p in procs:
                p.tell("setup")
                p.hear("ready")
            counts = [0] * len(procs)
            start, cycle = _clock(), 0
            while True:
                order = range(len(procs)) if cycle % 2 == 0 else reversed(range(len(procs)))
                for j in order:
                    procs[j].tell("turn")
                    counts[j] = int(procs[j].hear("done")[0])
                cycle += 1
                if min(counts) >= repeats and (
                        _clock() - start >= budget * len(procs) or min(counts) >= max_samples):
                    break
            for p in procs:
                p.tell("finish")
            if on_workload is not None:
                on_workload(i)
        for p in procs:
            p.proc.stdin.close()
        for p in procs:
            if p.proc.wait() != 0:
                p.fail("did not finish")
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
            for stream in (p.proc.stdin, p.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
