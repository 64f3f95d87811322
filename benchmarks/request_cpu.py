"""CPU time a running server spends per request, for cheap GETs.

Wall-clock latency on a shared 2-core machine moves with whatever else runs; the CPU time the
server process (and its threads) spends per request hardly does. This sends N sequential
keep-alive GETs and divides the server's CPU time by N.

    .venv/bin/python benchmarks/request_cpu.py --pid PID --url http://127.0.0.1:8000 \
        --path /health --path /v1/models [--key ipk-...] [-n 1000]
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from benchmarks.machine import cpu_seconds


def measure(process: psutil.Process, url: str, path: str, requests: int, key: str) -> dict[str, float]:
    """Server CPU ms and client wall ms per request for `requests` sequential GETs of `path`."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80)
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    def get() -> int:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    for _ in range(min(50, requests)):  # warm caches and the connection
        get()
    cpu_before, wall_before = cpu_seconds(process), time.perf_counter()
    statuses = {get() for _ in range(requests)}
    cpu_after, wall_after = cpu_seconds(process), time.perf_counter()
    return {
        "cpu_ms": 1000 * (cpu_after - cpu_before) / requests,
        "wall_ms": 1000 * (wall_after - wall_before) / requests,
        "statuses": sorted(statuses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, required=True, help="the server process")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--path", action="append", required=True)
    parser.add_argument("--key", default="", help="an API key for the /v1 paths")
    parser.add_argument("-n", "--requests", type=int, default=1000)
    args = parser.parse_args()
    process = psutil.Process(args.pid)
    for path in args.path:
        result = measure(process, args.url, path, args.requests, args.key)
        print(
            f"{path}: server CPU {result['cpu_ms']:.2f} ms/request, wall {result['wall_ms']:.2f} ms/request, "
            f"status {result['statuses']}"
        )


if __name__ == "__main__":
    main()
