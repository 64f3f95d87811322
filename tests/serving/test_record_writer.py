"""Request records go through one writer thread in batches: exactly one row per request, the totals
once per row, a bad record costing only itself, and nothing queued lost when the process exits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from engines.base import Chunk
from monitoring.models import RequestRecord
from monitoring.selectors import request_totals
from monitoring.services import request_records_create
from serving.lifecycle import request_lifecycle
from serving.record_writer import RecordWriter, records_close

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


def _record(request_id: str, **overrides) -> dict:
    return {
        "request_id": request_id,
        "created_at": timezone.now(),
        "endpoint": "chat",
        "stream": False,
        "duration_ms": 40.0,
        "status_code": 200,
        "model_name": "m",
        "engine": "echo",
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "finish_reason": "stop",
        **overrides,
    }


@pytest.fixture(autouse=True)
def _writer_stopped_after():
    yield
    records_close()


async def test_requests_finishing_together_each_leave_one_record_and_count_once():
    async def one(n: int) -> None:
        async with request_lifecycle(endpoint="chat", api_key_id=None, request_id=f"together-{n}") as life:
            life.model_name, life.engine = "m", "echo"
            await asyncio.sleep(0)
            if n % 5 == 0:
                life.cancelled()
            else:
                life.succeeded(Chunk(finish_reason="stop", prompt_tokens=3, completion_tokens=2))

    # Every request's record exists once its lifecycle is left, whatever batch stored it.
    await asyncio.gather(*(one(n) for n in range(60)))
    ids = [r async for r in RequestRecord.objects.values_list("request_id", flat=True)]
    assert sorted(ids) == sorted(f"together-{n}" for n in range(60))
    totals = await sync_to_async(request_totals)()
    assert totals["m"].finished == {"stop": 48, "length": 0, "abort": 12}


def test_a_batch_stores_the_first_record_of_an_id_and_counts_it_once():
    assert request_records_create([_record("a"), _record("b"), _record("a", prompt_tokens=100)]) == 2
    assert request_records_create([_record("b", prompt_tokens=100), _record("c")]) == 1
    assert RequestRecord.objects.count() == 3
    assert RequestRecord.objects.get(request_id="a").prompt_tokens == 3
    totals = request_totals()["m"]
    assert totals.finished["stop"] == 3 and totals.prompt_tokens == 9


def test_a_record_the_database_refuses_costs_only_itself():
    writer = RecordWriter()
    futures = [
        writer.submit(_record("fine-1")),
        writer.submit(_record("refused", api_key_id=987654)),  # no such key: the foreign key fails
        writer.submit(_record("fine-2")),
    ]
    for future in futures:
        future.result(timeout=30)
    assert writer.close()
    assert sorted(RequestRecord.objects.values_list("request_id", flat=True)) == ["fine-1", "fine-2"]
    assert request_totals()["m"].finished["stop"] == 2


def test_flush_waits_for_everything_queued_before_it():
    writer = RecordWriter()
    for n in range(200):
        writer.submit(_record(f"queued-{n}"))
    assert writer.flush(timeout=60)
    assert RequestRecord.objects.count() == 200
    assert writer.close()


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3",
    reason="the child process reaches the test database by its SQLite file",
)
def test_records_queued_when_the_process_exits_are_stored():
    """A process that queues records and exits at once (no flush) still stores every one of them."""
    database = settings.DATABASES["default"]["NAME"]
    child = (
        "import django; django.setup()\n"
        "from django.utils import timezone\n"
        "from serving.record_writer import record_submit\n"
        "for n in range(300):\n"
        "    record_submit({'request_id': f'exit-{n}', 'created_at': timezone.now(), 'endpoint': 'chat',\n"
        "                   'stream': False, 'duration_ms': 1.0, 'status_code': 200, 'model_name': 'm',\n"
        "                   'engine': 'echo', 'finish_reason': 'stop'})\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "inference_platform.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", child], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert RequestRecord.objects.filter(request_id__startswith="exit-").count() == 300
    assert request_totals()["m"].finished["stop"] == 300
