"""Reads: the running totals for /metrics (monitoring.metric_totals), per served model, and a key's usage.

Every web and worker process adds to the same totals table as it records requests, so any
process reads one consistent view without shared metrics state, and a scrape reads a few rows
per model, however many records there are.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from models_registry.models import ApiKey, ServedModel

from .metric_totals import ModelTotals
from .models import MetricTotal, RequestRecord


def request_totals() -> dict[str, ModelTotals]:
    """Totals per served model (zero for enabled models without requests). Aliases count as their model."""
    canonical: dict[str, str] = {}
    enabled: list[str] = []
    for name, aliases, is_enabled in ServedModel.objects.values_list("name", "aliases", "enabled"):
        canonical.update(dict.fromkeys(aliases or [], name))
        canonical[name] = name
        if is_enabled:
            enabled.append(name)
    totals = {name: ModelTotals() for name in enabled}
    for model_name, series, value in MetricTotal.objects.values_list("model_name", "series", "value"):
        totals.setdefault(canonical.get(model_name, model_name), ModelTotals()).add(series, value)
    return totals


def api_key_usage_by_day(*, key: ApiKey, days: int = 30) -> list[dict]:
    """Requests and tokens of `key` per UTC day over the last `days` days, newest first.

    Each row: day, requests, prompt_tokens, completion_tokens, total_tokens. Every recorded
    request counts, including rejected and failed ones (their tokens are usually 0).
    """
    since = timezone.now() - dt.timedelta(days=days)
    rows = (
        RequestRecord.objects.filter(api_key=key, created_at__gte=since)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day")
        .annotate(
            requests=Count("id"),
            prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
            completion_tokens=Coalesce(Sum("completion_tokens"), 0),
        )
        .order_by("-day")
    )
    return [{**row, "total_tokens": row["prompt_tokens"] + row["completion_tokens"]} for row in rows]
