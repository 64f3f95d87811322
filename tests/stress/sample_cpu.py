"""Sample CPU use once a second into a CSV until stopped (SIGTERM or Ctrl-C).

run_stress_test.sh runs it beside each locust run, so analyze_results.py can hold the run to the
"CPU < 80%" target. It always measures the whole machine: the server under test, locust when it
runs on the same machine, and anything else running there. Given the server's process id (when
the server runs on this machine), it also measures that process and all its descendants, which
is the server's own share whatever else runs.

    python tests/stress/sample_cpu.py OUT.csv [--interval 1.0] [--pid SERVER_PID]

Columns: elapsed_s, cpu_percent (the machine, % of all cores), server_cpu_percent (% of all
cores; empty without --pid), then one cpu<N>_percent per core.
"""

from __future__ import annotations

import argparse
import csv
import signal
import sys
import time

import psutil


class _Stop(Exception):
    pass


def _stop(signum, frame):
    raise _Stop


class ProcessTreeCpu:
    """CPU seconds of a process and all its descendants, as a share of all cores between calls."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.cores = psutil.cpu_count() or 1
        self.last_total, self.last_time = self._cpu_s(), time.monotonic()

    def _cpu_s(self) -> float:
        total = 0.0
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.Error:  # a child that exited between listing and reading
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def percent(self) -> float | None:
        """Share of all cores since the last call; None once the server is gone."""
        try:
            total, now = self._cpu_s(), time.monotonic()
        except psutil.Error:
            return None
        # A child that exits takes its time with it: never report a negative span.
        share = max(0.0, total - self.last_total) / ((now - self.last_time) * self.cores) * 100
        self.last_total, self.last_time = total, now
        return round(min(share, 100.0), 1)


def sample(path: str, interval: float, pid: int | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    cores = psutil.cpu_count() or 1
    psutil.cpu_percent(percpu=True)  # the first call only sets the baseline
    server = ProcessTreeCpu(pid) if pid else None
    start = time.monotonic()
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["elapsed_s", "cpu_percent", "server_cpu_percent", *(f"cpu{n}_percent" for n in range(cores))])
        out.flush()
        try:
            while True:
                time.sleep(interval)
                per_core = psutil.cpu_percent(percpu=True)
                server_share = server.percent() if server else None
                writer.writerow(
                    [
                        round(time.monotonic() - start, 2),
                        round(sum(per_core) / len(per_core), 1),
                        "" if server_share is None else server_share,
                        *per_core,
                    ]
                )
                out.flush()  # a killed sampler still leaves every row it took
                rows += 1
        except _Stop:
            pass
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pid", type=int, default=None, help="the server's process id, to sample it and its children")
    args = parser.parse_args(argv)
    sample(args.out, args.interval, args.pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
