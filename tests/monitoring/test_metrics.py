"""GET /metrics through the real ASGI stack: values match the records, the format parses, access is guarded."""

import datetime as dt
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.db import connections
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from monitoring.metric_totals import E2E_BUCKETS, TTFT_BUCKETS, bucket_index
from monitoring.models import MetricTotal, RequestRecord
from monitoring.selectors import request_totals
from monitoring.services import request_record_create, request_records_prune
from serving.dispatch.embedded import engine_host
from tests.held import LONG_ECHO, HeldPost, hang_up_all, long_chat, register_long_echo, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_engine_host():
    """The engine host is process-wide: drop engines that earlier tests loaded, whose
    running gauges would otherwise appear as extra series here."""
    engine_host().shutdown()


REPO = Path(__file__).resolve().parents[2]


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """Sample name -> {sorted label items: value}, through prometheus-client's own text parser."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def buckets(samples, name: str, model: str) -> list[tuple[float, float]]:
    found = [
        (float(dict(labels)["le"]), v)
        for labels, v in samples[f"{name}_bucket"].items()
        if dict(labels)["model_name"] == model
    ]
    return sorted(found)


async def scrape(client, **headers) -> dict:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


@pytest.fixture
async def anonymous(asgi_app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app), base_url="http://testserver") as c:
        yield c
    await sync_to_async(connections.close_all)()


# What Prometheus 2.x sends by default when it scrapes.
PROMETHEUS_2_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;"
    "q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
ECHO = {"model": "echo", "messages": [{"role": "user", "content": "one two three four five six"}]}


async def test_counters_and_histograms_match_the_records(client, echo_model):
    # One at a time: the in-memory SQLite test database fails concurrent writers outright
    # ("table is locked"), where the real file database waits for its turn.
    for _ in range(3):
        await client.post("/v1/chat/completions", json={**ECHO, "max_tokens": 2})
    await client.post("/v1/chat/completions", json=ECHO)  # stop, 6 tokens
    await client.post("/v1/chat/completions", json={**ECHO, "stream": True, "max_tokens": 4})
    await client.post("/v1/completions", json={"model": "echo", "prompt": "a b c", "max_tokens": 8})
    overflow = await client.post("/v1/chat/completions", json={**ECHO, "max_tokens": 10_000})
    missing = await client.post("/v1/chat/completions", json={**ECHO, "model": "no-such-model"})
    assert (overflow.status_code, missing.status_code) == (400, 404)

    samples = await scrape(client)
    records = [r async for r in RequestRecord.objects.all()]
    assert len(records) == 8
    # Exact values, known from the requests: 3 + 1 hit max_tokens, 2 ran out of words.
    assert value(samples, "vllm:request_success_total", model_name="echo", finished_reason="length") == 4
    assert value(samples, "vllm:request_success_total", model_name="echo", finished_reason="stop") == 2
    assert value(samples, "vllm:request_success_total", model_name="echo", finished_reason="abort") == 0
    assert value(samples, "inference_platform_request_failure_total", model_name="echo") == 1
    assert value(samples, "vllm:prompt_tokens_total", model_name="echo") == 5 * 6 + 3
    assert value(samples, "vllm:generation_tokens_total", model_name="echo") == 3 * 2 + 6 + 4 + 3
    # ... and equal to the sums of the records.
    assert value(samples, "vllm:prompt_tokens_total", model_name="echo") == sum(r.prompt_tokens or 0 for r in records)
    assert value(samples, "vllm:generation_tokens_total", model_name="echo") == sum(
        r.completion_tokens or 0 for r in records
    )

    finished = [r for r in records if r.status_code == 200]
    assert len(finished) == 6
    e2e = buckets(samples, "vllm:e2e_request_latency_seconds", "echo")
    assert [le for le, _ in e2e] == [*E2E_BUCKETS, float("inf")]
    assert [count for _, count in e2e] == [sum(r.duration_ms / 1000 <= le for r in finished) for le, _ in e2e]
    assert value(samples, "vllm:e2e_request_latency_seconds_count", model_name="echo") == 6
    assert value(samples, "vllm:e2e_request_latency_seconds_sum", model_name="echo") == pytest.approx(
        sum(r.duration_ms for r in finished) / 1000
    )
    ttft = buckets(samples, "vllm:time_to_first_token_seconds", "echo")
    assert [le for le, _ in ttft] == [*TTFT_BUCKETS, float("inf")]
    counts = [count for _, count in ttft]
    assert counts == sorted(counts) and counts[-1] == 6
    assert counts == [sum(r.ttft_ms / 1000 <= le for r in finished) for le, _ in ttft]
    assert value(samples, "vllm:request_queue_time_seconds_count", model_name="echo") == 6

    # A model that does not exist never becomes a series; nothing is running now.
    assert all(dict(labels)["model_name"] == "echo" for series in samples.values() for labels in series)
    assert value(samples, "vllm:num_requests_running", model_name="echo") == 0
    assert value(samples, "vllm:num_requests_waiting", model_name="echo") == 0


async def test_running_gauge_counts_requests_inside_the_engine(asgi_app, client, api_key):
    await sync_to_async(register_long_echo)()
    await client.post("/v1/chat/completions", json=long_chat(max_tokens=1))  # load the engine
    engine = engine_host().engine_for(LONG_ECHO)
    # Requests that run until their clients hang up, so all three are inside when /metrics is read.
    held = [HeldPost(asgi_app, "/v1/chat/completions", long_chat(), key=api_key) for _ in range(3)]
    try:
        await wait_until(lambda: engine.in_flight == 3, "3 requests inside the engine")
        samples = await scrape(client)
    finally:
        await hang_up_all(held)
    assert value(samples, "vllm:num_requests_running", model_name=LONG_ECHO) == 3
    assert engine.in_flight == 0
    assert value(await scrape(client), "vllm:num_requests_running", model_name=LONG_ECHO) == 0


async def test_counters_survive_pruning_and_a_second_write_of_a_record(client, echo_model):
    """Prometheus reads a counter that goes down as a restart (and rate() spikes): pruning old
    records must leave the totals alone, and a record written twice counts once."""
    for _ in range(3):
        await client.post("/v1/chat/completions", json={**ECHO, "max_tokens": 2})
    before = await scrape(client)
    record = await RequestRecord.objects.afirst()
    await sync_to_async(request_record_create)(  # the worker and the web process both report one request
        request_id=record.request_id,
        created_at=record.created_at,
        endpoint="chat",
        stream=False,
        duration_ms=5.0,
        status_code=200,
        model_name="echo",
        engine="echo",
        prompt_tokens=6,
        completion_tokens=2,
        finish_reason="length",
    )
    pruned = await sync_to_async(request_records_prune)(older_than_days=0, now=timezone.now() + dt.timedelta(days=1))
    assert pruned == 3 and await RequestRecord.objects.acount() == 0
    assert await scrape(client) == before
    assert value(before, "vllm:request_success_total", model_name="echo", finished_reason="length") == 3
    assert value(before, "vllm:generation_tokens_total", model_name="echo") == 6


def test_backfill_equals_the_totals_written_one_record_at_a_time(transactional_db):
    """Migration 0003 starts the totals from stored records: the same numbers as recording them live."""
    outcomes = [("stop", 200, 12.0), ("length", 200, 700.0), ("cancelled", 499, None), ("error", 500, None)]
    for n, (reason, status, ttft) in enumerate(outcomes * 3):
        request_record_create(
            request_id=f"b{n}",
            created_at=timezone.now(),
            endpoint="chat",
            stream=False,
            duration_ms=100.0 * n,
            status_code=status,
            model_name="m",
            engine="echo",
            prompt_tokens=n,
            completion_tokens=2 * n,
            ttft_ms=ttft,
            queue_wait_ms=3.0,
            finish_reason=reason,
        )
    request_record_create(
        request_id="unknown-model",
        created_at=timezone.now(),
        endpoint="chat",
        stream=False,
        duration_ms=1.0,
        status_code=404,
        model_name="nope",
    )  # no engine: never a series

    def totals() -> dict:
        return {
            (model, series): v for model, series, v in MetricTotal.objects.values_list("model_name", "series", "value")
        }

    live = totals()
    MetricTotal.objects.all().delete()
    backfill = importlib.import_module("monitoring.migrations.0003_metrictotal").backfill_from_records
    backfill(django_apps, None)
    assert totals() == pytest.approx(live)  # sums of seconds, added in another order
    assert {model for model, _ in live} == {"m"}
    assert request_totals()["m"].finished == {"stop": 3, "length": 3, "abort": 3}


@pytest.mark.parametrize(
    ("milliseconds", "bucket"),
    [(0.0, 0), (1.0, 0), (1.0001, 1), (70.0, 6), (80.0, 6), (2_560_000.0, 21), (2_560_000.1, None)],
)
def test_an_observation_lands_in_the_first_bucket_that_holds_it(milliseconds, bucket):
    """TTFT bounds run 1, 5, 10, 20, 40, 60, 80 ms ... 2560 s; `le` includes the bound itself."""
    assert bucket_index(TTFT_BUCKETS, milliseconds) == bucket


@pytest.mark.model
async def test_real_model_requests_count_under_the_model_name_even_through_an_alias(client, smollm2):
    for name in ("smollm2", "SmolLM2-135M-Instruct"):
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": name,
                "messages": [{"role": "user", "content": "Say hi."}],
                "max_tokens": 4,
                "temperature": 0,
            },
        )
        assert response.status_code == 200
    samples = await scrape(client)
    records = [r async for r in RequestRecord.objects.all()]
    assert value(samples, "vllm:e2e_request_latency_seconds_count", model_name="smollm2") == 2
    assert value(samples, "vllm:time_to_first_token_seconds_count", model_name="smollm2") == 2
    assert (
        sum(
            value(samples, "vllm:request_success_total", model_name="smollm2", finished_reason=reason)
            for reason in ("stop", "length", "abort")
        )
        == 2
    )
    assert value(samples, "vllm:prompt_tokens_total", model_name="smollm2") == sum(r.prompt_tokens for r in records)
    assert value(samples, "vllm:generation_tokens_total", model_name="smollm2") == sum(
        r.completion_tokens for r in records
    )
    assert not any(
        dict(labels).get("model_name") == "SmolLM2-135M-Instruct" for series in samples.values() for labels in series
    )


async def test_prometheus_asking_for_openmetrics_still_gets_vllm_names(anonymous, echo_model, settings):
    """prometheus-client 0.26's OpenMetrics writer would turn `vllm:` into `vllm_` in sample names."""
    settings.METRICS_ACCESS = "open"
    response = await anonymous.get("/metrics", headers={"Accept": PROMETHEUS_2_ACCEPT})
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'vllm:prompt_tokens_total{model_name="echo"} 0.0' in response.text
    assert "vllm_" not in response.text


async def test_open_access(anonymous, echo_model, settings):
    settings.METRICS_ACCESS = "open"
    assert (await anonymous.get("/metrics")).status_code == 200
    assert (await anonymous.head("/metrics")).status_code == 405  # GET only


async def _login(client, username: str, password: str) -> None:
    page = await client.get("/admin/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = await client.post(
        "/admin/login/?next=/admin/", data={"username": username, "password": password, "csrfmiddlewaretoken": csrf}
    )
    assert response.status_code == 302, response.text


async def test_staff_access_needs_a_staff_session(anonymous, asgi_app, echo_model, settings):
    settings.METRICS_ACCESS = "staff"
    users = get_user_model().objects
    await sync_to_async(users.create_user)("operator", password="operator-password-1", is_staff=True)
    assert (await anonymous.get("/metrics")).status_code == 403
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app), base_url="http://testserver") as c:
        await _login(c, "operator", "operator-password-1")
        assert (await c.get("/metrics")).status_code == 200
        # The same session once the user is no longer staff.
        await users.filter(username="operator").aupdate(is_staff=False)
        assert (await c.get("/metrics")).status_code == 403
    # An API key is not a staff login.
    assert (await anonymous.get("/metrics", headers={"Authorization": "Bearer whatever"})).status_code == 403


async def test_token_access(anonymous, echo_model, settings):
    settings.METRICS_ACCESS = "token"
    settings.METRICS_TOKEN = ""
    assert (await anonymous.get("/metrics", headers={"Authorization": "Bearer "})).status_code == 403
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    missing = await anonymous.get("/metrics")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Bearer wrong", "Bearer s3cret-metrics-toke", "Basic s3cret-metrics-token"):
        assert (await anonymous.get("/metrics", headers={"Authorization": header})).status_code == 401, header
    right = await anonymous.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert right.status_code == 200 and "vllm:num_requests_running" in right.text


def _settings_in_a_fresh_process(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DEBUG", "SECRET_KEY", "METRICS_ACCESS", "METRICS_TOKEN", "DJANGO_SETTINGS_MODULE")
    }
    environ.update(DATABASE_URL=f"sqlite:///{tmp_path / 'settings.sqlite3'}", **env)
    return subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; print('access', settings.METRICS_ACCESS)",
        ],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_access_defaults_to_open_while_debug_and_token_in_production(tmp_path):
    assert "access open" in _settings_in_a_fresh_process(tmp_path).stdout
    production = _settings_in_a_fresh_process(tmp_path, DEBUG="false", SECRET_KEY="x" * 50)
    assert "access token" in production.stdout, production.stderr
    bogus = _settings_in_a_fresh_process(tmp_path, METRICS_ACCESS="public")
    assert bogus.returncode != 0 and "METRICS_ACCESS='public'" in bogus.stderr
