"""Sharing the CPU with other programs: as many PyTorch threads as there are free cores.

PyTorch starts as many threads as cores, and its OpenMP threads spin while they wait for each
other. Next to one other busy process on 2 cores that costs 3x per step (measured: 0.044 s quiet
with 2 threads, 0.138 s beside a one-core busy loop; 0.062 s with 1 thread, quiet or not), and
two PyTorch processes that both do it were seen 10-50x slower. So a training run on the CPU
measures what the other processes use (from /proc/stat, less its own share) before it starts and
every few seconds while it trains, and uses the cores left over: all of them on a quiet machine,
fewer when something else runs, all again once it stops. An OMP_NUM_THREADS set by the user (or
by torchrun, which sets 1 per process) is kept as it is: then nothing here changes the count.

Linux only (/proc); elsewhere the thread count is left to PyTorch.
"""

from __future__ import annotations

import os
import time

CHECK_EVERY_S = 5.0  # while training: how often the other processes' load is measured
BUSY_ABOVE = 0.5  # cores used by others before a thread is given up ...
QUIET_BELOW = 0.3  # ... and below which it is taken back (a gap, so a flickering load does not flip it)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, all) clock ticks of the whole machine since boot."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _own_ticks() -> float | None:
    """This process's user + system clock ticks (all its threads)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
        return float(after_name[11]) + float(after_name[12])
    except (OSError, ValueError, IndexError):
        return None


class CpuShare:
    """Measures the cores other processes use between two calls of `others()`."""

    def __init__(self):
        self.cores = os.cpu_count() or 1
        self.last = self._read()

    def _read(self):
        machine, own = _cpu_times(), _own_ticks()
        return None if machine is None or own is None else (machine[0], machine[1], own)

    def others(self) -> float | None:
        """Cores used by other processes since the last call (None when it cannot be read)."""
        now = self._read()
        before, self.last = self.last, now
        if now is None or before is None or now[1] <= before[1]:
            return None
        busy, total, own = (a - b for a, b in zip(now, before))
        return max(0.0, (busy - own) / total * self.cores)


def user_fixed_threads() -> bool:
    return bool(os.environ.get("OMP_NUM_THREADS"))


def threads_for(others: float, cores: int, current: int) -> int:
    """Threads to use with `others` cores busy elsewhere: the free cores, at least one."""
    if others >= BUSY_ABOVE:
        return max(1, min(current, cores - max(1, round(others))))
    if others < QUIET_BELOW:
        return cores
    return current


def settle(seconds: float = 0.5) -> tuple[int, float | None]:
    """Before training: measure the others over `seconds` and set the thread count; returns
    (threads, cores used by others)."""
    import torch

    if user_fixed_threads():
        return torch.get_num_threads(), None
    share = CpuShare()
    time.sleep(seconds)
    others = share.others()
    if others is not None:
        torch.set_num_threads(threads_for(others, share.cores, torch.get_num_threads()))
    return torch.get_num_threads(), others
