"""Anthropic Messages and token counting: parse, route, admit, dispatch, then answer as JSON or as a stream.

The lifecycle is the OpenAI completions' (api/openai/completions.py): everything happens inside
the request's lifecycle, so exactly one record is written and the key's limit slot is given back
once; errors before the first token raise (a 4xx/5xx in Anthropic's shape), later ones go in-band.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from engines.base import Chunk
from models_registry.models import ApiKey
from serving import serve
from serving.errors import UnsupportedParameter
from serving.lifecycle import RequestLifecycle, request_lifecycle

from ..answers import EventStream, JsonAnswer, first_answer
from ..errors import error_info
from .errors import anthropic_error_body
from .format import StreamWriter, message_body, sse_event
from .requests import count_tokens_request, features_used, generation_request, validated_body
from .shapes import AnthropicMessage, MessageTokenCount, StreamEvent

logger = logging.getLogger(__name__)

# The endpoints records name.
MESSAGES = "messages"
COUNT_TOKENS = "messages.count_tokens"


async def messages_serve(
    *, key: ApiKey, read_body: Callable[[], object]
) -> JsonAnswer[AnthropicMessage] | EventStream[StreamEvent]:
    """Answer one Messages request; exactly one record is written whatever happens."""
    return await first_answer(_answer(key, read_body), sse_event)


async def _answer(
    key: ApiKey, read_body: Callable[[], object]
) -> AsyncGenerator[JsonAnswer[AnthropicMessage] | StreamEvent, None]:
    """One JsonAnswer, or a stream's events: the first only once the engine's first chunk is in."""
    async with request_lifecycle(endpoint=MESSAGES, api_key_id=key.pk, describe=error_info) as life:
        body = validated_body(read_body())
        life.stream = bool(body.get("stream"))
        route = await serve.route_request(key=key, name=body["model"])
        life.routed(route)
        await life.admit(key)  # 429 past a per-key limit
        serve.require_features(route, features_used(body))
        request = generation_request(body, route.model, life.request_id, tenant=str(key.pk))
        chunks = await serve.generate(life, route, request)
        if not life.stream:
            result = JsonAnswer(await _collect(body, life, chunks))
        else:
            async with aclosing(chunks):
                # Wait for the first chunk before answering, so errors found before any token
                # (context overflow, a model that will not load) still get a proper 4xx/5xx.
                first = await anext(chunks)
                async for event in _stream_events(body, life, chunks, first):
                    yield event
            return
    yield result  # after the lifecycle: the record exists before the client has its answer


async def _collect(body: dict, life: RequestLifecycle, chunks: AsyncGenerator[Chunk, None]) -> AnthropicMessage:
    outcome = await life.collect(chunks)
    return message_body(
        request_id=life.request_id, model=body["model"], outcome=outcome, stop_sequence=outcome.final.stop_sequence
    )


async def _stream_events(
    body: dict, life: RequestLifecycle, chunks: AsyncGenerator[Chunk, None], first: Chunk
) -> AsyncGenerator[StreamEvent, None]:
    """The events of one message; an error after the first arrives in-band as an `error` event, as Anthropic sends it."""
    writer = StreamWriter(request_id=life.request_id, model=body["model"])
    try:
        yield writer.opening()
        async for chunk in life.relayed(first, chunks):
            for event in writer.chunk(chunk):
                yield event
    except Exception as exc:
        # Headers are already sent: report the error in-band, as Anthropic does.
        yield anthropic_error_body(life.failed_midstream(exc))
        return
    life.succeeded(chunk)
    for event in writer.closing(chunk):
        yield event


async def count_tokens_serve(*, key: ApiKey, read_body: Callable[[], object]) -> MessageTokenCount:
    """The prompt's token count by the model's own tokenizer and chat template; one record, as any request."""
    async with request_lifecycle(endpoint=COUNT_TOKENS, api_key_id=key.pk, describe=error_info) as life:
        body = validated_body(read_body(), count_tokens=True)
        route = await serve.route_request(key=key, name=body["model"])
        life.routed(route)
        await life.admit(key)
        if "tokenize" not in route.capabilities:
            raise UnsupportedParameter(
                f"Counting tokens is not supported by the {route.engine} engine serving model `{route.model.name}`.",
                param="model",
            )
        serve.require_features(route, {k: v for k, v in features_used(body).items() if k == "tools"})
        chunks = await serve.generate(life, route, count_tokens_request(body, life.request_id, tenant=str(key.pk)))
        count = 0
        async with aclosing(chunks):
            async for chunk in chunks:
                count += len(chunk.token_ids)
        life.succeeded(Chunk(finish_reason="stop", prompt_tokens=count, completion_tokens=0))
    return {"input_tokens": count}
