"""Where a featurize run's time went: each stage's busy wall time and its threads' CPU (_Stage), the
run's breakdown (Profile), the pools decoding reads through under a stage's clock, and the Linux /proc
accounting of threads' CPU and storage reads."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Every core this process may use, shared among the ranks torchrun started on this node."""
    return max(1, _cores() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


class _Stage:
    """One stage's time: the intervals its tasks ran (from any thread) and their threads' CPU seconds."""

    def __init__(self, name: str):
        self.name, self.spans, self.cpu_s, self._lock = name, [], 0.0, threading.Lock()
        self.native_cpu_s = 0.0  # CPU of threads outside Python working for the stage (DALI's)

    def run(self, fn, *args):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.spans.append((t, time.perf_counter()))
                self.cpu_s += time.thread_time() - c

    def map(self, pool, fn, *iterables) -> list:
        return list(pool.map(lambda *a: self.run(fn, *a), *iterables))

    def busy_s(self) -> float:
        """Wall seconds during which at least one task of the stage ran (overlapping tasks counted once)."""
        busy, end = 0.0, float("-inf")
        for a, b in sorted(self.spans):
            if b > end:
                busy += b - max(a, end)
                end = b
        return busy


@dataclass
class Profile:
    """Where a featurize run's time went. A stage's `busy_s` is the wall time during which at least one
    of its tasks ran; stages overlap, so busy times add up to more than the run. The stage busy for
    (nearly) the whole pipeline bounds it, unless every core is busy, and then the cores do."""

    clips: int
    workers: int
    setup_s: float  # before the stages start: DALI and zarr loaded on first use, the tree's index, the row order
    open_s: float  # the tree's fingerprint, the store's plan and creation, while the first blocks are computed
    pipeline_s: float  # the stages' start to the last block's done flag (open_s included)
    finish_s: float  # completion: the store's listing, its attributes
    stages: dict[str, dict]  # name -> {"busy_s", "cpu_s"}; decode also "read_s"
    other_cpu_s: float  # CPU in the pipeline outside the stages' tasks: opening the store, zarr's I/O threads

    @property
    def bound(self) -> str:
        cpu = sum(st["cpu_s"] for st in self.stages.values()) + self.other_cpu_s
        cores = min(self.workers, _cores())
        top = max(self.stages, key=lambda k: self.stages[k]["cpu_s"])
        if cpu >= 0.85 * cores * self.pipeline_s:
            return f"the cores ({cpu / self.pipeline_s:.1f} of {cores} busy; {top} takes the most CPU)"
        busy = {name: st["busy_s"] for name, st in self.stages.items()} | {"opening the store": self.open_s}
        name = max(busy, key=busy.get)
        return f"{name} (busy {busy[name] / self.pipeline_s:.0%} of the pipeline)"

    def lines(self) -> list[str]:
        """The breakdown as a small table, then two lines: the run's parts and the bound."""
        out = [f"{'stage':9s} {'busy s':>7s} {'of pipeline':>12s} {'clips/s':>9s} {'cpu s':>7s}"]
        for name, st in self.stages.items():
            busy, rate = st["busy_s"], self.clips / st["busy_s"] if st["busy_s"] > 0 else float("nan")
            note = f"  (reading the files: {st['read_s']:.2f} s)" if "read_s" in st else ""
            out.append(f"{name:9s} {busy:7.2f} {busy / self.pipeline_s:12.0%} {rate:9,.0f} {st['cpu_s']:7.2f}{note}")
        total = self.setup_s + self.pipeline_s + self.finish_s
        out.append(
            f"{self.clips:,} clips in {total:.2f} s: {self.setup_s:.2f} s before the stages (libraries loaded, index, "
            f"row order), "
            f"{self.pipeline_s:.2f} s pipeline ({self.clips / self.pipeline_s:,.0f} clips/s on {self.workers} workers; "
            f"the store opened in its first {self.open_s:.2f} s), {self.finish_s:.2f} s completing the store"
        )
        out.append(
            f"CPU outside the stages' tasks {self.other_cpu_s:.2f} s (opening the store, zarr's file-writing threads); "
            f"bound by {self.bound}"
        )
        return out


def _storage_read_bytes() -> int | None:
    """Bytes the calling thread has had fetched from storage, not the page cache (read_bytes of Linux's
    /proc/thread-self/io: not another thread's reads, nor the library pages its first calls fault in;
    None where the kernel does not say)."""
    try:
        with open("/proc/thread-self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _native_threads() -> set[int]:
    """This process's thread ids (Linux; elsewhere none)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _threads_cpu_s(tids: set[int]) -> float:
    """CPU seconds the threads `tids` have used (from /proc, in clock ticks: ~10 ms resolution each)."""
    ticks = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended
    return ticks / os.sysconf("SC_CLK_TCK")


class _Serial:
    """A pool of no threads: map runs the tasks one after another on the calling thread."""

    def map(self, fn, *iterables):
        return map(fn, *iterables)


class _TimedPool:
    """A pool whose map runs each task under a stage's clock (audio/decode.py takes any pool with map)."""

    def __init__(self, pool, stage: _Stage):
        self.pool, self.stage = pool, stage

    def map(self, fn, *iterables):
        return self.stage.map(self.pool, fn, *iterables)
