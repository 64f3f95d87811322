"""Stress: kill a host under streams, again and again; every stream must end, whole or with an error.

The many-hosts harness (benchmarks/hosts) runs three worker hosts in network namespaces and
`ha-echo` (echo engine, 20 ms a token, replicas=2). Each round starts long streams, kills one host
that holds the model (SIGKILL, namespace deleted) and adds a fresh host. A stream on the killed
host must get `worker_lost` within about WORKER_DEAD_AFTER_SECONDS; one that neither ends nor errs
within KILL_CLIENT_TIMEOUT_S is counted as hung. One in about ten rounds hung before ReplyReader
repeated its cancellation (a swallowed cancel in channels_redis/redis-py's blocking pop).

    sudo .venv/bin/python benchmarks/host_kills.py [--rounds 20] [--streams 6]

Root only. Exits 1 when a stream hung. The CI's smoke version is the kill in tests/distributed/test_many_hosts.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.hosts.harness import Harness  # noqa: E402
from benchmarks.hosts.network import HarnessUnavailable, require_root_and_tools  # noqa: E402
from benchmarks.many_hosts import (  # noqa: E402
    HOST_CONCURRENCY,
    KILL_CLIENT_TIMEOUT_S,
    READY_TIMEOUT_S,
    kill_during_streams,
    live_ready_hosts,
    wait_for,
)

MODEL = "ha-echo"
# Fast liveness, as tests/distributed/test_many_hosts.py sets it.
SETTINGS = {"WORKER_HEARTBEAT_SECONDS": "1", "WORKER_DEAD_AFTER_SECONDS": "5", "RECONCILE_SECONDS": "2"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--streams", type=int, default=6, help="streams in flight at each kill")
    args = parser.parse_args()
    try:
        require_root_and_tools()
    except HarnessUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    hung = errors = whole = 0
    slowest_error = 0.0
    with (
        tempfile.TemporaryDirectory(prefix="host-kills-") as run_dir,
        Harness.create(Path(run_dir), settings=SETTINGS) as harness,
    ):
        harness.manage("register_model", MODEL, "--engine", "echo", "--context-length", "4096",
                       "--option", "token_delay_ms=20", "--replicas", "2")  # fmt: skip
        harness.start_web()
        for name in ("h1", "h2", "h3"):
            harness.add_host(name, concurrency=HOST_CONCURRENCY, wait=False)
        for number in range(args.rounds):
            wait_for(lambda: len(live_ready_hosts(harness, MODEL)) == 2, READY_TIMEOUT_S, f"{MODEL} on 2 hosts")
            victim = live_ready_hosts(harness, MODEL)[number % 2]
            run = asyncio.run(kill_during_streams(harness, MODEL, victim, None, args.streams))
            outcomes = [(ok, ended - run["killed_at"], error) for ok, ended, error in run["outcomes"]]
            for ok, after_kill, error in outcomes:
                if ok:
                    whole += 1
                elif "timed out" in error.lower():
                    hung += 1
                else:
                    errors += 1
                    slowest_error = max(slowest_error, after_kill)
            print(f"round {number + 1}: killed {victim}: " + ", ".join(
                "ok" if ok else f"{'HUNG' if 'timed out' in error.lower() else 'error'} after {after_kill:.1f} s"
                for ok, after_kill, error in outcomes
            ), flush=True)  # fmt: skip
            harness.add_host(f"h{number + 4}", concurrency=HOST_CONCURRENCY)
    print(
        f"{args.rounds} kills, {args.streams} streams each: {whole} whole, {errors} errors "
        f"(the slowest {slowest_error:.1f} s after its kill), {hung} hung past {KILL_CLIENT_TIMEOUT_S} s"
    )
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
