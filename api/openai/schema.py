"""The OpenAPI description of the API (drf-spectacular): response shapes, errors, auth, streaming.

Views carry these as decorators only. The response serializers here are never used to render
anything: they describe what api/openai/format.py, models.py and status.py build, and
tests/api/test_openapi.py runs schemathesis against a live server to keep the two in step.
"""

from __future__ import annotations

import functools

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
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

from .serializers import ChatCompletionRequestSerializer, CompletionRequestSerializer

FINISH_REASONS = ("stop", "length")


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
        properties.update(_PROPERTY_OVERRIDES.get(type(self.target).__name__, {}))
        # Only a serializer's own docstring describes it; StrictSerializer's is about the mechanism.
        schema.pop("description", None)
        if type(self.target).__dict__.get("__doc__"):
            schema["description"] = type(self.target).__doc__
        return {**schema, "additionalProperties": False}


class StopFieldScheme(OpenApiSerializerFieldExtension):
    target_class = "api.openai.serializers.StopField"

    def map_serializer_field(self, auto_schema, direction):
        return {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ],
            "description": "Up to 4 sequences where generation stops; the answer does not contain them.",
        }


class LogitBiasFieldScheme(OpenApiSerializerFieldExtension):
    target_class = "api.openai.serializers.LogitBiasField"

    def map_serializer_field(self, auto_schema, direction):
        return {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]{1,9}$"},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
            "maxProperties": 1024,
            "description": "Token ids (of the model's vocabulary) to a bias added to their logits before "
                           "sampling; -100 bans a token. 400 unsupported_parameter on engines without it.",
        }


class MessageContentFieldScheme(OpenApiSerializerFieldExtension):
    target_class = "api.openai.serializers.MessageContentField"

    def map_serializer_field(self, auto_schema, direction):
        text_part = {
            "type": "object",
            "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
            "required": ["type", "text"],
        }
        return {
            "oneOf": [{"type": "string"}, {"type": "array", "items": text_part}],
            "description": "A string, or a list of text parts (other part types get 400 unsupported_parameter).",
        }


# Fields typed JSONField on the serializer (they take several shapes), described precisely here.
_PROPERTY_OVERRIDES = {
    "CompletionRequestSerializer": {
        "prompt": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1},
            ],
            "description": "One prompt: a string or a one-element list of strings. Batched and token-id "
                           "prompts get 400 unsupported_parameter.",
        },
    },
    "ChatCompletionRequestSerializer": {
        "tool_choice": {
            "oneOf": [
                {"type": "string", "enum": ["none", "auto", "required"]},
                {"type": "object", "required": ["type", "function"], "properties": {
                    "type": {"const": "function"},
                    "function": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                }},
                {"type": "null"},
            ],
            "description": "Anything but `none`, `auto` or null needs tools support: 400 unsupported_parameter "
                           "on engines without it.",
        },
        "response_format": {
            "oneOf": [
                {"type": "object", "required": ["type"], "properties": {
                    "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
                    "json_schema": {"type": "object"},
                }},
                {"type": "null"},
            ],
            "description": "Anything but `{\"type\": \"text\"}` needs structured output: 400 "
                           "unsupported_parameter on engines without it.",
        },
    },
}


# --- Response side: what the services build --------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField(help_text="`invalid_request_error` for 4xx, `server_error` for 5xx.")
    param = serializers.CharField(allow_null=True, help_text="The request field at fault, if any.")
    code = serializers.CharField(
        allow_null=True,
        help_text="e.g. `invalid_api_key`, `model_not_found`, `context_length_exceeded`, `unsupported_parameter`.",
    )


class ErrorSerializer(serializers.Serializer):
    """OpenAI's error body; every error status answers with it."""

    error = ErrorDetailSerializer()


class PromptTokensDetailsSerializer(serializers.Serializer):
    cached_tokens = serializers.IntegerField(min_value=0, help_text="Prompt tokens reused from the prefix cache.")


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    total_tokens = serializers.IntegerField(min_value=0)
    prompt_tokens_details = PromptTokensDetailsSerializer(
        required=False, help_text="Present when the model's engine has a prefix cache (llama_cpp).")


class _CompletionBaseSerializer(serializers.Serializer):
    id = serializers.CharField()
    created = serializers.IntegerField(help_text="Unix time in seconds.")
    model = serializers.CharField(help_text="The model name as the request gave it.")
    system_fingerprint = serializers.CharField(allow_null=True)
    usage = UsageSerializer()


class AssistantMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["assistant"])
    content = serializers.CharField(allow_blank=True)


class ChatTopLogprobSerializer(serializers.Serializer):
    token = serializers.CharField(allow_blank=True)
    logprob = serializers.FloatField(max_value=0)
    bytes = serializers.ListField(child=serializers.IntegerField(min_value=0, max_value=255),
                                  help_text="The token's UTF-8 bytes (a token may hold part of a character).")


class ChatTokenLogprobSerializer(ChatTopLogprobSerializer):
    top_logprobs = ChatTopLogprobSerializer(many=True, help_text="The `top_logprobs` most likely tokens at this "
                                                                 "position, most likely first.")


class ChatLogprobsSerializer(serializers.Serializer):
    """Log-probabilities of a chat choice's tokens (with `logprobs: true`), from the raw logits."""

    content = ChatTokenLogprobSerializer(many=True)
    refusal = serializers.CharField(allow_null=True)


class TextLogprobsSerializer(serializers.Serializer):
    """Log-probabilities of a legacy completion's tokens (with `logprobs: k`), from the raw logits."""

    tokens = serializers.ListField(child=serializers.CharField(allow_blank=True))
    token_logprobs = serializers.ListField(child=serializers.FloatField(max_value=0))
    top_logprobs = serializers.ListField(
        child=serializers.DictField(child=serializers.FloatField(max_value=0)),
        help_text="Per token: the k most likely tokens and the chosen one, to their log-probabilities.")
    text_offset = serializers.ListField(child=serializers.IntegerField(min_value=0))


# What a chat choice and a text choice share; each adds its `message` or `text`. (A comment, not a
# docstring: drf-spectacular would print a docstring as both schemas' description.)
class _ChoiceBaseSerializer(serializers.Serializer):
    index = serializers.IntegerField(min_value=0, help_text="Which of the `n` choices this is.")
    finish_reason = serializers.ChoiceField(choices=FINISH_REASONS)


class ChatChoiceSerializer(_ChoiceBaseSerializer):
    message = AssistantMessageSerializer()
    logprobs = ChatLogprobsSerializer(allow_null=True)


class ChatCompletionSerializer(_CompletionBaseSerializer):
    """A whole chat completion (`stream` false)."""

    object = serializers.ChoiceField(choices=["chat.completion"])
    choices = ChatChoiceSerializer(many=True)


class TextChoiceSerializer(_ChoiceBaseSerializer):
    text = serializers.CharField(allow_blank=True)
    logprobs = TextLogprobsSerializer(allow_null=True)


class TextCompletionSerializer(_CompletionBaseSerializer):
    """A whole legacy text completion (`stream` false)."""

    object = serializers.ChoiceField(choices=["text_completion"])
    choices = TextChoiceSerializer(many=True)


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The name asked for: a model's name or one of its aliases.")
    object = serializers.ChoiceField(choices=["model"])
    created = serializers.IntegerField(help_text="Unix time in seconds when the model was registered.")
    owned_by = serializers.CharField(allow_blank=True)


class ModelListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = ModelSerializer(many=True)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unavailable"])
    reason = serializers.CharField(help_text="`ready`, or why no engine can serve yet.")


class SystemStatusSerializer(serializers.Serializer):
    """Platform facts; the nested objects vary with the hardware and the engines loaded."""

    mode = serializers.ChoiceField(choices=["embedded", "distributed"])
    ready = serializers.BooleanField()
    reason = serializers.CharField()
    inference_engine_setting = serializers.CharField()
    platform = serializers.DictField(help_text="Hardware facts: OS, CPU, GPUs, available engine libraries.")
    engines = serializers.ListField(child=serializers.DictField(), help_text="Engines loaded in this process.")
    system = serializers.DictField(help_text="CPU, memory and disk use of this host.")
    hosts = serializers.ListField(child=serializers.DictField(), required=False,
                                  help_text="Latest system sample of every web and worker process.")


# --- Streaming --------------------------------------------------------------------------------

_NULLABLE_STRING = {"type": ["string", "null"]}
_FINISH = {"enum": [*FINISH_REASONS, None]}


def _chunk_schema(object_name: str, choice: dict) -> dict:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "system_fingerprint", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": object_name},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "system_fingerprint": _NULLABLE_STRING,
            "choices": {"type": "array", "items": choice},
            "usage": {
                "description": "With `stream_options.include_usage`: null on every chunk but the last, "
                               "which has no choices.",
                "oneOf": [{"$ref": "#/components/schemas/Usage"}, {"type": "null"}],
            },
        },
    }


CHAT_CHUNK = _chunk_schema("chat.completion.chunk", {
    "type": "object",
    "required": ["index", "delta", "logprobs", "finish_reason"],
    "properties": {
        "index": {"type": "integer"},
        "delta": {
            "type": "object",
            "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
        },
        "logprobs": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/ChatLogprobs"}],
                     "description": "With `logprobs: true`: those of this chunk's tokens."},
        "finish_reason": _FINISH,
    },
})
TEXT_CHUNK = _chunk_schema("text_completion", {
    "type": "object",
    "required": ["index", "text", "logprobs", "finish_reason"],
    "properties": {
        "index": {"type": "integer"},
        "text": {"type": "string"},
        "logprobs": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/TextLogprobs"}],
                     "description": "With `logprobs: k`: those of this chunk's tokens."},
        "finish_reason": _FINISH,
    },
})


def _sse_response(chunk: dict, description: str) -> OpenApiResponse:
    """One Server-Sent Event: `data:` holds a chunk, an in-band error body, or `[DONE]`."""
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "description": "A JSON chunk, an error body if the stream fails after it started, "
                               "then the literal `[DONE]`.",
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"oneOf": [chunk, {"$ref": "#/components/schemas/Error"}]},
                    },
                ],
            },
        },
    }
    return OpenApiResponse(response=event, description=description)


# --- Per-operation annotations ----------------------------------------------------------------


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


_UNAUTHORIZED = _error("Missing, wrong, expired or revoked API key (`invalid_api_key`).")
_INTERNAL = _error("An unexpected server error (`internal_error`).")
_WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate", OpenApiTypes.STR, location=OpenApiParameter.HEADER, response=[401],
    description='`Bearer realm="api"`',
)
_RETRY_AFTER = OpenApiParameter(
    "Retry-After", OpenApiTypes.INT, location=OpenApiParameter.HEADER, response=[429],
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
_CHAT_BODY = {"model": "smollm2", "messages": [{"role": "system", "content": "You are terse."},
                                               {"role": "user", "content": "Say hello to the sea."}],
              "max_tokens": 16, "temperature": 0}
CHAT_EXAMPLES = [
    OpenApiExample("Chat", value=_CHAT_BODY, request_only=True),
    OpenApiExample("Streamed", summary="Streamed, with usage", request_only=True,
                   value={**_CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}),
]
_TEXT_BODY = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 16, "stop": ["\n"], "seed": 7}
TEXT_EXAMPLES = [
    OpenApiExample("Text", value=_TEXT_BODY, request_only=True),
    OpenApiExample("Streamed", value={**_TEXT_BODY, "stream": True}, request_only=True),
]


def _completion_schema(*, operation_id: str, summary: str, request, body, object_name: str, chunk: dict,
                       examples: list):
    ok_description = (
        f"`application/json`: the whole answer (`stream` false). `text/event-stream` (`stream` true): "
        f"one `data: <{object_name} JSON>` event per chunk, ending with `data: [DONE]`; an error after "
        f"the stream started arrives as a `data: {{\"error\": ...}}` event. Its schema describes one event."
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
            (200, "application/json"): OpenApiResponse(body, description=ok_description),
            (200, "text/event-stream"): _sse_response(chunk, ok_description),
            400: _error("Bad JSON, wrong types, unknown fields (`invalid_value`, `invalid_json`), context "
                        "overflow (`context_length_exceeded`) or a feature the engine lacks "
                        "(`unsupported_parameter`)."),
            401: _UNAUTHORIZED,
            404: _error("Unknown model, or one outside the key's allowlist (`model_not_found`)."),
            415: _error("The body is not `application/json` (`unsupported_media_type`)."),
            429: _error("A per-key limit was reached (`rate_limit_exceeded`), or the model's waiting queue is "
                        "full (`model_busy`); `Retry-After` says when to try again."),
            500: _error("The engine failed (`engine_error`) or an unexpected server error (`internal_error`)."),
            502: _error("The worker running the request died (`worker_lost`, distributed mode)."),
            503: _error("The model's engine cannot run here, or no worker could take the job "
                        "(`service_unavailable`)."),
        },
    )


CHAT_COMPLETIONS = _completion_schema(
    operation_id="createChatCompletion", summary="Create a chat completion",
    request=ChatCompletionRequestSerializer, body=ChatCompletionSerializer,
    object_name="chat.completion.chunk", chunk=CHAT_CHUNK, examples=CHAT_EXAMPLES,
)
COMPLETIONS = _completion_schema(
    operation_id="createCompletion", summary="Create a legacy text completion",
    request=CompletionRequestSerializer, body=TextCompletionSerializer,
    object_name="text_completion", chunk=TEXT_CHUNK, examples=TEXT_EXAMPLES,
)

HEALTH = _view_schema(
    "get", operation_id="health", summary="Liveness and readiness", tags=["Health"], auth=[],
    responses={
        200: OpenApiResponse(HealthSerializer, description="At least one enabled model has a ready engine."),
        503: OpenApiResponse(HealthSerializer, description="No engine is ready yet; `reason` says why."),
        500: _INTERNAL,
    },
)

MODEL_LIST = _view_schema(
    "get", operation_id="listModels", summary="List the models this key may use", tags=["Models"],
    parameters=[_WWW_AUTHENTICATE],
    responses={200: ModelListSerializer, 401: _UNAUTHORIZED, 500: _INTERNAL},
)

MODEL_DETAIL = _view_schema(
    "get", operation_id="retrieveModel", summary="Retrieve a model by name or alias", tags=["Models"],
    parameters=[
        OpenApiParameter("model_id", OpenApiTypes.STR, location=OpenApiParameter.PATH,
                         description="A model's name or one of its aliases."),
        _WWW_AUTHENTICATE,
    ],
    responses={
        200: ModelSerializer,
        401: _UNAUTHORIZED,
        404: _error("Unknown model, or one outside the key's allowlist (`model_not_found`)."),
        500: _INTERNAL,
    },
)

SYSTEM_STATUS = _view_schema(
    "get", operation_id="systemStatus", summary="Platform facts, loaded engines, CPU/memory/disk", tags=["System"],
    parameters=[_WWW_AUTHENTICATE],
    responses={200: SystemStatusSerializer, 401: _UNAUTHORIZED, 500: _INTERNAL},
)
