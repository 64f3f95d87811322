"""Server CPU per request of the embedded platform in front of the mock upstream, and optionally its profile.

On a shared machine req/s and latency move with whatever else runs; the CPU time the server
process spends per request does not (much). This starts the mock upstream and the embedded
platform as benchmarks/gateway_overhead.py does, drives keyed, recorded, non-streamed chat at
each level, and prints the server's user+system CPU per request (the web process and any
children it started), read from /proc before and after each level.

    .venv/bin/python benchmarks/gateway_cpu.py [--levels 1,16] [--requests 1000]
        [--profile out.txt [--gil]]

--profile: py-spy samples the server (raw, collapsed stacks) during the last level.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from benchmarks.gateway_sides import embedded_target, running_mock  # noqa: E402
from benchmarks.http_load import chat_request, run_level  # noqa: E402
from benchmarks.litellm_proxy import MODEL  # noqa: E402
from benchmarks.machine import cpu_seconds  # noqa: E402


def server_process(port: int) -> psutil.Process:
    """The process listening on `port` (the platform's web process)."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise RuntimeError(f"nothing of ours listens on port {port}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,16", help="concurrency levels (default 1,16)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per level (default 1000)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--profile", type=Path, default=None, help="py-spy raw output, sampled over the last level")
    parser.add_argument("--gil", action="store_true", help="with --profile: only samples that hold the GIL")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="gateway-cpu-") as tmp_root, running_mock(Path(tmp_root)) as mock:
        tmp = Path(tmp_root) / "embedded"
        tmp.mkdir()
        with embedded_target(mock, tmp) as target:
            url = urlsplit(target.base_url)
            server = server_process(url.port)
            request = chat_request(target.base_url, target.api_key, MODEL)
            asyncio.run(run_level(url.hostname, url.port, request, 4, args.warmup))
            print(f"{'conc':>4} {'ok/req':>10} {'req/s':>7} {'p50 ms':>7} {'server CPU ms/req':>18}  load")
            for i, level in enumerate(levels):
                spy = None
                if args.profile and i == len(levels) - 1:
                    spy = _start_py_spy(server.pid, args.profile, args.gil)
                before = cpu_seconds(server)
                result = asyncio.run(run_level(url.hostname, url.port, request, level, args.requests))
                used = cpu_seconds(server) - before
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
                s = result.summary()
                print(
                    f"{level:>4} {str(s['ok']) + '/' + str(s['requests']):>10} {s['requests_per_s']:>7} "
                    f"{s['latency_p50_ms']:>7} {used / max(s['ok'], 1) * 1000:>18.2f}  "
                    f"{os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                for message in s["error_messages"]:
                    print(f"     error: {message}")
    return 0


def _start_py_spy(pid: int, out: Path, gil: bool) -> subprocess.Popen:
    program = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    command = [
        program,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--output",
        str(out),
        "--rate",
        "250",
        "--nonblocking",
        *(["--gil"] if gil else []),
    ]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    return spy


if __name__ == "__main__":
    sys.exit(main())
