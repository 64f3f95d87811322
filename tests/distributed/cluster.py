"""A real distributed deployment on this machine, for tests and benchmarks.

A private redis-server on a free port, a fresh PostgreSQL database, web processes (`serve`) and
Celery worker processes, all started as subprocesses with the commands the README gives.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from ..compat.live_server import free_port, manage_py, platform_env

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BIN = Path(sys.executable).parent


def _wait(predicate, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited {process.returncode}\n{log.read_text() if log else ''}")
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}\n{log.read_text()[-4000:] if log else ''}")


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log: Path

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    tmp: Path
    redis_port: int = field(default_factory=free_port)
    db_name: str = field(default_factory=lambda: f"inference_it_{secrets.token_hex(4)}")
    procs: list[Proc] = field(default_factory=list)
    redis: Proc | None = None
    # Every host of one deployment shares one secret key, as the README asks of production.
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(50))

    @property
    def database_url(self) -> str:
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{self.db_name}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self, **extra) -> dict:
        """The cluster's settings on a minimal environment: an exported setting cannot change the test."""
        # DEBUG off everywhere, as in production (`serve` turns it off for web processes anyway);
        # /metrics open, because the tests scrape it without credentials.
        settings = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SECRET_KEY": self.secret_key,
            "DEBUG": "false",
            "METRICS_ACCESS": "open",
            "WORKER_HEARTBEAT_SECONDS": "0.5",
            "WORKER_DEAD_AFTER_SECONDS": "3",
        }
        return platform_env(**{**settings, **extra})

    # --- infrastructure ---

    def start_redis(self) -> None:
        log = self.tmp / "redis.log"
        process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
        )
        self.redis = Proc("redis", process, log)
        _wait(lambda: _redis_ping(self.redis_port), 15, "redis", process, log)

    def stop_redis(self) -> None:
        if self.redis:
            self.redis.stop(signal.SIGKILL)

    def create_database(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.db_name}"')
        self.manage("migrate", "-v0")

    def drop_database(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def manage(self, *args: str, **env: str) -> str:
        return manage_py(self.env(**env), *args)

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(self.database_url) as connection:
            return connection.execute(sql, params).fetchall()

    # --- platform processes ---

    def start_worker(
        self,
        name: str,
        models: str | None,
        concurrency: int | None = 4,
        wait: bool = True,
        labels: str | None = None,
        **env: str,
    ) -> Proc:
        """A worker pinned to `models`, or with None one that loads what the deployments place on it
        (reconcile mode, ready at once with no model); concurrency None starts it without
        --concurrency (pinned: one thread per engine slot). `env` adds settings (MAX_LOADED_MODELS, ...)."""
        log = self.tmp / f"worker-{name}.log"
        pool = [] if concurrency is None else ["--concurrency", str(concurrency)]
        pinned = [] if models is None else ["--models", models]
        labelled = [] if labels is None else ["--labels", labels]
        process = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "inference_platform",
                "worker",
                *pinned,
                *labelled,
                *pool,
                "-n",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "info",
            ],
            cwd=REPO,
            env=self.env(**env),
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, process, log)
        self.procs.append(proc)
        if wait:
            _wait(lambda: self.worker_state(process.pid) == "ready", 90, f"worker {name}", process, log)
        return proc

    def inspect(self, worker_name: str, command: str):
        """What `celery inspect <command>` gets back from the worker named `worker_name` (remote control)."""
        destination = f"{worker_name}@{socket.gethostname()}"
        result = subprocess.run(
            [
                str(BIN / "celery"),
                "-A",
                "inference_platform",
                "inspect",
                command,
                "-d",
                destination,
                "--timeout",
                "20",
                "--json",
            ],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])[destination]

    def consumed_queues(self, proc: Proc) -> set[str]:
        """The queues the worker says it consumes, asked over Celery's remote control."""
        return {queue["name"] for queue in self.inspect(proc.name, "active_queues")}

    def wait_until(self, predicate, timeout: float, what: str, proc: Proc | None = None) -> None:
        """Poll `predicate` until it holds; fail with `proc`'s log tail (if given) after `timeout` seconds."""
        _wait(predicate, timeout, what, proc.process if proc else None, proc.log if proc else None)

    def set_model(self, name: str, **fields) -> None:
        """Change a served model's deployment fields, as the admin's form saves them, and announce it."""
        assignments = ", ".join(f'"{column}" = %s' for column in fields)
        self.query(
            f"UPDATE models_registry_servedmodel SET {assignments}, updated_at = now() WHERE name = %s RETURNING id",
            *fields.values(),
            name,
        )
        self.announce()

    def announce(self, **event) -> None:
        """Wake every engine host's reconciler, as the services do after a change (deployment_events)."""
        import redis

        with redis.Redis(port=self.redis_port) as client:
            client.publish("inference:deployments", json.dumps({"kind": "changed", **event}))

    def copies(self, model: str) -> list[tuple[str, str, str]]:
        """(worker id, state, revision) of each copy of `model` the hosts report."""
        return self.query(
            "SELECT w.worker_id, r.state, r.revision FROM models_registry_replica r "
            "JOIN models_registry_workerregistration w ON w.id = r.worker_id "
            "JOIN models_registry_servedmodel m ON m.id = r.model_id WHERE m.name = %s ORDER BY w.worker_id",
            model,
        )

    def ready_on(self, model: str) -> set[str]:
        """Worker ids with a ready copy of `model`."""
        return {worker for worker, state, _ in self.copies(model) if state == "ready"}

    def worker_state(self, pid: int) -> str | None:
        rows = self.query(
            "SELECT state FROM models_registry_workerregistration WHERE pid = %s ORDER BY started_at DESC LIMIT 1", pid
        )
        return rows[0][0] if rows else None

    def worker_concurrency(self, pid: int) -> int:
        """The pool size the worker reported when it became ready."""
        return self.query(
            "SELECT concurrency FROM models_registry_workerregistration WHERE pid = %s "
            "ORDER BY started_at DESC LIMIT 1",
            pid,
        )[0][0]

    def worker_id(self, pid: int) -> str:
        return self.query(
            "SELECT worker_id FROM models_registry_workerregistration WHERE pid = %s ORDER BY started_at DESC LIMIT 1",
            pid,
        )[0][0]

    def start_web(self, name: str = "web", *, ready: bool = False) -> str:
        """A web process as the README runs it (`manage.py serve --no-setup`); returns its base URL once
        /health answers at all (503 until a worker is seen), or with `ready` once it answers 200."""
        port = free_port()
        log = self.tmp / f"{name}.log"
        process = subprocess.Popen(
            [str(BIN / "python"), "manage.py", "serve", "--no-setup"],
            cwd=REPO,
            env=self.env(HOST="127.0.0.1", PORT=str(port)),
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(Proc(name, process, log))
        base_url = f"http://127.0.0.1:{port}"
        healthy = (200,) if ready else (200, 503)
        _wait(lambda: httpx.get(f"{base_url}/health", timeout=2).status_code in healthy, 120, name, process, log)
        return base_url

    def shutdown(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.stop_redis()


def _redis_ping(port: int) -> bool:
    import redis

    return redis.Redis(port=port, socket_connect_timeout=0.5).ping()


def scrape(base_url: str, timeout: float = 30) -> dict[str, dict[tuple, float]]:
    """GET /metrics and parse it: {sample name: {sorted label items: value}}."""
    response = httpx.get(f"{base_url}/metrics", timeout=timeout)
    assert response.status_code == 200, response.text
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples
