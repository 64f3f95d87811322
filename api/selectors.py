"""Reads of what the API keeps (api.models)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from models_registry.models import ApiKey

from .models import StoredResponse


def stored_responses_kept_since() -> dt.datetime | None:
    """The oldest creation time a stored response may have and still be served; None keeps all."""
    days = settings.RESPONSE_RETENTION_DAYS
    return timezone.now() - dt.timedelta(days=days) if days > 0 else None


def stored_responses_of(key: ApiKey) -> QuerySet[StoredResponse]:
    """The key's stored responses within RESPONSE_RETENTION_DAYS: an expired one is gone for the
    API (read, continued, deleted) even before the daily prune deletes its row."""
    kept = StoredResponse.objects.filter(api_key=key)
    since = stored_responses_kept_since()
    return kept if since is None else kept.filter(created_at__gte=since)


async def stored_response_for_key(*, key: ApiKey, response_id: str) -> StoredResponse | None:
    """The stored response with this id if `key` stored it and it has not expired; None otherwise
    (another key's is not its to see)."""
    return await stored_responses_of(key).filter(pk=response_id).afirst()
