"""The OpenAPI description of `/v1/responses` and its stored responses (see api/openai/schema.py)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from ...typed_shapes import serializer_for
from ..schema import _INTERNAL, _RETRY_AFTER, _UNAUTHORIZED, _WWW_AUTHENTICATE, ErrorSerializer, _error, _view_schema
from . import shapes
from .serializers import InputItemsQuerySerializer, ResponseRequestSerializer


class _ResponseEventSerializer(serializers.Serializer):
    """One Server-Sent Event of a streamed response."""


class ResponseEventScheme(OpenApiSerializerExtension):
    """`event:` names the type; `data:` holds the event (by reference)."""

    target_class = _ResponseEventSerializer

    def map_serializer(self, auto_schema, direction):
        event = auto_schema.resolve_serializer(serializer_for(shapes.ResponseStreamEvent), direction).ref
        return {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "description": "The event's `type`."},
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": event},
            },
        }


# For tests that validate streamed events against the served document's components.
EVENT = {"$ref": "#/components/schemas/ResponseStreamEvent"}
RESPONSE = {"$ref": "#/components/schemas/ResponseObject"}

_BODY = {
    "model": "smollm2",
    "instructions": "You are terse.",
    "input": "Say hello to the sea.",
    "max_output_tokens": 16,
    "temperature": 0,
}
EXAMPLES = [
    OpenApiExample("Text", value=_BODY, request_only=True),
    OpenApiExample("Streamed", value={**_BODY, "stream": True}, request_only=True),
]
_OK = (
    "`application/json`: the response object (`stream` false). `text/event-stream` (`stream` true): "
    "`response.created`, `response.in_progress`, then per output item `response.output_item.added`, its "
    "content part or argument events and `response.output_item.done`, ending with `response.completed` "
    "(or `response.incomplete` at `max_output_tokens`). An error after the stream started ends it with "
    "`response.failed`, whose response carries the error."
)
_RESPONSE_ID = OpenApiParameter(
    "response_id", OpenApiTypes.STR, location=OpenApiParameter.PATH, description="A `resp_...` id this key stored."
)
_NOT_FOUND = _error("This key stored no response with this id (another key's are not found either) (`not_found`).")

CREATE_RESPONSE = _view_schema(
    "post",
    operation_id="createResponse",
    summary="Create a model response (OpenAI's Responses API)",
    tags=["Responses"],
    request=ResponseRequestSerializer,
    examples=EXAMPLES,
    parameters=[_WWW_AUTHENTICATE, _RETRY_AFTER],
    responses={
        (200, "application/json"): OpenApiResponse(serializer_for(shapes.ResponseObject), description=_OK),
        (200, "text/event-stream"): OpenApiResponse(_ResponseEventSerializer, description=_OK),
        400: _error(
            "Bad JSON, wrong types, unknown fields (`invalid_value`, `invalid_json`), context overflow "
            "(`context_length_exceeded`), a parameter or feature not supported here (`unsupported_parameter`)."
        ),
        401: _UNAUTHORIZED,
        404: _error("Unknown model (`model_model_found`) or `previous_response_id` (`not_found`)."),
        415: _error("The body is not `application/json` (`unsupported_media_type`)."),
        429: _error(
            "A per-key limit was reached (`rate_limit_exceeded`), or the model's waiting queue is full "
            "(`model_busy`); `Retry-After` says when to try again."
        ),
        500: _error("The engine failed (`engine_error`) or an unexpected server error (`internal_error`)."),
        502: _error("The worker running the request died (`worker_lost`, distributed mode)."),
        503: _error("The model's engine cannot run here, or no worker could take the job (`service_unavailable`)."),
    },
)

RETRIEVE_RESPONSE = _view_schema(
    "get",
    operation_id="getResponse",
    summary="Retrieve a stored response",
    tags=["Responses"],
    parameters=[_RESPONSE_ID, _WWW_AUTHENTICATE],
    responses={200: serializer_for(shapes.ResponseObject), 401: _UNAUTHORIZED, 404: _NOT_FOUND, 500: _INTERNAL},
)

DELETE_RESPONSE = _view_schema(
    "delete",
    operation_id="deleteResponse",
    summary="Delete a stored response",
    tags=["Responses"],
    parameters=[_RESPONSE_ID, _WWW_AUTHENTICATE],
    responses={200: serializer_for(shapes.DeletedResponse), 401: _UNAUTHORIZED, 404: _NOT_FOUND, 500: _INTERNAL},
)

LIST_INPUT_ITEMS = _view_schema(
    "get",
    operation_id="listInputItems",
    summary="The conversation items that led to a stored response",
    tags=["Responses"],
    parameters=[_RESPONSE_ID, InputItemsQuerySerializer, _WWW_AUTHENTICATE],
    responses={
        200: serializer_for(shapes.InputItemList),
        400: _error("A query parameter out of range (`invalid_value`)."),
        401: _UNAUTHORIZED,
        404: _NOT_FOUND,
        500: _INTERNAL,
    },
)

__all__ = ["ErrorSerializer"]
