"""The request dashboard: aggregates computed by the database on SQLite and PostgreSQL, the admin page, and retention."""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from models_registry.services.api_keys import api_key_issue
from monitoring.admin import RequestRecordAdmin
from monitoring.charts import line_chart
from monitoring.dashboard import request_dashboard
from monitoring.models import RequestRecord
from monitoring.services import request_record_create, request_records_prune
from monitoring.tasks import prune_request_records

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 3, 4, 12, 30, 20, tzinfo=dt.UTC)
T0 = dt.datetime(2025, 3, 4, 12, 25, tzinfo=dt.UTC)  # a bucket start inside the last hour


def percentile(values: list[float], fraction: float) -> float:
    """percentile_cont: linear interpolation between the nearest ranks (the test's reference)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def record(
    n: int,
    *,
    at: dt.datetime,
    model: str = "alpha",
    worker: str = "w1",
    key=None,
    status: int = 200,
    ttft: float | None = 10.0,
    duration: float = 100.0,
    tokens: int | None = 5,
    finish: str = "stop",
):
    return request_record_create(
        request_id=f"r{n}",
        created_at=at,
        endpoint="chat",
        stream=False,
        duration_ms=duration,
        status_code=status,
        api_key_id=key,
        model_name=model,
        engine="echo",
        worker=worker,
        prompt_tokens=3,
        completion_tokens=tokens,
        ttft_ms=ttft,
        finish_reason=finish,
    )


@pytest.fixture
def dataset():
    """Alpha: 7 requests in one minute (one 500, one without a first token), 2 the next minute;
    beta: 3 requests on another worker in the first minute. Plus an older record outside the hour."""
    alpha_ttft = [12.0, 3.0, 40.0, 7.5, 22.0, None, 95.0]
    alpha_duration = [100.0, 250.0, 80.0, 900.0, 310.0, 45.0, 120.0]
    alpha_tokens = [10, 20, 5, 40, 8, None, 13]
    key = api_key_issue(name="team-a").key
    n = 0
    for i, (ttft, duration, tokens) in enumerate(zip(alpha_ttft, alpha_duration, alpha_tokens, strict=True)):
        n += 1
        record(
            n,
            at=T0 + dt.timedelta(seconds=5 * i),
            ttft=ttft,
            duration=duration,
            tokens=tokens,
            key=key.pk,
            status=500 if i == 5 else 200,
            finish="error" if i == 5 else "stop",
        )
    for i, duration in enumerate([60.0, 70.0]):
        n += 1
        record(n, at=T0 + dt.timedelta(minutes=1, seconds=i), ttft=5.0 + i, duration=duration, tokens=4, key=key.pk)
    for i, duration in enumerate([1000.0, 2000.0, 4000.0]):
        n += 1
        record(
            n,
            at=T0 + dt.timedelta(seconds=30 + i),
            model="beta",
            worker="w2",
            ttft=100.0 * (i + 1),
            duration=duration,
            tokens=50,
            status=429 if i == 0 else 200,
        )
    record(n + 1, at=NOW - dt.timedelta(hours=3), model="alpha")
    return {
        "key": key,
        "alpha_ttft": [t for t in alpha_ttft if t is not None],
        "alpha_duration": alpha_duration,
        "alpha_tokens": sum(t for t in alpha_tokens if t),
    }


def index_of(board, at: dt.datetime) -> int:
    return board.buckets.index(at)


def test_hour_window_buckets_by_minute_and_aggregates_exactly(dataset):
    board = request_dashboard(window="hour", group_by="model", now=NOW)
    assert len(board.buckets) == 60 and board.buckets[-1] == NOW.replace(second=0)
    i, j = index_of(board, T0), index_of(board, T0 + dt.timedelta(minutes=1))
    assert board.totals == {"alpha": 9, "beta": 3}  # the 3-hour-old record is outside the window
    rpm = board.series["requests_per_minute"]
    assert (rpm["alpha"][i], rpm["alpha"][j], rpm["beta"][i], rpm["beta"][j]) == (7, 2, 3, 0)
    assert sum(rpm["alpha"]) == 9 and sum(rpm["beta"]) == 3
    tps = board.series["completion_tokens_per_second"]
    assert tps["alpha"][i] == pytest.approx(dataset["alpha_tokens"] / 60)
    assert tps["beta"][i] == pytest.approx(150 / 60)
    errors = board.series["error_rate"]
    assert errors["alpha"][i] == pytest.approx(100 / 7) and errors["alpha"][j] == 0
    assert errors["beta"][i] == pytest.approx(100 / 3)
    assert errors["alpha"][i + 2] is None  # no requests: a gap, not a 0 % error rate


def test_newest_bucket_rates_cover_only_the_time_it_has_run():
    """NOW is 20 s into its minute: 2 requests there are 6 per minute, not 2."""
    for n in (1, 2):
        record(n, at=NOW - dt.timedelta(seconds=10 + n), tokens=10)
    record(3, at=NOW.replace(second=0) - dt.timedelta(seconds=30), tokens=10)  # a whole, finished minute
    board = request_dashboard(window="hour", group_by="model", now=NOW)
    rpm, tps = board.series["requests_per_minute"]["alpha"], board.series["completion_tokens_per_second"]["alpha"]
    assert (rpm[-1], tps[-1]) == (pytest.approx(6), pytest.approx(20 / 20))
    assert (rpm[-2], tps[-2]) == (pytest.approx(1), pytest.approx(10 / 60))
    # In a minute's first instant the rate divides by a floor of 5 s, not by ~0.
    early = request_dashboard(window="hour", group_by="model", now=NOW.replace(second=0, microsecond=1000))
    assert early.series["requests_per_minute"]["alpha"][-1] == pytest.approx(2 * 60 / 5)


def test_percentiles_match_percentile_cont(dataset):
    board = request_dashboard(window="hour", group_by="model", now=NOW)
    i = index_of(board, T0)
    for name, fraction in (("p50", 0.5), ("p95", 0.95)):
        assert board.series[f"ttft_{name}"]["alpha"][i] == pytest.approx(percentile(dataset["alpha_ttft"], fraction))
        assert board.series[f"latency_{name}"]["alpha"][i] == pytest.approx(
            percentile(dataset["alpha_duration"], fraction)
        )
        assert board.series[f"latency_{name}"]["beta"][i] == pytest.approx(
            percentile([1000.0, 2000.0, 4000.0], fraction)
        )
    j = index_of(board, T0 + dt.timedelta(minutes=1))
    assert board.series["latency_p50"]["alpha"][j] == pytest.approx(65.0)
    assert board.series["ttft_p95"]["alpha"][j] == pytest.approx(5.95)
    # Sanity of the reference itself, so a wrong helper cannot make both sides agree.
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5 and percentile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(
        3.85
    )


def test_percentiles_are_computed_in_one_query_per_column_not_from_rows(dataset):
    with CaptureQueriesContext(connection) as queries:
        request_dashboard(window="hour", group_by="worker", now=NOW)
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    # One grouped query (PostgreSQL: with percentile_cont) plus, on SQLite, one ranked query per column.
    assert len(selects) == (1 if connection.vendor == "postgresql" else 3)
    if connection.vendor == "postgresql":
        assert "PERCENTILE_CONT" in selects[0]
    else:
        assert sum("ROW_NUMBER" in sql for sql in selects) == 2


def test_group_by_worker_and_key(dataset):
    by_worker = request_dashboard(window="day", group_by="worker", now=NOW)
    assert by_worker.totals == {"w1": 10, "w2": 3}  # the day window includes the 3-hour-old record
    hour = NOW.replace(minute=0, second=0)
    # The newest hour has run for 30 min 20 s: its 3 requests are a rate over that time.
    assert by_worker.series["requests_per_minute"]["w2"][by_worker.buckets.index(hour)] == pytest.approx(
        3 / (1820 / 60)
    )
    by_key = request_dashboard(window="week", group_by="key", now=NOW)
    key = dataset["key"]
    assert by_key.totals == {f"team-a ({key.prefix})": 9, "(no key)": 4}
    assert len(by_key.buckets) == 168


def test_unknown_window_or_group_is_refused():
    with pytest.raises(ValueError):
        request_dashboard(window="year")
    with pytest.raises(ValueError):
        request_dashboard(group_by="colour")


def test_chart_escapes_labels_and_breaks_lines_at_gaps():
    buckets = [T0 + dt.timedelta(minutes=m) for m in range(4)]
    svg = line_chart(
        title="TTFT <p95>",
        unit="ms",
        buckets=buckets,
        series={"<script>x</script>": [1.0, 2.0, None, 4.0], "b": [0.0, 0.0, 0.0, 0.0]},
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "TTFT &lt;p95&gt;" in svg
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 1  # the lone point after the gap


@pytest.fixture
def web():
    """Django's test client (the shared `client` fixture is the API's httpx client)."""
    return Client()


@pytest.fixture
def staff_client(web):
    client = web
    user = get_user_model().objects.create_user("ops", password="pw-for-tests", is_staff=True)
    client.force_login(user)
    return client


def test_dashboard_requires_staff(web):
    client = web
    url = reverse("monitoring_dashboard")
    assert url == "/admin/monitoring/dashboard/"
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    get_user_model().objects.create_user("plain", password="pw-for-tests", is_staff=False)
    client.login(username="plain", password="pw-for-tests")
    assert client.get(url).status_code == 302


def test_dashboard_renders_a_chart_per_metric_with_group_names(staff_client, dataset):
    # The view uses the real clock: add records in the current minute so the hour window has data.
    now = dt.datetime.now(dt.UTC)
    record(100, at=now, model="gamma<b>", worker="gpu-node-7")
    record(101, at=now, model="gamma<b>", worker="gpu-node-7", status=503)
    response = staff_client.get("/admin/monitoring/dashboard/?window=hour&group=model")
    assert response.status_code == 200
    html = response.content.decode()
    assert len(re.findall(r"<svg\b[^>]*class=\"chart\"", html)) == 7
    assert "gamma&lt;b&gt;" in html and "gamma<b>" not in html
    for title in (
        "Requests per minute",
        "Completion tokens per second",
        "Time to first token p95",
        "Total latency p50",
        "Error rate",
    ):
        assert title in html
    assert '<table id="hosts">' in html and response.context["hosts"], "this process's host row"
    by_worker = staff_client.get("/admin/monitoring/dashboard/?window=day&group=worker").content.decode()
    assert "gpu-node-7" in by_worker and 'class="selected">last day' in by_worker


def test_admin_index_and_changelist_link_to_the_dashboard(staff_client):
    user = get_user_model().objects.get(username="ops")
    user.is_superuser = True
    user.save()
    for page in ("/admin/", "/admin/monitoring/requestrecord/"):
        response = staff_client.get(page)
        assert response.status_code == 200, page
        assert 'href="/admin/monitoring/dashboard/"' in response.content.decode(), page


def test_changelist_filters_and_columns(staff_client, dataset):
    user = get_user_model().objects.get(username="ops")
    user.is_superuser = True
    user.save()
    response = staff_client.get("/admin/monitoring/requestrecord/")
    titles = {spec.title for spec in response.context["cl"].filter_specs}
    assert {"model name", "api key", "status code", "status class", "finish reason", "worker", "created at"} <= titles
    html = response.content.decode()
    assert "column-ttft" in html and "column-tokens_per_second_rounded" in html
    # Milliseconds read rounded: 95.0 ms TTFT, 4000.0 ms total, 50 tokens in 4 s.
    assert '<td class="field-ttft">95</td>' in html and '<td class="field-duration">4,000</td>' in html
    assert '<td class="field-tokens_per_second_rounded">12.5</td>' in html
    ttft_column = RequestRecordAdmin.list_display.index("ttft")
    by_ttft = staff_client.get(f"/admin/monitoring/requestrecord/?o=-{ttft_column}")  # TTFT, descending
    # Where records without a TTFT go depends on the database (PostgreSQL: first when descending).
    assert [r.ttft_ms for r in by_ttft.context["cl"].result_list if r.ttft_ms is not None][:2] == [300.0, 200.0]
    filtered = staff_client.get("/admin/monitoring/requestrecord/?status_class=5xx")
    assert filtered.context["cl"].result_count == 1
    assert staff_client.get("/admin/monitoring/requestrecord/?worker=w2").context["cl"].result_count == 3


# --- retention ---


def _aged(count: int, *, days: float, start: int) -> None:
    for n in range(start, start + count):
        record(n, at=NOW - dt.timedelta(days=days, minutes=n))


def test_prune_deletes_exactly_the_old_rows_in_batches():
    _aged(7, days=40, start=0)
    _aged(3, days=29, start=100)
    with CaptureQueriesContext(connection) as queries:
        deleted = request_records_prune(older_than_days=30, batch_size=3, now=NOW)
    assert deleted == 7
    deletes = [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 3  # 3 + 3 + 1
    assert sorted(RequestRecord.objects.values_list("request_id", flat=True)) == ["r100", "r101", "r102"]
    assert request_records_prune(older_than_days=30, batch_size=3, now=NOW) == 0


def test_prune_command(capsys):
    now = dt.datetime.now(dt.UTC)
    for n in range(5):
        record(n, at=now - dt.timedelta(days=10, minutes=n))
    record(9, at=now - dt.timedelta(days=1))
    with CaptureQueriesContext(connection) as queries:
        call_command("prune_request_records", "--days", "7", "--batch-size", "2")
    assert "Deleted 5 request records" in capsys.readouterr().out
    assert sum(q["sql"].lstrip().upper().startswith("DELETE") for q in queries.captured_queries) == 3
    assert list(RequestRecord.objects.values_list("request_id", flat=True)) == ["r9"]


def test_prune_task_uses_the_retention_setting(settings):
    now = dt.datetime.now(dt.UTC)
    record(1, at=now - dt.timedelta(days=4))
    record(2, at=now - dt.timedelta(days=2))
    settings.RECORD_RETENTION_DAYS = 0  # keep forever
    prune_request_records.apply()
    assert RequestRecord.objects.count() == 2
    settings.RECORD_RETENTION_DAYS = 3
    settings.RECORD_RETENTION_BATCH_SIZE = 1
    result = prune_request_records.apply()
    assert result.successful() and result.result == 1
    assert list(RequestRecord.objects.values_list("request_id", flat=True)) == ["r2"]
    assert prune_request_records.time_limit and prune_request_records.soft_time_limit


def test_beat_schedules_the_prune_daily():
    from celery.schedules import crontab

    from inference_platform.celery import app

    entry = app.conf.beat_schedule["prune-request-records"]
    assert entry["task"] == prune_request_records.name
    assert isinstance(entry["schedule"], crontab) and entry["schedule"].hour == {3}
