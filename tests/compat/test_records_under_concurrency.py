"""Every request leaves exactly one record, however many finish at once.

The platform runs as the README starts it (./run.sh: daphne, in-process engines), once on its
embedded SQLite file and once on a fresh PostgreSQL database. Half the requests go to the real
SmolLM2, which serves one sequence at a time; the other half to an echo model, which serves all
of its requests at once, so that many finish, and write their records, at the same moment.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models_registry.bundled import bundled_model_path

from ..distributed.cluster import PG_ADMIN_URL
from .live_server import REPO, LiveServer, start_live_server

pytestmark = [pytest.mark.live, pytest.mark.model]

REQUESTS = 200
METRICS_TOKEN = secrets.token_urlsafe(16)
LOCKED = "database is locked"


@dataclass
class Served:
    server: LiveServer
    query: Callable[[str], list[tuple]]
    database: str = ""  # the PostgreSQL database's name; empty on SQLite
    # Connections the client opens at once. 200 at once answered 200 of 200 on PostgreSQL too
    # (the pool queues their key lookups), but one run in four saw a connection reset by the
    # server under that burst on this 2-core machine: kept at 64 there until that is understood.
    at_once: int = REQUESTS

    def count(self, where: str = "") -> int:
        return self.query(f"SELECT COUNT(*) FROM monitoring_requestrecord {where}")[0][0]

    def success_total(self, model: str) -> float:
        """vllm:request_success_total for `model`, summed over finish reasons, as /metrics reports it."""
        response = httpx.get(
            f"{self.server.base_url}/metrics", timeout=30, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        assert response.status_code == 200, response.text
        return sum(
            sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == "vllm:request_success_total" and sample.labels.get("model_name") == model
        )


def _register_echo(database_url: str) -> None:
    """An echo model beside the bundled one, registered with the README's command."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env = {**inherited, "DATABASE_URL": database_url}
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "register_model",
            "echo",
            "--engine",
            "echo",
            "--context-length",
            "512",
            "--option",
            "token_delay_ms=20",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The bundled model's queue must hold the whole burst: this test is about records, and
    # past max_waiting (default 64) the excess would get 429s (tests/api/test_backpressure.py).
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "register_model",
            "smollm2",
            "--source",
            str(bundled_model_path()),
            "--alias",
            "SmolLM2-135M-Instruct",
            "--option",
            f"max_waiting={REQUESTS}",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def _sqlite_query(path) -> Callable[[str], list[tuple]]:
    def query(sql: str) -> list[tuple]:
        with sqlite3.connect(path, timeout=30) as connection:
            return connection.execute(sql).fetchall()

    return query


def _postgres_query(url: str) -> Callable[[str], list[tuple]]:
    def query(sql: str) -> list[tuple]:
        with psycopg.connect(url) as connection:
            return connection.execute(sql).fetchall()

    return query


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served(request, tmp_path_factory) -> Iterator[Served]:
    """./run.sh on the embedded SQLite file (its default) or on a PostgreSQL database made for it."""
    tmp = tmp_path_factory.mktemp(f"records-{request.param}")
    env = {"METRICS_ACCESS": "token", "METRICS_TOKEN": METRICS_TOKEN}
    if request.param == "sqlite":
        server = start_live_server(tmp, extra_env=env)
        try:
            _register_echo(f"sqlite:///{tmp / 'live.sqlite3'}")
            yield Served(server, _sqlite_query(tmp / "live.sqlite3"))
        finally:
            server.stop()
        return
    name = f"inference_records_{secrets.token_hex(4)}"
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        server = start_live_server(tmp, extra_env={**env, "DATABASE_URL": url})
        try:
            _register_echo(url)
            yield Served(server, _postgres_query(url), database=name, at_once=64)
        finally:
            server.stop()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _send_all(served: Served, path: str, bodies: list[dict]) -> list[httpx.Response]:
    """One non-streaming request per body, all sent at once (up to served.at_once connections)."""
    limits = httpx.Limits(max_connections=served.at_once, max_keepalive_connections=served.at_once)
    async with httpx.AsyncClient(
        base_url=served.server.base_url,
        limits=limits,
        timeout=900,
        headers={"Authorization": f"Bearer {served.server.api_key}"},
    ) as client:
        return await asyncio.gather(*(client.post(path, json=body) for body in bodies))


@pytest.mark.timeout(1200)
def test_concurrent_requests_each_leave_one_record(served):
    records_before = served.count()
    success_before = {model: served.success_total(model) for model in ("smollm2", "echo")}

    # Short text completions keep the real model's half quick on a small machine.
    half = REQUESTS // 2
    bodies = [{"model": "smollm2", "prompt": f"Hi {i}", "max_tokens": 2, "temperature": 0} for i in range(half)]
    bodies += [{"model": "echo", "prompt": f"one two three {i}", "max_tokens": 3} for i in range(half)]
    responses = asyncio.run(_send_all(served, "/v1/completions", bodies))

    assert [r.status_code for r in responses] == [200] * REQUESTS, {r.status_code for r in responses}
    # Non-streaming answers are sent after their record is written: nothing is left to wait for.
    assert served.count() - records_before == REQUESTS
    for model in ("smollm2", "echo"):
        assert served.success_total(model) - success_before[model] == half, model
    ((last_used,),) = served.query("SELECT last_used_at FROM models_registry_apikey")
    assert last_used is not None
    log = served.server.log()
    assert LOCKED not in log and "could not record request" not in log, log[-4000:]


@pytest.mark.timeout(600)
def test_unknown_model_names_are_one_unknown_model(served):
    """Names a client makes up are not kept: each such request is recorded under no model."""
    made_up = [f"made-up-{uuid.uuid4().hex}" for _ in range(5)]
    unknown_before = served.count("WHERE model_name = ''")

    responses = asyncio.run(
        _send_all(
            served,
            "/v1/chat/completions",
            [
                {"model": model, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2}
                for model in [*made_up, "SmolLM2-135M-Instruct"]
            ],
        )
    )

    assert [r.status_code for r in responses] == [404] * 5 + [200]
    assert served.count("WHERE model_name = ''") - unknown_before == 5
    assert served.count("WHERE model_name LIKE 'made-up-%'") == 0
    # The alias is recorded under the model it names, so the model has one series, not two.
    assert served.count("WHERE model_name = 'SmolLM2-135M-Instruct'") == 0
    names = {name for (name,) in served.query("SELECT DISTINCT model_name FROM monitoring_requestrecord")}
    assert names - {"smollm2", "echo"} == {""}  # the registered models and one unknown, whatever ran before


@pytest.mark.timeout(600)
def test_requests_waiting_for_tokens_hold_no_database_connection(served):
    """While requests wait for tokens they hold no connection, so in-flight requests cannot use
    up PostgreSQL's connections."""
    if not served.database:
        pytest.skip("SQLite has no connection limit to count against")
    in_flight = 40

    async def scenario() -> int:
        limits = httpx.Limits(max_connections=in_flight)
        async with httpx.AsyncClient(
            base_url=served.server.base_url,
            limits=limits,
            timeout=300,
            headers={"Authorization": f"Bearer {served.server.api_key}"},
        ) as client:
            body = {"model": "echo", "prompt": "word " * 200, "max_tokens": 200, "stream": True}
            streams = [client.stream("POST", "/v1/completions", json=body) for _ in range(in_flight)]
            responses = await asyncio.gather(*(stream.__aenter__() for stream in streams))
            lines = [response.aiter_lines() for response in responses]
            # Every request has its first token: all are in the engine, generating.
            firsts = [await anext(it) for it in lines]
            assert all(first.startswith("data: ") for first in firsts), firsts
            held = await asyncio.to_thread(
                served.query,
                (
                    "SELECT COUNT(*) FROM pg_stat_activity "
                    f"WHERE datname = '{served.database}' AND pid <> pg_backend_pid()"
                ),
            )
            for stream in streams:
                await stream.__aexit__(None, None, None)
            return held[0][0]

    held = asyncio.run(scenario())
    # What stays open is the lookups made before the streams started, on the request threads that
    # missed the one-second key and registry caches in the burst (9 of 40 before embeddings, 10
    # with the embedding model registered too): bounded by the burst, not by the tokens awaited.
    assert held < in_flight // 3, f"{held} connections held by {in_flight} requests waiting for tokens"
