"""Stored responses as the API shows them: retrieve, delete, input items, and a chain's conversation."""

from __future__ import annotations

from typing import Any, cast

from models_registry.models import ApiKey
from serving.errors import PlatformError

from ...selectors import stored_response_for_key
from ...services.stored_responses import stored_response_delete
from .format import deleted_body
from .shapes import DeletedResponse, InputItem, InputItemList, ResponseObject


class ResponseNotFound(PlatformError):
    status = 404
    code = "not_found"


def _not_found(response_id: str, param: str | None = None) -> ResponseNotFound:
    # The id is the client's own string: only a well-formed one is named back.
    named = f" with id '{response_id}'" if response_id.isascii() and response_id.replace("_", "").isalnum() else ""
    return ResponseNotFound(f"Response{named} not found.", param=param)


async def response_retrieve(*, key: ApiKey, response_id: str) -> ResponseObject:
    """The stored response; 404 if this key stored none with this id."""
    stored = await stored_response_for_key(key=key, response_id=response_id)
    if stored is None:
        raise _not_found(response_id)
    return cast(ResponseObject, stored.body)


async def response_delete(*, key: ApiKey, response_id: str) -> DeletedResponse:
    """Delete the key's stored response; 404 if it has none with this id."""
    if not await stored_response_delete(key=key, response_id=response_id):
        raise _not_found(response_id)
    return deleted_body(response_id)


async def response_input_items(
    *, key: ApiKey, response_id: str, order: str = "desc", limit: int = 20, after: str | None = None
) -> InputItemList:
    """A page of the conversation that led to the stored response, newest first unless `order` is asc."""
    stored = await stored_response_for_key(key=key, response_id=response_id)
    if stored is None:
        raise _not_found(response_id)
    items = cast(list[InputItem], stored.input_items)
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


async def conversation_before(*, key: ApiKey, response_id: str) -> list[dict[str, Any]]:
    """The items a response continuing `response_id` starts from: its conversation, then its output."""
    stored = await stored_response_for_key(key=key, response_id=response_id)
    if stored is None:
        raise _not_found(response_id, param="previous_response_id")
    output = [{k: v for k, v in item.items() if k != "status"} for item in stored.body.get("output", [])]
    return [*stored.input_items, *output]
