"""What the rest of the machine did while a benchmark measured, read from Linux's /proc.

Timings are only as good as the machine is quiet. These helpers count the CPU time that
processes outside the benchmark used during a measured span, and the major page faults of one
process, so that a noisy number can be told from a slow platform. Where /proc is missing they
return None and the benchmarks leave those numbers out.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

NOISY_SHARE = 0.10  # other processes above this share of all cores make the timings noisy
MIN_SPAN_S = 1.0  # /proc counts CPU time in 10 ms ticks: over a shorter span a share means nothing


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat that the benchmarks use."""

    ppid: int
    pgrp: int
    comm: str
    cpu_s: float  # user + system time of the process's own threads
    children_cpu_s: float  # the same of its children that exited and were reaped
    major_faults: int  # page faults that read from disk


def proc_stat(pid: int) -> ProcStat | None:
    """/proc/PID/stat of a process, or None when it is gone or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name stands in parentheses and may hold spaces or ")": split at the last one.
    head, _, rest = text.rpartition(")")
    fields = rest.split()  # fields[0] is proc(5)'s field 3, so field N is fields[N - 3]
    try:
        tick = os.sysconf("SC_CLK_TCK")
        return ProcStat(
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            comm=head.partition("(")[2],
            cpu_s=(int(fields[11]) + int(fields[12])) / tick,
            children_cpu_s=(int(fields[13]) + int(fields[14])) / tick,
            major_faults=int(fields[9]),
        )
    except (IndexError, ValueError):
        return None


def major_faults(pid: int) -> int | None:
    """Major page faults of a process so far: each one is a read from disk.

    The model is mmap'd: weights the kernel dropped from the page cache come back from disk
    on the next request, as a TTFT spike that is neither side's doing. This makes it visible.
    """
    stat = proc_stat(pid)
    return stat.major_faults if stat else None


def process_table() -> dict[int, ProcStat]:
    """Every process on the machine that /proc shows, by pid."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    return {pid: stat for entry in entries if entry.isdigit() and (stat := proc_stat(pid := int(entry)))}


def descendants(root: int, table: dict[int, ProcStat]) -> set[int]:
    """root and every process below it in table."""
    tree = {root}
    grew = True
    while grew:  # parents can come after their children in pid order
        grew = False
        for pid, stat in table.items():
            if stat.ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def machine_busy_s() -> float | None:
    """CPU seconds all cores have been busy since boot (neither idle nor waiting for I/O)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user and nice]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_so_far() -> tuple[float, float, float] | None:
    """CPU seconds so far: the whole machine; this benchmark and all it started; PostgreSQL outside that."""
    machine = machine_busy_s()
    if machine is None:
        return None
    table = process_table()
    ours = descendants(os.getpid(), table)  # the platform, and in distributed mode redis, daphne, the worker
    # Reaped children stay counted in their parent (PostgreSQL's per-connection backends, for one).
    ours_s = sum(table[pid].cpu_s + table[pid].children_cpu_s for pid in ours if pid in table)
    postgres_s = sum(
        stat.cpu_s + stat.children_cpu_s for pid, stat in table.items() if stat.comm == "postgres" and pid not in ours
    )
    return machine, ours_s, postgres_s


@dataclass(frozen=True)
class CpuSpan:
    """CPU seconds used during a measured span, by whom."""

    wall_s: float
    ours_s: float  # this benchmark and every process it started
    postgres_s: float  # PostgreSQL, which this benchmark did not start
    other_s: float  # everything else that ran: the noise
    cores: int

    @property
    def other_share(self) -> float:
        """Other processes' CPU time as a share of all cores' time."""
        return self.other_s / (self.wall_s * self.cores)


class CpuAccount:
    """Counts CPU time from its creation until measure(): this benchmark's, PostgreSQL's, others'."""

    def __init__(self, postgres_is_ours: bool = False):
        self.postgres_is_ours = postgres_is_ours  # distributed mode's database is part of the platform
        self._start = _cpu_so_far()
        self._t0 = time.perf_counter()

    def measure(self) -> CpuSpan | None:
        """The span since creation, or None without /proc."""
        end, wall = _cpu_so_far(), time.perf_counter() - self._t0
        if self._start is None or end is None or wall <= 0:
            return None
        machine, ours, postgres = (e - s for e, s in zip(end, self._start))
        other = max(0.0, machine - ours - (postgres if self.postgres_is_ours else 0.0))
        return CpuSpan(wall, ours, postgres, other, os.cpu_count() or 1)


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of the process and its living children so far."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def noisy(other_share: float, wall_s: float) -> bool:
    """Whether other processes used enough of the machine, over a long enough span, to warn about it."""
    return wall_s >= MIN_SPAN_S and other_share > NOISY_SHARE


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the architecture where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.machine()
