"""Sample the machine's CPU use once a second into a CSV until stopped (SIGTERM or Ctrl-C).

run_stress_test.sh runs it beside each locust run, so analyze_results.py can hold the run to the
"CPU < 80%" target. It measures the whole machine: the server under test, and locust too when it
runs on the same machine (on a small machine locust's share is large; the report says so).

    python tests/stress/sample_cpu.py OUT.csv [--interval 1.0]

Columns: elapsed_s, cpu_percent (all cores), then one cpu<N>_percent per core.
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


def sample(path: str, interval: float) -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    cores = psutil.cpu_count() or 1
    psutil.cpu_percent(percpu=True)  # the first call only sets the baseline
    start = time.monotonic()
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["elapsed_s", "cpu_percent", *(f"cpu{n}_percent" for n in range(cores))])
        out.flush()
        try:
            while True:
                time.sleep(interval)
                per_core = psutil.cpu_percent(percpu=True)
                writer.writerow([round(time.monotonic() - start, 2), round(sum(per_core) / len(per_core), 1),
                                 *per_core])
                out.flush()  # a killed sampler still leaves every row it took
                rows += 1
        except _Stop:
            pass
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    sample(args.out, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
