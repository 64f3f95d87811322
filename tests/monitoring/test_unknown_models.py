"""What clients send stays out of the records' groups: made-up model names are one unknown model,
and every stored string is bounded and storable."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from asgiref.sync import sync_to_async

from models_registry.services.served_models import served_model_register
from monitoring.dashboard import METRICS, UNKNOWN_MODEL, request_dashboard
from monitoring.models import RequestRecord
from monitoring.selectors import request_totals
from monitoring.services import request_record_create
from serving.dispatch.embedded import engine_host

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def aliased_echo(transactional_db):
    """The deterministic echo engine, also answering to an alias."""
    engine_host().shutdown()  # the host is process-wide: a loaded "echo" from another test must not linger
    return served_model_register(name="echo", source="", engine="echo", context_length=512, aliases=["echo-alias"])


async def test_made_up_model_names_are_one_unknown_group(client, aliased_echo):
    made_up = [f"made-up-{uuid.uuid4().hex}" for _ in range(5)]
    for name in made_up:
        response = await client.post(
            "/v1/chat/completions", json={"model": name, "messages": [{"role": "user", "content": "hi"}]}
        )
        assert response.status_code == 404
    for name in ("echo", "echo-alias"):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 1},
        )
        assert response.status_code == 200

    names = sorted([r.model_name async for r in RequestRecord.objects.all()])
    assert names == [""] * 5 + ["echo"] * 2  # the alias is recorded as its model

    dashboard = await sync_to_async(request_dashboard)(window="hour", group_by="model")
    assert dashboard.totals == {UNKNOWN_MODEL: 5, "echo": 2}
    for metric, _, _ in METRICS:
        assert set(dashboard.series[metric]) == {UNKNOWN_MODEL, "echo"}
    assert set(await sync_to_async(request_totals)()) == {"echo"}


def test_stored_strings_are_bounded_and_storable(db):
    """Error messages may quote the client; a lone surrogate or NUL would make the insert fail."""
    hostile = "\ud800 \x00 " + "x" * 100_000
    request_record_create(
        request_id="hostile",
        created_at=dt.datetime.now(dt.UTC),
        endpoint="chat",
        stream=False,
        duration_ms=1.0,
        status_code=400,
        error_type="invalid_value",
        error_message=hostile,
        model_name=hostile,
    )
    stored = RequestRecord.objects.get(request_id="hostile")  # read back from the database
    assert stored.error_message == ("\N{REPLACEMENT CHARACTER} \N{REPLACEMENT CHARACTER} " + "x" * 496)
    assert len(stored.model_name) == RequestRecord._meta.get_field("model_name").max_length
    assert "\x00" not in stored.model_name and "\ud800" not in stored.model_name


@pytest.mark.parametrize(
    ("role", "code"), [("\\ud800", "invalid_json"), ("x" * 100_000, "invalid_value")], ids=["lone-surrogate", "huge"]
)
async def test_a_request_whose_error_quotes_the_client_keeps_its_record(client, aliased_echo, role, code):
    """The record is written whatever the answer; its message is bounded and storable."""
    body = '{"model": "echo", "messages": [{"role": "%s", "content": "hi"}]}' % role  # JSON escapes stay escaped
    await client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    record = await RequestRecord.objects.aget()
    assert record.status_code == 400 and record.error_type == code
    assert len(record.error_message) <= RequestRecord._meta.get_field("error_message").max_length
    assert "\ud800" not in record.error_message
