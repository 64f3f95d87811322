"""Keeping `/v1/responses` answers for their key, and removing them."""

from __future__ import annotations

from typing import Any

from models_registry.models import ApiKey

from ..models import StoredResponse
from ..selectors import stored_responses_kept_since, stored_responses_of


async def stored_response_save(
    *, key: ApiKey, response_id: str, body: dict[str, Any], input_items: list[dict[str, Any]]
) -> StoredResponse:
    """Store a finished response with the conversation that led to it (one INSERT)."""
    return await StoredResponse.objects.acreate(id=response_id, api_key=key, body=body, input_items=input_items)


async def stored_response_delete(*, key: ApiKey, response_id: str) -> bool:
    """Delete the key's response with this id; False if the key has none such (or it expired)."""
    deleted, _ = await stored_responses_of(key).filter(pk=response_id).adelete()
    return deleted > 0


def stored_responses_prune() -> int:
    """Delete the responses past RESPONSE_RETENTION_DAYS (none when it is 0); returns how many.

    One DELETE: nothing references a stored response and nothing reads an expired one (the
    selector hides them), so unlike request records there is no lock worth batching around.
    """
    since = stored_responses_kept_since()
    if since is None:
        return 0
    deleted, _ = StoredResponse.objects.filter(created_at__lt=since).delete()
    return deleted
