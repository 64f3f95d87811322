"""Retention end to end: a real `celery beat` sends the daily prunes (request records, stored
responses), a real worker runs them.

Beat keeps when each entry last ran in its schedule file. The file is prepared (with Celery's
own scheduler class) to say the prunes last ran two days ago, so the real 03:17 and 03:27 crontab
entries are overdue and beat sends them at once: the schedule under test is the shipped one, not a
test copy.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ..distributed.cluster import BIN, REPO, Cluster, Proc, _wait

pytestmark = [pytest.mark.distributed, pytest.mark.live]

# Backdate the prune's last run in beat's schedule file, as beat itself would have stored it.
SEED_SCHEDULE = """
import datetime as dt, sys
from celery.beat import PersistentScheduler
from inference_platform.celery import app  # sets DJANGO_SETTINGS_MODULE, as `celery -A` does
import django
django.setup()
scheduler = PersistentScheduler(app=app, schedule_filename=sys.argv[1])
for name in ("prune-request-records", "prune-stored-responses"):
    scheduler.schedule[name].last_run_at = app.now() - dt.timedelta(days=2)
scheduler.sync()
scheduler.close()
"""

# Five records past a 10-day retention, two within it, written by the service the platform uses.
SEED_RECORDS = """
import datetime as dt
from django.utils import timezone
from monitoring.services import request_record_create
now = timezone.now()
for name, days in [("old-1", 40), ("old-2", 30), ("old-3", 20), ("old-4", 12), ("old-5", 10.5),
                   ("new-1", 9), ("new-2", 0)]:
    request_record_create(request_id=name, created_at=now - dt.timedelta(days=days), endpoint="chat",
                          stream=False, duration_ms=5.0, status_code=200, model_name="echo", engine="echo",
                          prompt_tokens=3, completion_tokens=2, finish_reason="stop")
# Stored /v1/responses answers, one past a 30-day RESPONSE_RETENTION_DAYS and one within it.
from api.models import StoredResponse
from models_registry.services.api_keys import api_key_issue
key = api_key_issue(name="retention").key
for name, days in [("resp_old", 31), ("resp_new", 29)]:
    StoredResponse.objects.create(id=name, api_key=key, created_at=now - dt.timedelta(days=days), body={},
                                  input_items=[])
"""


class RetentionCluster(Cluster):
    def env(self, **extra) -> dict:
        # A short retention and small batches, so the prune deletes in several transactions.
        return super().env(RECORD_RETENTION_DAYS="10", RECORD_RETENTION_BATCH_SIZE="2", **extra)


@pytest.fixture
def cluster(tmp_path):
    cluster = RetentionCluster(tmp=tmp_path)
    cluster.start_redis()
    cluster.create_database()
    try:
        yield cluster
    finally:
        cluster.shutdown()
        cluster.drop_database()


def test_beat_sends_the_prune_and_a_worker_deletes_old_records(cluster, tmp_path):
    cluster.manage("register_model", "echo", "--engine", "echo")  # a worker needs a model to host
    cluster.manage("shell", "-c", SEED_RECORDS)
    schedule = tmp_path / "beat-schedule"
    seeded = subprocess.run(
        [sys.executable, "-c", SEED_SCHEDULE, str(schedule)],
        cwd=REPO,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seeded.returncode == 0, seeded.stderr

    def totals() -> list[tuple]:
        return cluster.query("SELECT model_name, series, value FROM monitoring_metrictotal ORDER BY 1, 2")

    before = totals()
    assert before, "recording the seeded requests adds to the totals"
    cluster.start_worker("retention", "echo", concurrency=1)
    log = tmp_path / "beat.log"
    beat = Proc(
        "beat",
        subprocess.Popen(
            [str(BIN / "celery"), "-A", "inference_platform", "beat", "--schedule", str(schedule), "-l", "info"],
            cwd=REPO,
            env=cluster.env(),
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
        log,
    )
    cluster.procs.append(beat)

    def remaining() -> list[str]:
        return [row[0] for row in cluster.query("SELECT request_id FROM monitoring_requestrecord ORDER BY request_id")]

    _wait(lambda: remaining() == ["new-1", "new-2"], 60, "beat's prune", beat.process, log)
    assert "Sending due task prune-request-records (monitoring.prune_request_records)" in log.read_text()

    def stored() -> list[str]:
        return [row[0] for row in cluster.query("SELECT id FROM api_storedresponse ORDER BY id")]

    _wait(lambda: stored() == ["resp_new"], 60, "beat's prune of stored responses", beat.process, log)
    assert "Sending due task prune-stored-responses (api.prune_stored_responses)" in log.read_text()
    worker = cluster.procs[0]
    succeeded = re.compile(r"monitoring\.prune_request_records\[[0-9a-f-]+\] succeeded in [0-9.e-]+s: 5\b")
    _wait(lambda: succeeded.search(worker.log.read_text()), 30, "the worker's log of the prune", log=worker.log)
    # Pruning never lowers the running totals behind /metrics.
    assert totals() == before
