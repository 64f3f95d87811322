"""Writing per-request records."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from .metric_totals import record_increments
from .models import MetricTotal, RequestRecord

logger = logging.getLogger(__name__)

# NUL and lone surrogates (JSON can carry both as escapes); see _storable.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def request_record_create(
    *,
    request_id: str,
    created_at: dt.datetime,
    endpoint: str,
    stream: bool,
    duration_ms: float,
    status_code: int,
    api_key_id: int | None = None,
    model_name: str = "",
    engine: str = "",
    worker: str = "",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cached_tokens: int | None = None,
    ttft_ms: float | None = None,
    queue_wait_ms: float | None = None,
    finish_reason: str = "",
    error_type: str = "",
    error_message: str = "",
) -> RequestRecord:
    """Store the one record of a finished request; a second record for the same id is ignored.

    In distributed mode the worker and the web process can both learn how a request
    ended (e.g. the worker dies right after recording), so the first write wins.
    `model_name` is the served model's own name, or empty when the request named no model
    it could use: a name a client made up is never stored.
    """
    fields = _record_fields(locals())
    # One transaction: the /metrics totals grow exactly when the record is created, once.
    with transaction.atomic():
        record, created = RequestRecord.objects.get_or_create(request_id=request_id, defaults=fields)
        if created:
            metric_totals_add(record.model_name, record_increments(fields))
    return record


def request_records_create(records: list[dict[str, Any]]) -> int:
    """Store many finished requests' records (request_record_create's arguments each) at once; returns how many
    were new.

    As for one record: an id already stored (or twice in `records`) is stored once, the first
    time, and the totals grow by exactly the records created, in the same transaction. A batch
    costs one transaction, one INSERT and one totals upsert per model, where one call per record
    costs a transaction, a lookup, an insert and an upsert each.
    """
    batch: dict[str, dict[str, Any]] = {}
    for record in records:
        batch.setdefault(record["request_id"], record)
    try:
        return _records_insert(batch, stored=set())
    except IntegrityError:
        # An id is stored already: a worker and a web process both recorded one request (rare).
        # Leave those out; a third writer racing this retry fails it, and the caller retries.
        stored = set(RequestRecord.objects.filter(request_id__in=list(batch)).values_list("request_id", flat=True))
        return _records_insert(batch, stored=stored)


def _records_insert(batch: dict[str, dict[str, Any]], *, stored: set[str]) -> int:
    new = [
        _record_fields(r) | {"request_id": request_id} for request_id, r in batch.items() if request_id not in stored
    ]
    totals: dict[str, dict[str, float]] = {}
    for fields in new:
        per_model = totals.setdefault(fields["model_name"], {})
        for series, amount in record_increments(fields).items():
            per_model[series] = per_model.get(series, 0) + amount
    with transaction.atomic():
        RequestRecord.objects.bulk_create([RequestRecord(**fields) for fields in new])
        for model_name in sorted(totals):  # one order for every writer: no deadlocks on PostgreSQL
            metric_totals_add(model_name, totals[model_name])
    return len(new)


def _record_fields(arguments: dict[str, Any]) -> dict[str, Any]:
    """A record's columns (request_id left out) from request_record_create's arguments: rate and storable text."""
    seconds = arguments["duration_ms"] / 1000
    completion_tokens = arguments.get("completion_tokens")
    tokens_per_second = completion_tokens / seconds if completion_tokens and seconds > 0 else None
    text = _storable({name: arguments.get(name) or "" for name in _TEXT_FIELDS})
    return dict(
        created_at=arguments["created_at"],
        api_key_id=arguments.get("api_key_id"),
        stream=arguments["stream"],
        prompt_tokens=arguments.get("prompt_tokens"),
        completion_tokens=completion_tokens,
        cached_tokens=arguments.get("cached_tokens"),
        ttft_ms=arguments.get("ttft_ms"),
        queue_wait_ms=arguments.get("queue_wait_ms"),
        duration_ms=arguments["duration_ms"],
        tokens_per_second=tokens_per_second,
        status_code=arguments["status_code"],
        **text,
    )


_TEXT_FIELDS = ("model_name", "engine", "worker", "endpoint", "finish_reason", "error_type", "error_message")


@functools.cache
def _max_length(name: str) -> int | None:
    max_length: int | None = getattr(RequestRecord._meta.get_field(name), "max_length", None)
    return max_length


def _storable(text: dict[str, str]) -> dict[str, str]:
    """The record's strings cut to their columns' lengths, as any database can store them.

    Error messages can quote what a client sent: a lone surrogate cannot be encoded for
    SQLite, PostgreSQL refuses NUL, and either would make the record's insert fail and the
    record be lost. Each becomes U+FFFD instead.
    """
    stored = {}
    for name, value in text.items():
        value = value[: _max_length(name)]
        stored[name] = _UNSTORABLE.sub("\N{REPLACEMENT CHARACTER}", value)
    return stored


def metric_totals_add(model_name: str, increments: dict[str, float]) -> None:
    """Add to the running totals in one upsert (SQLite and PostgreSQL both have ON CONFLICT).

    Rows go in series order, so concurrent writers lock the same rows in the same order and
    cannot deadlock each other on PostgreSQL.
    """
    if not increments:
        return
    table = connection.ops.quote_name(MetricTotal._meta.db_table)
    rows = sorted(increments.items())
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    params = [item for series, amount in rows for item in (model_name, series, float(amount))]
    with connection.cursor() as cursor:
        # Only the quoted table name and placeholders are interpolated; the values are parameters.
        cursor.execute(
            f"INSERT INTO {table} (model_name, series, value) VALUES {values} "  # noqa: S608
            f"ON CONFLICT (model_name, series) DO UPDATE SET value = {table}.value + excluded.value",
            params,
        )


def request_records_prune(*, older_than_days: int, batch_size: int = 5000, now: dt.datetime | None = None) -> int:
    """Delete records older than `older_than_days`, `batch_size` primary keys at a time; returns how many.

    Each batch is its own short transaction, so pruning millions of rows never holds one long
    lock or one huge transaction, and an interrupted run keeps what it already deleted.
    """
    if older_than_days < 0:
        raise ValueError("older_than_days must be 0 or more")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = (now or timezone.now()) - dt.timedelta(days=older_than_days)
    old = RequestRecord.objects.filter(created_at__lt=cutoff).order_by("pk").values_list("pk", flat=True)
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(old[:batch_size])
            if not batch:
                return deleted
            # Records have no dependants or delete signals, so Django issues one DELETE per batch.
            deleted += RequestRecord.objects.filter(pk__in=batch).delete()[0]
        logger.info("pruned %d request records older than %s", deleted, cutoff.isoformat())
