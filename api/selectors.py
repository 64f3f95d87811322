"""Reads of what the API keeps (api.models)."""

from __future__ import annotations

from models_registry.models import ApiKey

from .models import StoredResponse


async def stored_response_for_key(*, key: ApiKey, response_id: str) -> StoredResponse | None:
    """The stored response with this id if `key` stored it; None otherwise (another key's is not its to see)."""
    return await StoredResponse.objects.filter(pk=response_id, api_key=key).afirst()
