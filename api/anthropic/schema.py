"""The OpenAPI description of the Messages routes, from the serializers that parse their bodies and
the TypedDicts their builders return (api/anthropic/serializers.py, api/anthropic/shapes.py).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers

from ..typed_shapes import serializer_for
from .serializers import CountTokensRequestSerializer, MessagesRequestSerializer
from .shapes import STREAM_EVENTS, AnthropicError, AnthropicMessage, MessageTokenCount

ErrorSerializer = serializer_for(AnthropicError)
# The security requirement of these routes: the Bearer key, or the same key in `x-api-key`.
AUTH: list[Any] = [{"ApiKeyAuth": []}, {"XApiKeyAuth": []}]  # requirement objects, which the stubs type as names


class AnthropicStreamEventSerializer(serializers.Serializer):
    """One Server-Sent Event of a streamed message."""


class StreamEventScheme(OpenApiSerializerExtension):
    """`event:` names the event's type and `data:` holds it (each event type by reference)."""

    target_class = AnthropicStreamEventSerializer

    def map_serializer(self, auto_schema, direction):
        refs = [auto_schema.resolve_serializer(serializer_for(shape), direction).ref for shape in STREAM_EVENTS]
        error = auto_schema.resolve_serializer(ErrorSerializer, direction).ref
        names = [shape.__annotations__["type"].__args__[0] for shape in STREAM_EVENTS]
        return {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "enum": [*names, "error"], "description": "The `type` of `data`."},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"oneOf": [*refs, error]},
                },
            },
        }


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


_HEADERS = [
    OpenApiParameter(
        "anthropic-version",
        OpenApiTypes.STR,
        location=OpenApiParameter.HEADER,
        required=False,
        description="Accepted and not required; this API has one version.",
    ),
    OpenApiParameter(
        "Retry-After",
        OpenApiTypes.INT,
        location=OpenApiParameter.HEADER,
        response=[429, 529],
        description="Seconds to wait: the rate limit's window, or the model queue's drain estimate.",
    ),
]
_ERRORS = {
    400: _error(
        "`invalid_request_error`: bad JSON, wrong types, unknown fields, context overflow, or a feature "
        "the model's engine lacks (`top_k`, image blocks, tools on an engine without them)."
    ),
    401: _error("`authentication_error`: missing, wrong, expired or revoked API key."),
    404: _error("`not_found_error`: unknown model, or one outside the key's allowlist."),
    413: _error("`request_too_large`: the body is over the server's limit."),
    415: _error("`invalid_request_error`: the body is not `application/json`."),
    429: _error("`rate_limit_error`: a per-key limit was reached; `Retry-After` says when to try again."),
    500: _error("`api_error`: the engine failed, or an unexpected server error."),
    502: _error("`api_error`: the worker running the request died (distributed mode)."),
    503: _error("`overloaded_error`: the model's engine cannot run here, or no worker could take the job."),
    529: _error("`overloaded_error`: the model's waiting queue is full; `Retry-After` says when to try again."),
}
_BODY = {
    "model": "smollm2",
    "system": "You are terse.",
    "messages": [{"role": "user", "content": "Say hello to the sea."}],
    "max_tokens": 16,
    "temperature": 0,
}

MESSAGES = extend_schema_view(
    post=extend_schema(
        operation_id="createMessage",
        summary="Create a message (Anthropic Messages API)",
        tags=["Anthropic"],
        auth=AUTH,
        request=MessagesRequestSerializer,
        parameters=_HEADERS,
        examples=[
            OpenApiExample("Message", value=_BODY, request_only=True),
            OpenApiExample("Streamed", value={**_BODY, "stream": True}, request_only=True),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(
                serializer_for(AnthropicMessage), description="The whole message."
            ),
            (200, "text/event-stream"): OpenApiResponse(
                AnthropicStreamEventSerializer,
                description="`stream` true: message_start, content_block_start, ping, content_block_delta..., "
                "content_block_stop, message_delta, message_stop; an error after the stream started is an "
                "`event: error`. Its schema describes one event.",
            ),
            **_ERRORS,
        },
    )
)

COUNT_TOKENS = extend_schema_view(
    post=extend_schema(
        operation_id="countMessageTokens",
        summary="Count a message's input tokens (Anthropic Messages API)",
        tags=["Anthropic"],
        auth=AUTH,
        request=CountTokensRequestSerializer,
        parameters=_HEADERS[:1],
        examples=[
            OpenApiExample("Count", value={k: v for k, v in _BODY.items() if k in ("model", "system", "messages")})
        ],
        responses={200: serializer_for(MessageTokenCount), **{s: r for s, r in _ERRORS.items() if s != 529}},
    )
)
