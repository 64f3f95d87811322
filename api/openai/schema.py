"""The OpenAPI description of the API (drf-spectacular), derived from the definitions the code uses.

Request bodies are the serializers that parse them (api/openai/serializers.py). Response bodies
and stream chunks are the TypedDicts their builders return (api/openai/shapes.py, api/errors.py,
api/services/), documented through serializers derived from them (api/typed_shapes.py). What is
written here is only what belongs to the operations: statuses, headers, examples, descriptions.
Views carry these as decorators only.
"""

from __future__ import annotations

import functools

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
)
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers

from ..errors import Error
from ..services.models import Model, ModelList
from ..services.status import Health, SystemStatus
from ..typed_shapes import serializer_for
from . import shapes
from .embeddings import EmbeddingList, EmbeddingRequestSerializer
from .format import STREAM_DONE
from .serializers import ChatCompletionRequestSerializer, CompletionRequestSerializer
from .tokenize import Detokenized, DetokenizeRequestSerializer, TokenizeRequestSerializer, Tokens

# --- Request side: what the strict request serializers accept --------------------------------


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer <key>`, as ApiKeyAuthentication reads it."""

    target_class = "api.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        scheme = build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")
        return {**scheme, "description": "An API key issued in the admin (`ipk-...`)."}


class StrictSerializerScheme(OpenApiSerializerExtension):
    """Request bodies reject unknown fields, so the schema says `additionalProperties: false`."""

    target_class = "api.openai.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        properties = schema["properties"]
        # What DRF enforces but drf-spectacular leaves out: no blank strings, no empty lists.
        for name, field in self.target.fields.items():
            if isinstance(field, serializers.CharField) and not field.allow_blank:
                properties[name].setdefault("minLength", 1)
            if isinstance(field, (serializers.ListSerializer, serializers.ListField)) and not field.allow_empty:
                properties[name].setdefault("minItems", 1)
        # Only a serializer's own docstring describes it; StrictSerializer's is about the mechanism.
        schema.pop("description", None)
        if type(self.target).__dict__.get("__doc__"):
            schema["description"] = type(self.target).__doc__
        return {**schema, "additionalProperties": False}


# --- Response side: the TypedDicts the builders return, documented through derived serializers ---

ErrorSerializer = serializer_for(Error)


class _StreamEventSerializer(serializers.Serializer):
    """One Server-Sent Event of a streamed completion; `chunk` is the TypedDict of its chunks."""

    chunk: type


class StreamEventScheme(OpenApiSerializerExtension):
    """`data:` holds a chunk, an in-band error body, or `[DONE]` (chunks and errors by reference)."""

    target_class = _StreamEventSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        chunk = auto_schema.resolve_serializer(serializer_for(type(self.target).chunk), direction).ref
        error = auto_schema.resolve_serializer(ErrorSerializer, direction).ref
        return {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "description": "A JSON chunk, an error body if the stream fails after it started, "
                    "then the literal `[DONE]`.",
                    "anyOf": [
                        {"const": STREAM_DONE},
                        {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"oneOf": [chunk, error]},
                        },
                    ],
                },
            },
        }


def _stream_event(chunk: type) -> type[_StreamEventSerializer]:
    """The event serializer (component `<chunk>Event`) for chunks of one TypedDict."""
    return type(f"{chunk.__name__}EventSerializer", (_StreamEventSerializer,), {"chunk": chunk, "__doc__": None})


# For tests that validate streamed chunks against the served document's components.
CHAT_CHUNK = {"$ref": "#/components/schemas/ChatCompletionChunk"}
TEXT_CHUNK = {"$ref": "#/components/schemas/TextCompletionChunk"}


# --- Per-operation annotations ----------------------------------------------------------------


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


_UNAUTHORIZED = _error("Missing, wrong, expired or revoked API key (`invalid_api_key`).")
_INTERNAL = _error("An unexpected server error (`internal_error`).")
_WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate",
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    response=[401],
    description='`Bearer realm="api"`',
)
_RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    response=[429],
    description="Seconds to wait before retrying: the rate limit's window, or the model queue's drain estimate.",
)


def _view_schema(method_name: str, **kwargs):
    """Like extend_schema_view, but keeps an inherited async view method async.

    extend_schema_view wraps an inherited method in a plain (sync) function to annotate it
    without touching the parent; adrf then sees a sync handler, dispatches it synchronously
    and fails on the returned coroutine (a 500 on every request).
    """

    def decorator(view):
        method = getattr(view, method_name)
        if method_name not in view.__dict__:

            @functools.wraps(method)
            async def isolated(self, request, *args, **kw):
                return await method(self, request, *args, **kw)

            isolated.__dict__.pop("kwargs", None)  # annotations of the parent stay the parent's
            setattr(view, method_name, isolated)
        return extend_schema_view(**{method_name: extend_schema(**kwargs)})(view)

    return decorator


# Request examples for the docs page, with the bundled model; tests/api/test_openapi.py sends each.
_CHAT_BODY = {
    "model": "smollm2",
    "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the sea."}],
    "max_tokens": 16,
    "temperature": 0,
}
CHAT_EXAMPLES = [
    OpenApiExample("Chat", value=_CHAT_BODY, request_only=True),
    OpenApiExample(
        "Streamed",
        summary="Streamed, with usage",
        request_only=True,
        value={**_CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}},
    ),
]
_TEXT_BODY = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 16, "stop": ["\n"], "seed": 7}
TEXT_EXAMPLES = [
    OpenApiExample("Text", value=_TEXT_BODY, request_only=True),
    OpenApiExample("Streamed", value={**_TEXT_BODY, "stream": True}, request_only=True),
]


def _completion_schema(
    *, operation_id: str, summary: str, request, body: type, object_name: str, chunk: type, examples: list
):
    ok_description = (
        f"`application/json`: the whole answer (`stream` false). `text/event-stream` (`stream` true): "
        f"one `data: <{object_name} JSON>` event per chunk, ending with `data: [DONE]`; an error after "
        f'the stream started arrives as a `data: {{"error": ...}}` event. Its schema describes one event.'
    )
    return _view_schema(
        "post",
        operation_id=operation_id,
        summary=summary,
        tags=["Completions"],
        request=request,
        examples=examples,
        parameters=[_WWW_AUTHENTICATE, _RETRY_AFTER],
        responses={
            (200, "application/json"): OpenApiResponse(serializer_for(body), description=ok_description),
            (200, "text/event-stream"): OpenApiResponse(_stream_event(chunk), description=ok_description),
            400: _error(
                "Bad JSON, wrong types, unknown fields (`invalid_value`, `invalid_json`), context "
                "overflow (`context_length_exceeded`) or a feature the engine lacks "
                "(`unsupported_parameter`)."
            ),
            401: _UNAUTHORIZED,
            404: _error("Unknown model, or one outside the key's allowlist (`model_not_found`)."),
            415: _error("The body is not `application/json` (`unsupported_media_type`)."),
            429: _error(
                "A per-key limit was reached (`rate_limit_exceeded`), or the model's waiting queue is "
                "full (`model_busy`); `Retry-After` says when to try again."
            ),
            500: _error("The engine failed (`engine_error`) or an unexpected server error (`internal_error`)."),
            502: _error("The worker running the request died (`worker_lost`, distributed mode)."),
            503: _error("The model's engine cannot run here, or no worker could take the job (`service_unavailable`)."),
        },
    )


CHAT_COMPLETIONS = _completion_schema(
    operation_id="createChatCompletion",
    summary="Create a chat completion",
    request=ChatCompletionRequestSerializer,
    body=shapes.ChatCompletion,
    object_name="chat.completion.chunk",
    chunk=shapes.ChatCompletionChunk,
    examples=CHAT_EXAMPLES,
)
COMPLETIONS = _completion_schema(
    operation_id="createCompletion",
    summary="Create a legacy text completion",
    request=CompletionRequestSerializer,
    body=shapes.TextCompletion,
    object_name="text_completion",
    chunk=shapes.TextCompletionChunk,
    examples=TEXT_EXAMPLES,
)

HEALTH = _view_schema(
    "get",
    operation_id="health",
    summary="Liveness and readiness",
    tags=["Health"],
    auth=[],
    responses={
        200: OpenApiResponse(serializer_for(Health), description="At least one enabled model has a ready engine."),
        503: OpenApiResponse(serializer_for(Health), description="No engine is ready yet; `reason` says why."),
        500: _INTERNAL,
    },
)

MODEL_LIST = _view_schema(
    "get",
    operation_id="listModels",
    summary="List the models this key may use",
    tags=["Models"],
    parameters=[_WWW_AUTHENTICATE],
    responses={200: serializer_for(ModelList), 401: _UNAUTHORIZED, 500: _INTERNAL},
)

MODEL_DETAIL = _view_schema(
    "get",
    operation_id="retrieveModel",
    summary="Retrieve a model by name or alias",
    tags=["Models"],
    parameters=[
        OpenApiParameter(
            "model_id",
            OpenApiTypes.STR,
            location=OpenApiParameter.PATH,
            description="A model's name or one of its aliases.",
        ),
        _WWW_AUTHENTICATE,
    ],
    responses={
        200: serializer_for(Model),
        401: _UNAUTHORIZED,
        404: _error("Unknown model, or one outside the key's allowlist (`model_not_found`)."),
        500: _INTERNAL,
    },
)

SYSTEM_STATUS = _view_schema(
    "get",
    operation_id="systemStatus",
    summary="Platform facts, loaded engines, CPU/memory/disk",
    tags=["System"],
    parameters=[_WWW_AUTHENTICATE],
    responses={200: serializer_for(SystemStatus), 401: _UNAUTHORIZED, 500: _INTERNAL},
)


def _one_shot_schema(*, operation_id: str, summary: str, tags: list[str], request, body: type, examples: list):
    """An operation that answers one JSON body (embeddings, tokenize, detokenize)."""
    return _view_schema(
        "post",
        operation_id=operation_id,
        summary=summary,
        tags=tags,
        request=request,
        examples=examples,
        parameters=[_WWW_AUTHENTICATE, _RETRY_AFTER],
        responses={
            200: serializer_for(body),
            400: _error(
                "Bad JSON, wrong types, unknown fields (`invalid_value`, `invalid_json`), an input longer than "
                "the context (`context_length_exceeded`), or a model of the other task or whose engine "
                "lacks this (`unsupported_parameter`, `model_task_mismatch`, param `model`)."
            ),
            401: _UNAUTHORIZED,
            404: _error("Unknown model, or one outside the key's allowlist (`model_not_found`)."),
            415: _error("The body is not `application/json` (`unsupported_media_type`)."),
            429: _error("A per-key limit was reached (`rate_limit_exceeded`); `Retry-After` says when to try again."),
            500: _error("The engine failed (`engine_error`) or an unexpected server error (`internal_error`)."),
            502: _error("The worker running the request died (`worker_lost`, distributed mode)."),
            503: _error("The model's engine cannot run here, or no worker could take the job (`service_unavailable`)."),
        },
    )


EMBEDDINGS = _one_shot_schema(
    operation_id="createEmbedding",
    summary="Create embedding vectors",
    tags=["Embeddings"],
    request=EmbeddingRequestSerializer,
    body=EmbeddingList,
    examples=[
        OpenApiExample(
            "Two texts",
            value={"model": "smollm2-embed", "input": ["The sea is calm.", "A quiet ocean."]},
            request_only=True,
        ),
        OpenApiExample(
            "Base64",
            value={"model": "smollm2-embed", "input": "The sea is calm.", "encoding_format": "base64"},
            request_only=True,
        ),
    ],
)
TOKENIZE = _one_shot_schema(
    operation_id="tokenize",
    summary="Token ids of a prompt or of chat messages (vLLM's and llama-server's /tokenize)",
    tags=["Tokenizer"],
    request=TokenizeRequestSerializer,
    body=Tokens,
    examples=[
        OpenApiExample("Prompt", value={"model": "smollm2", "prompt": "Hello, sea."}, request_only=True),
        OpenApiExample(
            "Messages",
            value={"model": "smollm2", "messages": [{"role": "user", "content": "Hello, sea."}]},
            request_only=True,
        ),
    ],
)
DETOKENIZE = _one_shot_schema(
    operation_id="detokenize",
    summary="The text of token ids (vLLM's and llama-server's /detokenize)",
    tags=["Tokenizer"],
    request=DetokenizeRequestSerializer,
    body=Detokenized,
    examples=[OpenApiExample("Ids", value={"model": "smollm2", "tokens": [19556, 28, 3426, 30]}, request_only=True)],
)
