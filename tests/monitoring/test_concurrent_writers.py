"""Requests that finish together all keep their records, totals and key use, on the embedded SQLite file
(each thread its own connection, as daphne runs each request's ORM calls) and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connections
from django.utils import timezone

from models_registry.models import ApiKey
from models_registry.services.api_keys import api_key_verify
from monitoring.models import RequestRecord
from monitoring.selectors import request_totals
from monitoring.services import request_record_create

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 48


def test_writers_that_start_together_all_commit(api_key):
    start = threading.Barrier(WRITERS)
    failures: list[BaseException] = []
    now = timezone.now()

    def one_request(n: int) -> None:
        try:
            start.wait()
            assert api_key_verify(plaintext=api_key) is not None  # key lookups read beside the writers
            for attempt in range(3):  # each request writes more than once, as a busy server would
                request_record_create(
                    request_id=f"together-{n}-{attempt}",
                    created_at=now - dt.timedelta(seconds=1),
                    endpoint="chat",
                    stream=False,
                    duration_ms=40.0,
                    status_code=200,
                    model_name="m",
                    engine="echo",
                    worker="w",
                    prompt_tokens=3,
                    completion_tokens=2,
                    ttft_ms=5.0,
                    finish_reason="stop",
                )
        except BaseException as exc:  # reported below, with the rest
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one_request, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert RequestRecord.objects.count() == 3 * WRITERS
    totals = request_totals()["m"]
    assert totals.finished["stop"] == 3 * WRITERS
    assert totals.prompt_tokens == 3 * 3 * WRITERS and totals.generation_tokens == 2 * 3 * WRITERS
    assert ApiKey.objects.get().last_used_at >= now
