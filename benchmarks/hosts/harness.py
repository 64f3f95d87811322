"""A distributed platform whose workers run on separate "hosts": one network namespace each.

The root namespace holds the bridge, a private redis-server bound to the bridge's address, a TCP
forwarder from the bridge's address to the system PostgreSQL, and the web process (`manage.py
serve`). Each host is a network namespace (veth to the bridge) with its own host name, running one
Celery worker that reaches Redis and PostgreSQL over its veth, as a worker on another machine would.

A run's state (names, addresses, ports, pids) lives in <run dir>/state.json, so another process
can add a host to a running harness, kill one, or clean up after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import psycopg
import redis

from tests.compat.live_server import free_port, manage_py, platform_env

from . import network, processes
from .database import DB_PREFIX, PG_ADMIN_URL, create_database, drop_database, with_database

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUNS_DIR = Path(tempfile.gettempdir()) / "inference-hosts"
STATE = "state.json"
DONE_STATE = "state.done.json"


def _wait(predicate, timeout: float, what: str, log: Path | None = None, process: dict | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not processes.alive(process):
            raise RuntimeError(f"{what}: the process exited\n{_tail(log)}")
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-4000:] if log and log.exists() else ""


class Harness:
    """One run: its network, infrastructure, web process and hosts, described by its state file."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.state_path = self.run_dir / STATE
        if not self.state_path.exists():
            raise FileNotFoundError(f"no running harness in {self.run_dir} (no {STATE})")

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # --- state ---

    @property
    def state(self) -> dict[str, Any]:
        with self._locked() as state:
            return state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The state, read under the run's lock and written back when the block ends."""
        with open(self.run_dir / "state.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(self.state_path.read_text())
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                tmp = self.state_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=2))
                tmp.replace(self.state_path)

    @property
    def run_id(self) -> str:
        return self.state["run_id"]

    @property
    def net(self) -> network.RunNetwork:
        state = self.state
        return network.RunNetwork(state["run_id"], state["subnet"])

    @property
    def base_url(self) -> str:
        return self.state["web_url"]

    @property
    def api_key(self) -> str:
        return self.state["api_key"]

    @property
    def database_url(self) -> str:
        """The run's database, as the root namespace reaches it."""
        return with_database(PG_ADMIN_URL, self.state["db_name"])

    # --- making and destroying a run ---

    @classmethod
    def create(cls, run_dir: Path | None = None, *, settings: dict[str, str] | None = None) -> Harness:
        """A new run: bridge, Redis, PostgreSQL forwarder, migrated database, an API key; no hosts or web yet.
        On failure everything it made is removed before the error propagates."""
        network.require_root_and_tools()
        run_id = secrets.token_hex(2)
        run_dir = Path(run_dir or RUNS_DIR / run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        with open(RUNS_DIR / "subnets.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs starting at once must not pick the same subnet
            subnet = network.pick_subnet()
            state = {
                "run_id": run_id,
                "subnet": subnet,
                "owner": {"pid": os.getpid(), "started": psutil.Process().create_time()},
                "redis_port": free_port(),
                "pg_port": free_port(),
                "db_name": f"{DB_PREFIX}{run_id}",
                "secret_key": secrets.token_urlsafe(50),
                "settings": settings or {},
                "processes": {},
                "hosts": {},
                "next_index": 1,
                "web_url": "",
                "api_key": "",
            }
            # Written before anything is made, so that `cleanup` finds whatever a crash leaves.
            (run_dir / STATE).write_text(json.dumps(state, indent=2))
            harness = cls(run_dir)
            try:
                harness.net.create_bridge()
            except BaseException:
                harness.destroy()
                raise
        try:
            harness._start_infrastructure()
        except BaseException:
            harness.destroy()
            raise
        return harness

    def _start_infrastructure(self) -> None:
        state = self.state
        bridge_ip = self.net.bridge_ip
        redis_log = self.run_dir / "redis.log"
        redis_process = processes.start(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(state["redis_port"]),
                "--bind",
                bridge_ip,
                "--protected-mode",
                "no",  # it listens on the bridge only, which no outside machine reaches
                "--set-proc-title",
                "no",  # its title would overwrite its environment, and with it the run's mark
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.run_dir),
            ],
            env=self._env(),
            log=redis_log,
            cwd=self.run_dir,
        )
        self._remember_process("redis", redis_process)
        pg = urlsplit(PG_ADMIN_URL)
        forward_log = self.run_dir / "forward.log"
        forward_process = processes.start(
            [
                sys.executable,
                "-m",
                "benchmarks.hosts.forward",
                bridge_ip,
                str(state["pg_port"]),
                pg.hostname or "127.0.0.1",
                str(pg.port or 5432),
            ],
            env=self._env(),
            log=forward_log,
            cwd=REPO,
        )
        self._remember_process("forward", forward_process)
        redis_client = redis.Redis(host=bridge_ip, port=state["redis_port"], socket_connect_timeout=0.5)
        _wait(redis_client.ping, 15, "redis", redis_log, redis_process)
        create_database(state["db_name"])
        # The hosts' path to the database must work before any host starts.
        _wait(self._database_answers, 15, "forwarder", forward_log, forward_process)
        self.manage("migrate", "-v0")
        api_key = self.manage("issue_api_key", "many-hosts").strip()
        with self._locked() as state:
            state["api_key"] = api_key

    def _database_answers(self) -> bool:
        with psycopg.connect(self._host_database_url(), connect_timeout=2) as connection:
            connection.execute("SELECT 1")
        return True

    def destroy(self) -> None:
        """Stop every process of the run (hosts first, gracefully), drop its database, remove its network."""
        with processes.no_interrupts():
            if not self.state_path.exists():  # destroyed already
                return
            state = self.state
            run_id = state["run_id"]
            net = network.RunNetwork(run_id, state["subnet"])
            processes.stop_all([host.get("process") for host in state["hosts"].values()])
            processes.stop_all([state["processes"].get("web")])
            processes.stop_all([state["processes"].get(name) for name in ("forward", "redis")])
            processes.kill_all(processes.marked_processes(run_id))  # anything a crash left
            for host in state["hosts"]:
                network.delete_netns(net.netns(host))
            network.remove_network(run_id)
            drop_database(state["db_name"])
            self.state_path.replace(self.run_dir / DONE_STATE)

    # --- the platform ---

    def _env(self, **extra: str) -> dict[str, str]:
        """A process's environment: the run's settings on a minimal environment, and the run's mark."""
        state = json.loads(self.state_path.read_text())
        settings = {
            "DATABASE_URL": with_database(PG_ADMIN_URL, state["db_name"]),
            "REDIS_URL": f"redis://{state['subnet']}.1:{state['redis_port']}/0",
            "SECRET_KEY": state["secret_key"],
            "DEBUG": "false",
            "METRICS_ACCESS": "open",
            **state["settings"],
        }
        return {**platform_env(**{**settings, **extra}), processes.MARK: state["run_id"]}

    def _host_database_url(self) -> str:
        """The run's database as a host reaches it: through the forwarder on the bridge."""
        state = json.loads(self.state_path.read_text())
        url = urlsplit(with_database(PG_ADMIN_URL, state["db_name"]))
        netloc = f"{url.username}@" if url.username else ""
        if url.password:
            netloc = f"{url.username}:{url.password}@"
        return urlunsplit(url._replace(netloc=f"{netloc}{state['subnet']}.1:{state['pg_port']}"))

    def _remember_process(self, name: str, process: dict[str, float]) -> None:
        with self._locked() as state:
            state["processes"][name] = process

    def manage(self, *args: str, **env: str) -> str:
        """Run manage.py with the run's settings in the root namespace; its output."""
        return manage_py(self._env(**env), *args)

    def deploy(
        self, model: str, *, replicas: int | None = None, label: str | None = None, host: str | None = None
    ) -> None:
        """Change a model's deployment only (register_model would reset its other fields), through the
        registering service, and wake the hosts."""
        changes = {"replicas": replicas, "placement_label": label, "placement_host": host}
        changes = {field: value for field, value in changes.items() if value is not None}
        script = (
            "import json\n"
            "from models_registry import deployment_events\n"
            "from models_registry.models import ServedModel\n"
            "from models_registry.services.served_models import served_model_register\n"
            f"m = ServedModel.objects.get(name={model!r})\n"
            "served_model_register(name=m.name, source=m.source, engine=m.engine, context_length=m.context_length,"
            " aliases=m.aliases, default_params=m.default_params, engine_options=m.engine_options,"
            " enabled=m.enabled, task=m.task,"
            f" deployment=json.loads({json.dumps(changes)!r}))\n"
            "deployment_events.announce()\n"
        )
        self.manage("shell", "-c", script)

    def start_web(self, timeout: float = 120) -> str:
        """The web process (`manage.py serve --no-setup`) in the root namespace, on the bridge's address;
        its base URL once /health answers at all (503 until a worker is ready)."""
        state = self.state
        port = free_port()
        log = self.run_dir / "web.log"
        process = processes.start(
            [str(BIN / "python"), "manage.py", "serve", "--no-setup"],
            env=self._env(HOST=f"{state['subnet']}.1", PORT=str(port)),
            log=log,
            cwd=REPO,
        )
        self._remember_process("web", process)
        base_url = f"http://{state['subnet']}.1:{port}"
        _wait(
            lambda: httpx.get(f"{base_url}/health", timeout=2).status_code in (200, 503), timeout, "web", log, process
        )
        with self._locked() as state:
            state["web_url"] = base_url
        return base_url

    # --- hosts ---

    def add_host(
        self,
        name: str,
        *,
        labels: list[str] | None = None,
        models: str | None = None,
        concurrency: int | None = None,
        wait: bool = True,
        timeout: float = 120,
    ) -> dict[str, Any]:
        """A new host: its namespace, host name and worker (reconcile mode unless `models` pins it).
        With `wait`, returns once its worker reports ready."""
        if not name.replace("-", "").isalnum() or len(name) > 40:
            raise ValueError(f"host name {name!r}: letters, digits and '-' only, at most 40 characters")
        with self._locked() as state:
            if name in state["hosts"]:
                raise ValueError(f"host {name!r} exists already in run {state['run_id']}")
            index = state["next_index"]
            state["next_index"] += 1
            net = network.RunNetwork(state["run_id"], state["subnet"])
            state["hosts"][name] = {"index": index, "ip": net.host_ip(index), "labels": labels or [], "process": None}
        net.create_host(name, index)
        log = self.run_dir / f"host-{name}.log"
        command = [
            str(BIN / "celery"),
            "-A",
            "inference_platform",
            "worker",
            *(["--models", models] if models else []),
            *(["--concurrency", str(concurrency)] if concurrency else []),
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
        ]
        env = self._env(
            DATABASE_URL=self._host_database_url(),
            WORKER_LABELS=",".join(labels or []),
        )
        process = processes.start([*net.exec_prefix(name), *command], env=env, log=log, cwd=REPO)
        with self._locked() as state:
            state["hosts"][name].update(process=process, log=str(log))
        if wait:
            _wait(lambda: self.worker_state(name) == "ready", timeout, f"host {name}", log, process)
        return self.state["hosts"][name]

    def kill_host(self, name: str) -> None:
        """Kill every process on the host at once (SIGKILL), as a machine that loses power, and delete its
        namespace. Its worker row stays until it is found silent."""
        state = self.state
        net = network.RunNetwork(state["run_id"], state["subnet"])
        processes.kill_all(network.netns_pids(net.netns(name)))
        network.delete_netns(net.netns(name))
        with self._locked() as state:
            state["hosts"].pop(name, None)

    def host_pids(self, name: str) -> list[int]:
        """Processes running on the host."""
        return network.netns_pids(self.net.netns(name))

    # --- what the database says ---

    def query(self, sql: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.database_url) as connection:
            return connection.execute(sql, params).fetchall()

    def worker_state(self, host: str) -> str | None:
        """State of the newest worker registered from `host`."""
        rows = self.query(
            "SELECT state FROM models_registry_workerregistration WHERE host = %s ORDER BY started_at DESC LIMIT 1",
            host,
        )
        return rows[0][0] if rows else None

    def workers(self) -> list[dict[str, Any]]:
        """Every worker row: host, state, labels, models it serves."""
        rows = self.query(
            "SELECT host, state, labels, hosted_models, worker_id FROM models_registry_workerregistration "
            "ORDER BY host, started_at"
        )
        return [dict(zip(("host", "state", "labels", "models", "worker_id"), row, strict=True)) for row in rows]

    def replicas(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every copy of every model (or of `model`): its host, state and revision."""
        rows = self.query(
            "SELECT m.name, w.host, r.state, r.revision, r.state_changed_at, w.state, "
            "w.hosted_models ? m.name "
            "FROM models_registry_replica r "
            "JOIN models_registry_servedmodel m ON m.id = r.model_id "
            "JOIN models_registry_workerregistration w ON w.id = r.worker_id "
            "WHERE %s::text IS NULL OR m.name = %s::text ORDER BY m.name, w.host",
            model,
            model,
        )
        keys = ("model", "host", "state", "revision", "state_changed_at", "worker_state", "taking_jobs")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def ready_hosts(self, model: str) -> list[str]:
        """Hosts whose live worker holds a ready copy of `model` and says so to web processes (in its hosted
        models, which they route by)."""
        return sorted(
            r["host"]
            for r in self.replicas(model)
            if r["state"] == "ready" and r["worker_state"] != "dead" and r["taking_jobs"]
        )
