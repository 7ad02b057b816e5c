"""CPU threads that share the machine: a run takes the cores other processes leave free when it starts.

PyTorch starts one OpenMP thread per core, and those threads spin while they wait for work. Beside another
busy process they fight it for the cores: a medium model's step went from 24 ms alone to 315 ms beside one
busy loop on a 2-core machine (benchmarks/load.py). Sleeping waiters (`OMP_WAIT_POLICY=PASSIVE`) soften the
fight but cost a quiet machine 30% and more, and one thread always costs it the second core. So the
`deepatlas` command keeps the default policy and sizes the team: before torch loads, `choose_threads`
measures for 0.1 s what other processes use and sets `OMP_NUM_THREADS` to the cores they leave. A quiet
machine keeps every core. The count is recorded in config.json and a resumed run uses it again, because a
different count sums in a different order (a seeded run is reproduced with the same count). Where the user
set OMP_NUM_THREADS, nothing is changed. Linux only (/proc/stat); elsewhere, PyTorch's default.
"""
from __future__ import annotations

import os
import sys
import time

USER_SET = "OMP_NUM_THREADS" in os.environ
"""the user chose the thread count (read when deepatlas is imported, before it sets anything)"""


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform module knows."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _busy_seconds() -> float | None:
    """CPU-seconds the machine's cores have spent busy since boot (None where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle and iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def others_busy(interval: float = 0.1) -> float | None:
    """How many cores processes other than this one keep busy, measured over `interval` seconds."""
    start, busy, own = time.monotonic(), _busy_seconds(), time.process_time()
    time.sleep(interval)
    end, busy_after, own_after = time.monotonic(), _busy_seconds(), time.process_time()
    if busy is None or busy_after is None:
        return None
    return max(0.0, (busy_after - busy) - (own_after - own)) / (end - start)


def fair_threads(busy: float) -> int:
    """The cores left when other processes keep `busy` cores busy (at least one)."""
    return max(1, min(cores(), round(cores() - busy)))


def choose_threads() -> int | None:
    """Before torch loads: set OMP_NUM_THREADS to the cores other processes leave free now (unless the user set
    it, or torch is loaded already). Returns the count set, or None when PyTorch's default stands."""
    if USER_SET or "torch" in sys.modules:
        return None
    busy = others_busy()
    if busy is None or fair_threads(busy) >= cores():
        return None
    os.environ["OMP_NUM_THREADS"] = str(fair_threads(busy))
    return fair_threads(busy)


def use_threads(count: int | None) -> None:
    """A resumed run: the thread count it started with (so it sums as it did), unless the user set one."""
    if count and not USER_SET:
        import torch
        torch.set_num_threads(count)
