"""Start the platform as a subprocess exactly as the README does (./run.sh), on a free port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
KEY_LINE = re.compile(r"^API key:\s+(ipk-\S+)", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    process: subprocess.Popen
    base_url: str
    api_key: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# What a platform process takes from the test process: enough to find programs, and pip's and the
# proxies' settings for run.sh's install step; nothing that configures the platform. An exported
# INFERENCE_ENGINE, REDIS_URL, DEBUG or DATABASE_URL would otherwise change what a test tests.
PASSED_ON = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    }
)


def platform_env(**settings: str) -> dict[str, str]:
    """A minimal environment for a platform process: the machine's basics, unbuffered output, then `settings`."""
    env = {name: value for name, value in os.environ.items() if name in PASSED_ON or name.startswith("PIP_")}
    env.setdefault("LANG", "C.UTF-8")
    env["PYTHONUNBUFFERED"] = "1"  # the "API key:" line must reach the log before /health turns ready
    env.update(settings)
    return env


def manage_py(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """`manage.py ARGS` as an operator's shell runs it, with `env` (platform_env's); its output,
    or RuntimeError with both streams when it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def start_live_server(tmp_dir: Path, extra_env: dict | None = None, ready_timeout: float = 120) -> LiveServer:
    """Run ./run.sh with a fresh SQLite file and the README's defaults; wait until /health says ok."""
    port = free_port()
    defaults = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{tmp_dir / 'live.sqlite3'}",
        "ADMIN_PASSWORD": "live-test-password",
    }
    env = platform_env(**{**defaults, **(extra_env or {})})  # a test's own settings win
    log_path = tmp_dir / "server.log"
    log = open(log_path, "wb")  # a restart on the same directory starts a fresh log
    process = subprocess.Popen(
        [str(REPO / "run.sh")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"run.sh exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        process.kill()
        raise RuntimeError(f"platform did not become ready:\n{log_path.read_text()}")
    match = KEY_LINE.search(log_path.read_text())
    api_key = match.group(1) if match else ""  # printed only on the run that issued it
    return LiveServer(process=process, base_url=base_url, api_key=api_key, log_path=log_path)
