"""/tokenize and /detokenize, in the shapes vLLM's and llama-server's clients send.

Tokenize takes vLLM's `prompt` (or chat `messages` with `add_generation_prompt`) or
llama-server's `content`, and `add_special_tokens` (vLLM) or `add_special` (llama-server):
the start token is added by default to a `prompt` (vLLM's default), not to a `content`
(llama-server's). Messages give exactly the ids a chat completion feeds the model, chat
template included, so counts match generation. The answer has vLLM's keys, `tokens`
(llama-server's only key) among them. Detokenize answers both `prompt` (vLLM) and `content`
(llama-server).

`model` may be left out, as llama-server's clients do, when the key may use exactly one
generation model (serving.serve.route_request). The ids come from the model's own tokenizer,
on the engine host that serves it (in a worker, distributed).

No `from __future__ import annotations` here: the TypedDicts are read by the OpenAPI schema.
"""

import dataclasses
from collections.abc import Callable
from contextlib import aclosing
from typing import Annotated, TypedDict

from rest_framework import serializers

from engines.base import Chunk, GenerationRequest, SamplingParams
from models_registry.models import ApiKey
from monitoring.metric_totals import TOKENIZER_ENDPOINTS
from serving import serve
from serving.lifecycle import RequestLifecycle, request_lifecycle
from serving.route import Route

from ..errors import error_info
from ..typed_shapes import Field
from .format import CHAT
from .requests import generation_request
from .serializers import MessageSerializer, StrictSerializer

TOKENIZE, DETOKENIZE = TOKENIZER_ENDPOINTS  # the endpoints, as records name them (out of /metrics)
MAX_TOKEN_ID = 2**31 - 1
_INPUTS = ("prompt", "content", "messages")


class _TextField(serializers.CharField):
    """A string as sent: DRF's CharField would turn a number into its digits, and tokenize those."""

    def __init__(self, **kwargs):
        super().__init__(allow_blank=True, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        return super().to_internal_value(data)


class TokenizeRequestSerializer(StrictSerializer):
    """Exactly one of `prompt`, `content` or `messages`."""

    model = serializers.CharField(
        required=False, max_length=256, help_text="Optional when the key may use exactly one generation model."
    )
    prompt = _TextField(required=False, help_text="vLLM's field.")
    content = _TextField(required=False, help_text="llama-server's field.")
    messages = MessageSerializer(
        many=True, required=False, allow_empty=False, help_text="Chat messages, rendered by the model's template."
    )
    add_generation_prompt = serializers.BooleanField(
        required=False, default=True, help_text="With messages: open the assistant's turn, as a completion does."
    )
    add_special_tokens = serializers.BooleanField(
        required=False, help_text="vLLM's name: add the start token to `prompt`/`content` (default: `prompt` yes)."
    )
    add_special = serializers.BooleanField(
        required=False, help_text="llama-server's name for `add_special_tokens` (default: `content` no)."
    )

    def validate(self, attrs):
        given = [name for name in _INPUTS if name in attrs]
        if len(given) != 1:
            raise serializers.ValidationError(
                {"non_field_errors": ["Send exactly one of 'prompt', 'content' or 'messages'."]}
            )
        if "add_special_tokens" in attrs and "add_special" in attrs:
            if attrs["add_special_tokens"] != attrs["add_special"]:
                raise serializers.ValidationError({"add_special": ["Contradicts 'add_special_tokens'."]})
        if "messages" in attrs and (attrs.get("add_special_tokens") or attrs.get("add_special")):
            # The chat template decides the start token, as it does for a completion.
            name = "add_special_tokens" if attrs.get("add_special_tokens") else "add_special"
            raise serializers.ValidationError({name: ["With messages the chat template adds the special tokens."]})
        return attrs


class DetokenizeRequestSerializer(StrictSerializer):
    model = serializers.CharField(
        required=False, max_length=256, help_text="Optional when the key may use exactly one generation model."
    )
    tokens = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=MAX_TOKEN_ID), allow_empty=True, help_text="Token ids."
    )


class Tokens(TypedDict):
    """The ids, as vLLM answers (llama-server's clients read `tokens`)."""

    tokens: list[Annotated[int, Field(min_value=0)]]
    count: Annotated[int, Field(min_value=0)]
    max_model_len: Annotated[int, Field(min_value=1, help_text="The model's context length.")]


class Detokenized(TypedDict):
    """The text, under vLLM's key and llama-server's."""

    prompt: str
    content: str


def _validated(serializer_class: type[serializers.Serializer], data: object) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


async def _run(life: RequestLifecycle, route: Route, request: GenerationRequest) -> Chunk:
    """The job's one final chunk (tokenizer jobs answer in one)."""
    final: Chunk | None = None
    async with aclosing(await serve.generate(life, route, request)) as chunks:
        async for chunk in chunks:
            life.first_token()
            if chunk.finish_reason is not None:
                final = chunk
    if final is None:
        raise RuntimeError("the engine ended without a final chunk")
    life.succeeded(final)
    return final


def _tokenize_request(body: dict, route: Route, request_id: str, tenant: str) -> GenerationRequest:
    if "messages" in body:
        # The ids of a chat completion over the same messages: its own request, as a tokenize job.
        chat = generation_request(CHAT, {"messages": body["messages"]}, route.model, request_id, tenant=tenant)
        return dataclasses.replace(chat, task="tokenize", add_generation_prompt=body["add_generation_prompt"])
    field = "prompt" if "prompt" in body else "content"
    add_special = body.get("add_special_tokens", body.get("add_special", field == "prompt"))
    return GenerationRequest(
        request_id=request_id,
        sampling=SamplingParams(),
        prompt=body[field],
        task="tokenize",
        add_special=add_special,
        tenant=tenant,
    )


async def tokenize_serve(*, key: ApiKey, read_body: Callable[[], object]) -> Tokens:
    """Answer one /tokenize; exactly one record (endpoint `tokenize`)."""
    async with request_lifecycle(endpoint=TOKENIZE, api_key_id=key.pk, describe=error_info) as life:
        body = _validated(TokenizeRequestSerializer, read_body())
        route = await serve.route_request(key=key, name=body.get("model"), task="tokenize")
        life.routed(route)
        await life.admit(key)
        final = await _run(life, route, _tokenize_request(body, route, life.request_id, str(key.pk)))
        result: Tokens = {
            "tokens": list(final.token_ids),
            "count": len(final.token_ids),
            "max_model_len": route.model.context_length,
        }
    return result


async def detokenize_serve(*, key: ApiKey, read_body: Callable[[], object]) -> Detokenized:
    """Answer one /detokenize; exactly one record (endpoint `detokenize`)."""
    async with request_lifecycle(endpoint=DETOKENIZE, api_key_id=key.pk, describe=error_info) as life:
        body = _validated(DetokenizeRequestSerializer, read_body())
        route = await serve.route_request(key=key, name=body.get("model"), task="detokenize")
        life.routed(route)
        await life.admit(key)
        request = GenerationRequest(
            request_id=life.request_id,
            sampling=SamplingParams(),
            task="detokenize",
            token_ids=tuple(body["tokens"]),
            tenant=str(key.pk),
        )
        final = await _run(life, route, request)
        result: Detokenized = {"prompt": final.text, "content": final.text}
    return result
