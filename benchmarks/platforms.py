"""The platform for a benchmark, stopped with all it started: embedded (`./run.sh`, fresh SQLite) or
distributed (tests/distributed/cluster.py: private redis-server, fresh PostgreSQL database)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.machine import process_table
from tests.compat.live_server import KEY_LINE, LiveServer, start_live_server
from tests.distributed.cluster import Cluster

STOP_TIMEOUT_S = 15.0
MODEL = "smollm2"  # the bundled model's name in both modes


@dataclass
class Endpoint:
    """A platform that answers: where, with which key, and which mode it runs in."""

    mode: str
    base_url: str
    api_key: str
    worker_concurrency: int | None = None  # distributed: the worker's pool size, one thread per engine slot


@contextlib.contextmanager
def running_platform(
    mode: str, tmp: Path, *, engine: str = "llama_cpp", model_path: Path | None = None
) -> Iterator[Endpoint]:
    """The platform serving the bundled model as `MODEL`, in `mode`, until the block ends.

    embedded: ./run.sh with a fresh SQLite file (with engine "echo" its bundled model is served by echo).
    distributed: private redis-server, fresh PostgreSQL database, one Celery worker
    `--models smollm2` (no --concurrency: its pool follows the engine's slots) and one web process (`manage.py serve --no-setup`).
    """
    started = time.perf_counter()
    if mode == "embedded":
        print(f"[embedded] starting ./run.sh (INFERENCE_ENGINE={engine}, fresh SQLite in {tmp})", flush=True)
        with embedded_platform(tmp, engine) as server:
            print(f"[embedded] ready on {server.base_url} in {time.perf_counter() - started:.1f}s", flush=True)
            try:
                yield Endpoint(mode, server.base_url, server.api_key)
            except Exception:
                print(f"[embedded] last platform output:\n{server.log()[-3000:]}", file=sys.stderr)
                raise
        return
    if mode != "distributed":
        raise ValueError(f"unknown mode {mode!r}: embedded or distributed")
    with distributed_platform(tmp, "distributed") as cluster:
        if engine == "echo":
            cluster.manage("register_model", MODEL, "--engine", "echo", "--option", "token_delay_ms=0")
        else:
            cluster.manage("register_model", MODEL, "--source", str(model_path), "--engine", engine)
        api_key = cluster.manage("issue_api_key", "benchmark").strip()
        worker = cluster.start_worker("bench", MODEL, concurrency=None)
        pool = cluster.worker_concurrency(worker.process.pid)
        base_url = cluster.start_web(ready=True)
        print(
            f"[distributed] ready on {base_url} in {time.perf_counter() - started:.1f}s "
            f"(worker --models {MODEL}: pool concurrency {pool} = engine slots)",
            flush=True,
        )
        yield Endpoint(mode, base_url, api_key, pool)


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short and leave processes or a database behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def embedded_platform(
    tmp: Path, engine: str, ready_timeout: float = 120, settings: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    """./run.sh on a free port with a fresh SQLite file in tmp (and `settings`), until /health is 200
    and the API key is known; on the way out its whole process group is stopped."""
    extra_env = {
        **(settings or {}),
        "INFERENCE_ENGINE": engine,  # an inherited INFERENCE_ENGINE would measure another engine
        "REDIS_URL": "",  # settings read "" as unset; an inherited REDIS_URL would mean distributed mode
        "PYTHONUNBUFFERED": "1",  # the "API key:" line must reach the log before /health turns ready
    }
    leaders = _our_group_leaders()
    try:
        server = start_live_server(tmp, extra_env, ready_timeout)
    except BaseException:
        # On a timeout start_live_server kills run.sh alone, on Ctrl-C nothing: end the process
        # group it started (run.sh's pip, say), as for a server that did start.
        with no_interrupts():
            for pgid in _our_group_leaders() - leaders:
                _signal_group(pgid, signal.SIGKILL)
        raise
    try:
        _wait_for_api_key(server)
        yield server
    finally:
        with no_interrupts():
            _stop(server)


@contextlib.contextmanager
def distributed_platform(tmp: Path, label: str) -> Iterator[Cluster]:
    """A Cluster with its Redis running and its database migrated; the caller starts workers and web
    processes. On an error each process's last output is printed; on the way out every process
    stops and the database is dropped."""
    cluster = Cluster(tmp=tmp)
    print(f"[{label}] redis :{cluster.redis_port}, PostgreSQL database {cluster.db_name}", flush=True)
    database_created = False
    try:
        cluster.start_redis()
        database_created = True  # set first: a failed migrate still leaves a database to drop
        cluster.create_database()
        yield cluster
    except Exception:
        for proc in cluster.procs:
            print(
                f"[{label}] last output of {proc.name}:\n{proc.log.read_text(errors='replace')[-2000:]}",
                file=sys.stderr,
            )
        raise
    finally:
        with no_interrupts():
            try:
                cluster.shutdown()
            finally:
                if database_created:
                    cluster.drop_database()


def _our_group_leaders() -> set[int]:
    """Children of this process that lead their own process group (started with start_new_session)."""
    me = os.getpid()
    return {pid for pid, stat in process_table().items() if stat.ppid == me and stat.pgrp == pid}


def _wait_for_api_key(server: LiveServer, timeout_s: float = 10) -> None:
    """start_live_server reads the key once, when /health turns 200: give a late line a moment."""
    deadline = time.monotonic() + timeout_s
    while not server.api_key:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no API key in the platform's output:\n{server.log()[-3000:]}")
        time.sleep(0.2)
        match = KEY_LINE.search(server.log())
        server.api_key = match.group(1) if match else ""


def _stop(server: LiveServer) -> None:
    """SIGTERM to the process group run.sh started; SIGKILL to it only if the server outlives the timeout."""
    process = server.process
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)  # start_live_server gives run.sh its own session, so this reaches only its processes
    except ProcessLookupError:
        pass
