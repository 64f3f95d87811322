"""Servers a benchmark starts as child processes: wait until one answers, stop its whole group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

STOP_TIMEOUT_S = 15


def wait_until_healthy(
    process: subprocess.Popen, url: str, *, what: str, log_path: Path, timeout: float, poll_s: float = 0.2
) -> None:
    """Poll `url` until it answers 200; raise with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready:\n{_tail(log_path)}")
        time.sleep(poll_s)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group the process leads; SIGKILL if it outlives STOP_TIMEOUT_S."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]
