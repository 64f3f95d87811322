"""Run an inference server as a child process and keep it healthy.

`ServerSupervisor` owns one child: it starts it from a command template, waits until a
health URL answers, restarts it by a `RestartPolicy` when it dies, and stops its whole
process group. `child_server.SupervisedServerEngine` puts an `OpenAIProxy` in front of it.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .errors import EngineUnavailableError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
HEALTH_POLL_S = 0.2


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """At most `max_restarts` restarts in any `window_s`; waits double from `backoff_s`."""

    max_restarts: int = 3
    window_s: float = 300.0
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def delay(self, recent_restarts: int) -> float:
        """Pause before the next launch, given the restarts already made in the window."""
        return min(self.backoff_s * 2.0 ** max(recent_restarts - 1, 0), self.max_backoff_s)


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill {name} placeholders; other braces (JSON in extra args) are left alone."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def describe_exit(code: int) -> str:
    """`exited with status 3` or `was killed by SIGKILL`."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class ServerSupervisor:
    """Keeps one server subprocess running and healthy; thread-safe, blocking API."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        health_url: str,
        values: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        host: str = LOOPBACK,
        port: int = 0,
        policy: RestartPolicy = RestartPolicy(),
        startup_timeout_s: float = 120.0,
        shutdown_grace_s: float = 10.0,
        log_lines: int = 40,
    ):
        self.name = name
        self.host = host
        # The port is chosen once and kept across restarts, so the proxy's URL never changes.
        self.port = port or free_port(host)
        self.values = {"host": host, "port": self.port, **(values or {})}
        self.command = [render(arg, self.values) for arg in command]
        self.health_url = render(health_url, self.values)
        self.env = {**os.environ, **{k: str(v) for k, v in (env or {}).items()}}
        self.policy = policy
        self.startup_timeout_s = startup_timeout_s
        self.shutdown_grace_s = shutdown_grace_s
        self.status = "stopped"  # stopped | starting | ready | restarting | failed
        self.failure: str | None = None
        self.restarts = 0
        self.launches = 0
        self._recent: collections.deque[float] = collections.deque()
        self._log_lines = log_lines
        self._log: collections.deque[str] = collections.deque(maxlen=log_lines)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaped: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()
        self._reader: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The running child's pid (also its process group id)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def log_tail(self) -> str:
        """The last lines the current (or last) child printed."""
        return "\n".join(self._log)

    def start(self) -> None:
        """Blocking: launch the child and wait until healthy, restarting by policy; raise on failure."""
        self._stopping.clear()
        self.status, self.failure = "starting", None
        if not self._launch_until_healthy():
            self.stop()
            raise EngineUnavailableError(self.failure or f"{self.name} server did not start")
        self._watcher = threading.Thread(target=self._watch, name=f"supervise-{self.name}", daemon=True)
        self._watcher.start()
        _running.add(self)

    def stop(self) -> None:
        """SIGTERM the child's process group, SIGKILL it after the grace period, reap it."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            self._terminate(proc)
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()
        self._watcher = None
        if self.status != "failed":
            self.status = "stopped"
        _running.discard(self)

    def state(self) -> dict[str, Any]:
        """A JSON-able snapshot for status pages."""
        return {
            "status": self.status,
            "pid": self.pid,
            "port": self.port,
            "restarts": self.restarts,
            "failure": self.failure,
        }

    def _launch_until_healthy(self) -> bool:
        """Launch, wait for health, relaunch by policy; False once the policy gives up or on stop."""
        while not self._stopping.is_set():
            proc = self._spawn()
            if proc is None:
                return False
            problem = self._wait_healthy(proc)
            if problem is None:
                self.status = "ready"
                logger.info("%s server is ready on port %s (pid %s)", self.name, self.port, proc.pid)
                return True
            self._terminate(proc)
            if self._stopping.is_set() or not self._may_restart(problem):
                return False
        return False

    def _watch(self) -> None:
        """Watcher thread: notice the child's death and bring it back while the policy allows."""
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            self.status = "restarting"
            self._reap_group(proc)
            problem = f"{self.name} server {describe_exit(code)}"
            logger.warning("%s; last log lines:\n%s", problem, self.log_tail())
            if not self._may_restart(problem) or not self._launch_until_healthy():
                return

    def _may_restart(self, problem: str) -> bool:
        """Count a restart in the window and sleep the backoff; False means give up (status failed)."""
        now = time.monotonic()
        while self._recent and now - self._recent[0] > self.policy.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.policy.max_restarts:
            self.status = "failed"
            self.failure = (
                f"{problem}; gave up after {self.policy.max_restarts} restarts within "
                f"{self.policy.window_s:g}s. Last log lines:\n{self.log_tail()}"
            )
            logger.error("%s", self.failure)
            return False
        self._recent.append(now)
        self.restarts += 1
        self.status = "restarting"
        delay = self.policy.delay(len(self._recent))
        logger.warning("%s; restarting in %.1fs", problem, delay)
        return not self._stopping.wait(delay)

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            self._log = collections.deque(maxlen=self._log_lines)
            logger.info("starting %s server: %s", self.name, " ".join(self.command))
            try:
                # A session of its own makes the child a process-group leader, so stopping it
                # also stops what it forks (vLLM's engine core and GPU workers).
                proc = subprocess.Popen(
                    self.command,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                self.status = "failed"
                self.failure = f"{self.name} server could not be started ({self.command[0]}): {exc}"
                return None
            self._proc = proc
            self.launches += 1
            self._reader = threading.Thread(
                target=self._read_log, args=(proc, self._log), name=f"log-{self.name}", daemon=True
            )
            self._reader.start()
            return proc

    def _read_log(self, proc: subprocess.Popen[bytes], lines: collections.deque[str]) -> None:
        # Drained all the time: a child whose pipe fills up blocks on its next write.
        stdout = proc.stdout
        if stdout is None:  # never: the child is started with stdout=PIPE
            return
        for raw in stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            lines.append(line)
            logger.debug("[%s] %s", self.name, line)
        stdout.close()

    def _wait_healthy(self, proc: subprocess.Popen[bytes]) -> str | None:
        """None once the health URL answers 200; otherwise why the child will never be ready."""
        deadline = time.monotonic() + self.startup_timeout_s
        # trust_env=False: an HTTP proxy from the environment must not see loopback traffic.
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if self._stopping.is_set():
                    return f"{self.name} server was stopped while starting"
                code = proc.poll()
                if code is not None:
                    # No command line here: it may hold a key, and this message reaches clients.
                    return f"{self.name} server {describe_exit(code)} before {self.health_url} answered"
                try:
                    if client.get(self.health_url).status_code == 200:
                        return None
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    return f"{self.name} server did not answer {self.health_url} within {self.startup_timeout_s:g}s"
                time.sleep(HEALTH_POLL_S)

    def _finish_log(self) -> None:
        reader = self._reader
        if reader is not None:
            reader.join(timeout=2)  # the last lines are the ones that explain an exit

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc in self._reaped:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.shutdown_grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s server ignored SIGTERM for %ss; killing it", self.name, self.shutdown_grace_s)
        self._reap_group(proc)

    def _reap_group(self, proc: subprocess.Popen[bytes]) -> None:
        # The leader may be gone while its children live on holding the GPU and the port.
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        # Never signal this group again: once empty, its id may go to an unrelated process.
        self._reaped.add(proc)
        self._finish_log()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# Children live in sessions of their own, so nothing stops them when this interpreter
# exits; without this a forgotten unload would leave a server holding a GPU.
_running: weakref.WeakSet[ServerSupervisor] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for supervisor in list(_running):
        supervisor.stop()
