"""Reads from the registry."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from .models import ApiKey, ServedModel, WorkerRegistration


def served_models_for_key(*, key: ApiKey) -> list[ServedModel]:
    """Enabled models the key may use: its allowlist, or every enabled model if it has none."""
    allowed = list(key.allowed_models.filter(enabled=True))
    if allowed or key.allowed_models.exists():
        return allowed
    return list(ServedModel.objects.filter(enabled=True))


def served_model_for_key(*, key: ApiKey, name: str) -> ServedModel | None:
    """The enabled model called `name` (or aliased so) that the key may use, else None."""
    for model in served_models_for_key(key=key):
        if name == model.name or name in (model.aliases or []):
            return model
    return None


def served_model_by_name(*, name: str) -> ServedModel | None:
    """The model registered under exactly `name`, enabled or not."""
    return ServedModel.objects.filter(name=name).first()


def enabled_model_names() -> list[str]:
    return list(ServedModel.objects.filter(enabled=True).values_list("name", flat=True))


def active_worker_ids() -> list[str]:
    """Workers not marked dead; their liveness keys in Redis tell which are really alive."""
    return list(WorkerRegistration.objects.exclude(state=WorkerRegistration.State.DEAD)
                .values_list("worker_id", flat=True))


def ready_workers_for(*, model_name: str) -> list[WorkerRegistration]:
    """Workers that are ready, heard from recently, and host `model_name`."""
    fresh = timezone.now() - dt.timedelta(seconds=settings.WORKER_DEAD_AFTER_SECONDS)
    candidates = WorkerRegistration.objects.filter(state=WorkerRegistration.State.READY, last_heartbeat__gte=fresh)
    return [w for w in candidates if model_name in (w.hosted_models or [])]


def api_key_usage_by_day(*, key: ApiKey, days: int = 30) -> list[dict]:
    """Requests and tokens of `key` per UTC day over the last `days` days, newest first.

    Each row: day, requests, prompt_tokens, completion_tokens, total_tokens. Every recorded
    request counts, including rejected and failed ones (their tokens are usually 0).
    """
    from monitoring.models import RequestRecord  # monitoring depends on this app, not the reverse

    since = timezone.now() - dt.timedelta(days=days)
    rows = (RequestRecord.objects.filter(api_key=key, created_at__gte=since)
            .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
            .values("day")
            .annotate(requests=Count("id"), prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
                      completion_tokens=Coalesce(Sum("completion_tokens"), 0))
            .order_by("-day"))
    return [{**row, "total_tokens": row["prompt_tokens"] + row["completion_tokens"]} for row in rows]
