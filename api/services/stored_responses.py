"""Keeping `/v1/responses` answers for their key, and removing them."""

from __future__ import annotations

from typing import Any

from models_registry.models import ApiKey

from ..models import StoredResponse


async def stored_response_save(
    *, key: ApiKey, response_id: str, body: dict[str, Any], input_items: list[dict[str, Any]]
) -> StoredResponse:
    """Store a finished response with the conversation that led to it (one INSERT)."""
    return await StoredResponse.objects.acreate(id=response_id, api_key=key, body=body, input_items=input_items)


async def stored_response_delete(*, key: ApiKey, response_id: str) -> bool:
    """Delete the key's response with this id; False if the key has none such."""
    deleted, _ = await StoredResponse.objects.filter(pk=response_id, api_key=key).adelete()
    return deleted > 0
