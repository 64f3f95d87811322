"""What the gateway benchmark measures, each started on its own and stopped with all it started.

- `mock`: benchmarks/mock_openai.py, the fixed-answer upstream every other side forwards to;
  measured directly too, as the baseline for added latency.
- `litellm`: LiteLLM's proxy (benchmarks/litellm_proxy.py), master key only.
- `embedded`: `manage.py serve` with a fresh SQLite file, serving `mock-gpt` on the `upstream`
  engine, with a hashed API key and one record per request.
- `distributed`: the same model behind `manage.py serve --no-setup` and one Celery worker, over a
  private Redis and a fresh PostgreSQL database (tests/distributed/cluster.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.child_process import stop_group, wait_until_healthy
from benchmarks.litellm_proxy import MODEL, running_litellm
from benchmarks.platforms import distributed_platform, no_interrupts
from tests.compat.live_server import free_port, platform_env

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0


@dataclass
class Target:
    """A server the client drives: where, with which key, and how it was started."""

    side: str
    base_url: str
    api_key: str
    command: str


@contextlib.contextmanager
def running_mock(tmp: Path) -> Iterator[Target]:
    """The fixed-answer upstream on a free port."""
    port = free_port()
    command = [sys.executable, str(ROOT / "benchmarks" / "mock_openai.py"), "--port", str(port)]
    log_path = tmp / "mock.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/v1/models", process, log_path, "mock upstream")
        yield Target("mock", f"http://127.0.0.1:{port}", "", " ".join(command[1:]))
    finally:
        with no_interrupts():
            stop_group(process)


@contextlib.contextmanager
def litellm_target(program: Path, mock: Target, tmp: Path) -> Iterator[Target]:
    """LiteLLM's proxy in front of the mock."""
    with running_litellm(program, f"{mock.base_url}/v1", port=free_port(), tmp=tmp) as proxy:
        yield Target("litellm", proxy.base_url, proxy.master_key, " ".join(["litellm", *proxy.command[1:]]))


def _register_mock(manage, mock: Target) -> str:
    """Register `mock-gpt` on the upstream engine and issue a key for it; returns the key."""
    manage(
        "register_model", MODEL, "--engine", "upstream", "--source", MODEL, "--option", f"base_url={mock.base_url}/v1"
    )
    return manage("issue_api_key", "gateway-benchmark").strip().splitlines()[-1].split()[-1]


@contextlib.contextmanager
def embedded_target(mock: Target, tmp: Path, serve_args: tuple[str, ...] = ()) -> Iterator[Target]:
    """`manage.py serve` (embedded: SQLite, the engine in-process) serving `mock-gpt` from the mock."""
    port = free_port()
    env = platform_env(
        DATABASE_URL=f"sqlite:///{tmp / 'embedded.sqlite3'}",
        HOST="127.0.0.1",
        PORT=str(port),
        REDIS_URL="",
        INFERENCE_ENGINE="echo",  # the bundled model, unused here, loads nothing
        ADMIN_PASSWORD="benchmark-password",
        **_passed_on(),
    )

    def manage(*args: str) -> str:
        return _manage(args, env)

    manage("migrate", "-v0")
    api_key = _register_mock(manage, mock)
    command = [sys.executable, "manage.py", "serve", *serve_args]
    log_path = tmp / "embedded.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/health", process, log_path, "embedded platform")
        yield Target("embedded", f"http://127.0.0.1:{port}", api_key, " ".join(command[1:]))
    except Exception:
        print(f"[embedded] last output:\n{log_path.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        with no_interrupts():
            stop_group(process)


@contextlib.contextmanager
def distributed_target(mock: Target, tmp: Path, serve_args: tuple[str, ...] = ()) -> Iterator[Target]:
    """One `manage.py serve --no-setup` web process and one Celery worker hosting `mock-gpt`."""
    with distributed_platform(tmp, "distributed") as cluster:
        api_key = _register_mock(cluster.manage, mock)
        cluster.start_worker("bench", MODEL, concurrency=None)
        port = free_port()
        # As production runs it: DEBUG off, which needs a SECRET_KEY shared by the processes.
        env = cluster.env(
            HOST="127.0.0.1", PORT=str(port), DEBUG="false", SECRET_KEY=secrets.token_urlsafe(50), **_passed_on()
        )
        command = [sys.executable, "manage.py", "serve", "--no-setup", *serve_args]
        log_path = tmp / "web.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            _wait_ready(f"http://127.0.0.1:{port}/health", process, log_path, "distributed web")
            yield Target(
                "distributed",
                f"http://127.0.0.1:{port}",
                api_key,
                f"{' '.join(command[1:])} + celery worker --models {MODEL}",
            )
        except Exception:
            print(f"[distributed] last web output:\n{log_path.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
        finally:
            with no_interrupts():
                stop_group(process)


def _passed_on() -> dict[str, str]:
    """PYTHONPATH, when the benchmark has one: to try packages (uvloop, httptools) not in the venv yet."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


def _manage(args: tuple[str, ...], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _wait_ready(url: str, process: subprocess.Popen, log_path: Path, what: str) -> None:
    wait_until_healthy(process, url, what=what, log_path=log_path, timeout=READY_TIMEOUT_S)
