"""Reads for the admin dashboard: per-request records aggregated into time buckets by the database.

Every number here is computed in SQL and only aggregates come back, never the records:
one grouped query for counts, token sums and error counts, plus the percentiles.

Percentiles follow PostgreSQL's `percentile_cont` (linear interpolation between the two
nearest ranks). On PostgreSQL they are that ordered-set aggregate, inside the grouped query.
SQLite has no percentile function, so there each (bucket, group) is ranked with window
functions (ROW_NUMBER and COUNT over the partition) and an outer GROUP BY keeps only the one
or two ranks next to the wanted position, weighting each by its distance to it: the same
interpolation, and each group still returns one value per percentile.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, cast

from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet, Sum, Window
from django.db.models.functions import RowNumber, Trunc
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from models_registry.models import ApiKey

from .models import RequestRecord

# window name -> (span, bucket unit for Trunc, bucket length)
WINDOWS = {
    "hour": (dt.timedelta(hours=1), "minute", dt.timedelta(minutes=1)),
    "day": (dt.timedelta(days=1), "hour", dt.timedelta(hours=1)),
    "week": (dt.timedelta(weeks=1), "hour", dt.timedelta(hours=1)),
}
# group-by name -> the record column it groups on
GROUPS = {"model": "model_name", "key": "api_key_id", "worker": "worker", "endpoint": "endpoint"}
PERCENTILES = {"p50": 0.5, "p95": 0.95}
# The newest bucket's rates divide by at least this much time, so a request in its first
# instant does not read as a huge spike.
MIN_COVERED_SECONDS = 5.0
PERCENTILE_COLUMNS = {"ttft": "ttft_ms", "latency": "duration_ms"}
# Charted series, in display order: (name, title, unit)
METRICS = (
    ("requests_per_minute", "Requests per minute", "req/min"),
    ("completion_tokens_per_second", "Completion tokens per second", "tok/s"),
    ("ttft_p50", "Time to first token p50", "ms"),
    ("ttft_p95", "Time to first token p95", "ms"),
    ("latency_p50", "Total latency p50", "ms"),
    ("latency_p95", "Total latency p95", "ms"),
    ("error_rate", "Error rate (status >= 400)", "%"),
)


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate: `percentile_cont(f) WITHIN GROUP (ORDER BY expr)`."""

    function = "PERCENTILE_CONT"
    name = "PercentileCont"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra):
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must lie in [0, 1]")
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclasses.dataclass
class Dashboard:
    """Bucket starts and, per metric, {group label: [value or None per bucket]}."""

    window: str
    group_by: str
    buckets: list[dt.datetime]
    series: dict[str, dict[str, list[float | None]]]
    totals: dict[str, int]  # requests per group over the window


def _window_bounds(window: str, now: dt.datetime) -> tuple[dt.datetime, list[dt.datetime], dt.timedelta]:
    span, unit, step = WINDOWS[window]
    end = now.replace(second=0, microsecond=0)
    if unit == "hour":
        end = end.replace(minute=0)
    count = int(span / step)
    buckets = [end - step * i for i in range(count - 1, -1, -1)]
    return buckets[0], buckets, step


def _bucket_key(value) -> dt.datetime:
    """A bucket start as an aware UTC datetime, whatever form the backend returned it in."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, dt.UTC)
    return value.astimezone(dt.UTC)


def _percentiles_by_window_functions(queryset, unit: str, group_column: str, column: str) -> dict[tuple, dict]:
    """{(bucket, group): {"p50": v, "p95": v}} on a backend without percentile_cont, in one query."""
    ranked = (
        queryset.filter(**{f"{column}__isnull": False})
        .annotate(bucket=Trunc("created_at", unit), grp=F(group_column), v=F(column))
        .annotate(
            rn=Window(RowNumber(), partition_by=[F("bucket"), F("grp")], order_by=F(column).asc()),
            n=Window(Count("id"), partition_by=[F("bucket"), F("grp")]),
        )
        .order_by()
        .values("bucket", "grp", "v", "rn", "n")
    )
    inner_sql, params = ranked.query.sql_with_params()
    # For fraction f the wanted 0-based position is pos = f * (n - 1); ranks k with |k - pos| < 1
    # are its floor and ceiling, and weighting each by 1 - |k - pos| interpolates linearly.
    picks, sums = [], []
    for name, fraction in PERCENTILES.items():
        near = f"(rn - 1) > {fraction!r} * (n - 1) - 1 AND (rn - 1) < {fraction!r} * (n - 1) + 1"
        picks.append(f"({near})")
        sums.append(f"SUM(CASE WHEN {near} THEN (1 - ABS((rn - 1) - {fraction!r} * (n - 1))) * v END) AS {name}")
    # Interpolated: Django's own SQL for the queryset and numbers from PERCENTILES; values are params.
    sql = (
        f"SELECT bucket, grp, {', '.join(sums)} FROM ({inner_sql}) ranked "  # noqa: S608
        f"WHERE {' OR '.join(picks)} GROUP BY bucket, grp"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {
            (_bucket_key(row[0]), row[1]): dict(zip(PERCENTILES, row[2:], strict=True)) for row in cursor.fetchall()
        }


# Records keep no model name a client made up (see request_record_create): every request
# that named no usable model is one group, however many names were tried.
UNKNOWN_MODEL = "(unknown)"


def _group_labels(group_by: str, keys) -> dict:
    if group_by == "model":
        return {k: k or UNKNOWN_MODEL for k in keys}
    if group_by != "key":
        return {k: k or "(none)" for k in keys}
    names = {
        pk: f"{name} ({prefix})"
        for pk, name, prefix in ApiKey.objects.filter(pk__in=[k for k in keys if k is not None]).values_list(
            "pk", "name", "prefix"
        )
    }
    return {k: names.get(k, f"key #{k}") if k is not None else "(no key)" for k in keys}


def request_dashboard(*, window: str = "hour", group_by: str = "model", now: dt.datetime | None = None) -> Dashboard:
    """Per-bucket request rate, token throughput, TTFT and latency percentiles and error rate, per group."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    now = now or timezone.now()
    start, buckets, step = _window_bounds(window, now)
    _, unit, _ = WINDOWS[window]
    group_column = GROUPS[group_by]
    records = RequestRecord.objects.filter(created_at__gte=start, created_at__lt=buckets[-1] + step)

    aggregates = {
        "requests": Count("id"),
        "completion_tokens": Sum("completion_tokens"),
        "errors": Count("id", filter=Q(status_code__gte=400)),
    }
    on_postgres = connection.vendor == "postgresql"
    if on_postgres:
        for metric, column in PERCENTILE_COLUMNS.items():
            for name, fraction in PERCENTILES.items():
                aggregates[f"{metric}_{name}"] = PercentileCont(column, fraction)
    # django-stubs types a values() row as a TypedDict of the named fields only; the aggregates
    # annotated from a dict are in every row too, so the rows are read as plain dicts.
    rows = cast(
        "QuerySet[RequestRecord, dict[str, Any]]",
        records.annotate(bucket=Trunc("created_at", unit), grp=F(group_column))
        .values("bucket", "grp")
        .annotate(**aggregates)
        .order_by(),
    )
    cells = {(_bucket_key(row["bucket"]), row["grp"]): row for row in rows}
    if not on_postgres:
        for metric, column in PERCENTILE_COLUMNS.items():
            for key, values in _percentiles_by_window_functions(records, unit, group_column, column).items():
                cells[key].update({f"{metric}_{name}": value for name, value in values.items()})

    totals: dict = {}
    for (_, grp), row in cells.items():
        totals[grp] = totals.get(grp, 0) + row["requests"]
    labels = _group_labels(group_by, list(totals))
    order = sorted(totals, key=lambda g: (-totals[g], labels[g]))
    index = {bucket: i for i, bucket in enumerate(buckets)}
    # Rates divide by the time each bucket covers. The newest bucket is still filling, so it
    # covers only the time since it began; dividing by the whole step would make it read low.
    covered = [step.total_seconds()] * len(buckets)
    covered[-1] = min(step.total_seconds(), max(MIN_COVERED_SECONDS, (now - buckets[-1]).total_seconds()))
    series = {
        metric: {
            labels[g]: [0.0 if metric in ("requests_per_minute", "completion_tokens_per_second") else None]
            * len(buckets)
            for g in order
        }
        for metric, _, _ in METRICS
    }
    for (bucket, grp), row in cells.items():
        i, label = index.get(bucket), labels[grp]
        if i is None:
            continue
        series["requests_per_minute"][label][i] = row["requests"] * 60 / covered[i]
        series["completion_tokens_per_second"][label][i] = (row["completion_tokens"] or 0) / covered[i]
        series["error_rate"][label][i] = 100 * row["errors"] / row["requests"]
        for metric in PERCENTILE_COLUMNS:
            for name in PERCENTILES:
                series[f"{metric}_{name}"][label][i] = row.get(f"{metric}_{name}")
    return Dashboard(
        window=window, group_by=group_by, buckets=buckets, series=series, totals={labels[g]: totals[g] for g in order}
    )
