"""A served model's recent traffic on its admin page: counts, medians and the last requests, from the records."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from models_registry.services.served_models import served_model_register
from monitoring.model_traffic import model_traffic
from monitoring.services import request_record_create

pytestmark = pytest.mark.django_db


def record(
    n: int, *, minutes_ago: float, model: str = "alpha", status: int = 200, ttft=None, duration=100.0, tokens=None
):
    return request_record_create(
        request_id=f"r{n}",
        created_at=timezone.now() - dt.timedelta(minutes=minutes_ago),
        endpoint="chat",
        stream=True,
        duration_ms=duration,
        status_code=status,
        model_name=model,
        engine="echo",
        worker="w1",
        completion_tokens=tokens,
        ttft_ms=ttft,
    )


@pytest.fixture
def traffic():
    # alpha in the last hour: TTFTs 10, 40, 20, 30 and one without a first token; tokens/s 100, 50, 10
    # (tokens over duration); a 500 and a 429. One older than the hour, and another model's request.
    record(1, minutes_ago=50, ttft=10.0, tokens=10, duration=100.0)
    record(2, minutes_ago=40, ttft=40.0, tokens=10, duration=200.0)
    record(3, minutes_ago=30, ttft=20.0, tokens=1, duration=100.0)
    record(4, minutes_ago=20, ttft=30.0, status=500)
    record(5, minutes_ago=10, status=429)
    record(6, minutes_ago=90, ttft=1000.0, tokens=1, duration=1.0, status=500)
    record(7, minutes_ago=5, model="beta", ttft=1.0, status=500)


def test_counts_and_medians_cover_the_last_hour_of_the_model_only(traffic):
    result = model_traffic(model_name="alpha")
    assert (result.requests, result.errors) == (5, 2)
    assert result.median_ttft_ms == 25.0  # the mean of the middle two of 10, 20, 30, 40
    assert result.median_tokens_per_second == 50.0  # of 10, 50, 100
    assert [r.request_id for r in result.last] == ["r5", "r4", "r3", "r2", "r1", "r6"]
    empty = model_traffic(model_name="nobody")
    assert (empty.requests, empty.errors, empty.median_ttft_ms, empty.last) == (0, 0, None, [])


def test_the_last_requests_are_the_ten_newest():
    for n in range(12):
        record(n, minutes_ago=100 - n, ttft=float(n))
    assert [r.request_id for r in model_traffic(model_name="alpha").last] == [f"r{n}" for n in range(11, 1, -1)]


def test_the_model_page_shows_its_traffic(admin_client, traffic):
    model = served_model_register(name="alpha", source="", engine="echo")
    page = admin_client.get(reverse("admin:models_registry_servedmodel_change", args=[model.pk])).content.decode()
    summary = page[page.index('id="model-traffic-summary"') :]
    summary = " ".join(summary[: summary.index("</p>")].split())
    assert "5 requests, 2 errors; median TTFT 25 ms, median 50.0 tokens/s." in summary
    assert "/admin/monitoring/requestrecord/?model_name=alpha" in summary
    table = page[page.index('id="model-traffic"') : page.index("</table>", page.index('id="model-traffic"'))]
    assert table.count("<tr>") == 1 + 6  # the header and alpha's six requests
    assert "<td>429</td>" in table
    # The form still works under monitoring's registration: the page keeps its typed fields and copies.
    assert 'id="replica-panel"' in page and "option_echo_token_delay_ms" in page


def test_a_model_without_requests_says_so(admin_client):
    model = served_model_register(name="quiet", source="", engine="echo")
    page = admin_client.get(reverse("admin:models_registry_servedmodel_change", args=[model.pk])).content.decode()
    assert "0 requests, 0 errors; median TTFT - ms" in page and "No requests yet." in page
