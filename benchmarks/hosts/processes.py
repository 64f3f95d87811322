"""The processes a run starts, recorded so that any process can find them again, even after a crash.

Each one is recorded as (pid, start time): a pid whose process started at another time has been
recycled and is never signalled. Each also gets NETNS_HARNESS_RUN=<run id> in its environment, so a
scan finds the run's processes with no state file (`cleanup` after a crash).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

MARK = "NETNS_HARNESS_RUN"
STOP_TIMEOUT_S = 20.0


def start(command: list[str], *, env: dict[str, str], log: Path, cwd: Path) -> dict[str, float]:
    """Start `command` in its own session (so its group can be signalled), output to `log`; its record."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return {"pid": process.pid, "started": psutil.Process(process.pid).create_time()}


def marked_run(pid: int) -> str | None:
    """The run id a live process was started for, or None (not ours, gone, or a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.environ().get(MARK)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def marked_processes(run_id: str | None = None) -> list[int]:
    """Live processes of one run (of every run when `run_id` is None)."""
    found = []
    for pid in psutil.pids():
        run = marked_run(pid)
        if run is not None and (run_id is None or run == run_id):
            found.append(pid)
    return found


def alive(record: dict[str, float] | None) -> bool:
    """Whether the recorded process still runs (and is not a zombie)."""
    if not record:
        return False
    try:
        process = psutil.Process(int(record["pid"]))
        return process.create_time() == record["started"] and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_all(records: list[dict[str, float] | None], *, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the process group each recorded process leads, all at once; SIGKILL to those that
    outlive `timeout`."""
    running = [record for record in records if record and alive(record)]
    for record in running:
        _signal_group(int(record["pid"]), signal.SIGTERM)
    if not wait_gone([int(record["pid"]) for record in running], timeout):
        for record in running:
            if alive(record):
                _signal_group(int(record["pid"]), signal.SIGKILL)
        wait_gone([int(record["pid"]) for record in running], timeout)


def kill_all(pids: list[int]) -> None:
    """SIGKILL every pid in the list and wait until they are gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(pids, STOP_TIMEOUT_S)


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait until none of `pids` runs; whether that happened within `timeout`. A zombie counts as gone:
    its parent may be another process (the harness that started it), which reaps it in its own time."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:  # our own children: reap them here
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        if not any(_running(pid) for pid in pids):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends (clean-up must finish), when on the main thread."""
    try:
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals cannot be changed here
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
