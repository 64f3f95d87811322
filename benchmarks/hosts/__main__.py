"""python -m benchmarks.hosts COMMAND: worker "hosts" in network namespaces, for a distributed platform.

    up [--hosts 3] [--labels HOST=L1,L2 ...]   start a run and hold it until Ctrl-C (then remove all of it)
    add-host NAME [--labels L1,L2]             add a host to the running harness: one command
    kill-host NAME                             kill a host's processes and delete its namespace
    deploy MODEL [--replicas N] [--label L] [--host H]
    manage ARGS...                             manage.py with the run's settings (register_model, ...)
    status                                     hosts, workers and replicas of the running harness
    down                                       stop the running harness (and remove all of it)
    cleanup [--run RUN_ID]                     remove what crashed runs left behind

Root only. Commands other than `up` and `cleanup` act on the only running harness, or on --run-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from . import network, processes
from .cleanup import cleanup, live_runs
from .harness import Harness

ECHO_OPTIONS = ("--engine", "echo", "--context-length", "4096", "--option", "token_delay_ms=20")


def _harness(args: argparse.Namespace) -> Harness:
    if args.run_dir:
        return Harness(Path(args.run_dir))
    runs = live_runs()
    if len(runs) != 1:
        found = ", ".join(str(r) for r in runs) or "none"
        raise SystemExit(f"{len(runs)} running harnesses ({found}): say which with --run-dir")
    return Harness(runs[0])


def _labels(text: str | None) -> list[str]:
    return [label.strip() for label in (text or "").split(",") if label.strip()]


def up(args: argparse.Namespace) -> int:
    host_labels = dict(item.split("=", 1) for item in args.labels)
    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    harness = Harness.create(Path(args.run_dir) if args.run_dir else None)
    try:
        harness.manage("register_model", "echo", *ECHO_OPTIONS, "--replicas", str(args.hosts))
        base_url = harness.start_web()
        for index in range(1, args.hosts + 1):
            name = f"h{index}"
            harness.add_host(name, labels=_labels(host_labels.get(name)))
            print(f"host {name} ready", flush=True)
        print(
            f"run {harness.run_id} in {harness.run_dir}\n"
            f"web:     {base_url}  (API key {harness.api_key})\n"
            f"add a host:  {sys.executable} -m benchmarks.hosts add-host NAME [--labels L1,L2]\n"
            "Ctrl-C stops it and removes everything it made.",
            flush=True,
        )
        while not stop:
            time.sleep(1)
            _reap()
    except KeyboardInterrupt:
        pass
    finally:
        print("removing the run...", flush=True)
        harness.destroy()
    return 0


def _reap() -> None:
    """Reap our children that exited (a killed host's worker), so they leave no zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def status(args: argparse.Namespace) -> int:
    harness = _harness(args)
    state = harness.state
    print(f"run {state['run_id']} in {harness.run_dir}; web {state['web_url']} (API key {state['api_key']})")
    for name, host in state["hosts"].items():
        print(f"  host {name}: {host['ip']}, labels {host['labels']}, pids {harness.host_pids(name)}")
    for worker in harness.workers():
        print(f"  worker on {worker['host']}: {worker['state']}, labels {worker['labels']}, models {worker['models']}")
    for replica in harness.replicas():
        print(f"  replica {replica['model']} on {replica['host']}: {replica['state']} (revision {replica['revision']})")
    return 0


def down(args: argparse.Namespace) -> int:
    harness = _harness(args)
    owner = harness.state.get("owner")
    if owner and processes.alive(owner):  # the process that made the run (`up`) removes it itself
        os.kill(int(owner["pid"]), signal.SIGTERM)
        deadline = time.monotonic() + 90
        while harness.state_path.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
    if harness.state_path.exists():
        harness.destroy()
    print(f"run {harness.run_dir.name} removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hosts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", help="the run's directory (default: the only running harness)")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("up", help="start a run and hold it until Ctrl-C")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--labels", action="append", default=[], metavar="HOST=L1,L2", help="labels of host hN")
    p = commands.add_parser("add-host", help="add a host to the running harness")
    p.add_argument("name")
    p.add_argument("--labels", help="comma-separated placement labels")
    p.add_argument("--models", help="pin the worker to these models instead of the deployments")
    p.add_argument("--concurrency", type=int)
    p = commands.add_parser("kill-host", help="kill a host's processes and delete its namespace")
    p.add_argument("name")
    p = commands.add_parser("deploy", help="set a model's replicas and placement")
    p.add_argument("model")
    p.add_argument("--replicas", type=int)
    p.add_argument("--label")
    p.add_argument("--host")
    p = commands.add_parser("manage", help="manage.py with the run's settings")
    p.add_argument("args", nargs=argparse.REMAINDER)
    commands.add_parser("status", help="hosts, workers and replicas")
    commands.add_parser("down", help="stop the running harness")
    p = commands.add_parser("cleanup", help="remove what crashed runs left behind")
    p.add_argument("--run", help="only this run id")
    args = parser.parse_args(argv)

    try:
        network.require_root_and_tools()
    except network.HarnessUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.command == "up":
        return up(args)
    if args.command == "add-host":
        host = _harness(args).add_host(
            args.name, labels=_labels(args.labels), models=args.models, concurrency=args.concurrency
        )
        print(f"host {args.name} ready at {host['ip']}")
    elif args.command == "kill-host":
        _harness(args).kill_host(args.name)
        print(f"host {args.name} killed")
    elif args.command == "deploy":
        _harness(args).deploy(args.model, replicas=args.replicas, label=args.label, host=args.host)
    elif args.command == "manage":
        print(_harness(args).manage(*args.args), end="")
    elif args.command == "status":
        return status(args)
    elif args.command == "down":
        return down(args)
    elif args.command == "cleanup":
        removed = cleanup(args.run)
        print(json.dumps(removed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
