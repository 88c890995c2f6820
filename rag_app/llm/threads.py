"""How many threads a local model computes with: the cores this process may use, never more, and fewer while
other programs keep cores busy.

Measured on the 2-core machine (docs/benchmarks.md, "Threads"): llama.cpp's worker threads wait for each other
at every step, spinning, so a thread that shares its core with another program holds all of them back. With 2
threads, generation fell from ~120 to 6-37 tokens/s the moment something else ran, where 1 thread kept 47-132;
prompt processing with 2 threads is 1.8x faster on a quiet machine and 3x slower on a busy one. Hence:

* generation: one thread fewer than the cores (at least one) — a core stays free for everything else;
* prompt processing: every core, minus those other programs are using right now (the run queue in
  ``/proc/loadavg``, read just before each request: instantaneous, unlike the load averages).

"The cores" are those this process may run on (its CPU affinity) within its cgroup's CPU quota, so a container
limited to 2 CPUs on a 64-core host uses 2, not 64.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def cpu_budget() -> int:
    """The CPUs this process may use: its affinity, capped by the cgroup's CPU quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def _cgroup_quota() -> float | None:
    try:
        quota, period = _CGROUP_V2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = (int(p.read_text()) for p in _CGROUP_V1)
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def busy_elsewhere() -> int:
    """Runnable tasks besides the one asking, now (``/proc/loadavg``'s run queue; 0 where it cannot be read)."""
    try:
        running = Path("/proc/loadavg").read_text().split()[3].split("/")[0]
        return max(0, int(running) - 1)
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(frozen=True)
class Threads:
    generate: int
    prompt: int


def plan_threads(budget: int | None = None, busy: int | None = None, fixed: int | None = None) -> Threads:
    """Threads for generation and for prompt processing (see the module's docstring). ``fixed``: the user's
    ``llm.n_threads``, used for both, as llama.cpp's own option does."""
    if fixed:
        return Threads(fixed, fixed)
    budget = cpu_budget() if budget is None else budget
    busy = busy_elsewhere() if busy is None else busy
    return Threads(generate=max(1, budget - 1), prompt=max(1, budget - min(busy, budget)))
