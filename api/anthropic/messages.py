"""Anthropic Messages and token counting: parse, route, admit, dispatch, then answer as JSON or as a stream.

The lifecycle is the OpenAI completions' (api/openai/completions.py): everything happens inside
the request's lifecycle, so exactly one record is written and the key's limit slot is given back
once; errors before the first token raise (a 4xx/5xx in Anthropic's shape), later ones go in-band.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import cast

from engines.base import Chunk
from models_registry.models import ApiKey
from serving import serve
from serving.errors import INTERNAL_ERROR, UnsupportedParameter
from serving.lifecycle import RequestLifecycle, request_lifecycle
from serving.outcome import OutcomeBuilder

from ..errors import error_info
from .errors import anthropic_error_body
from .format import StreamWriter, message_body, sse_event
from .requests import count_tokens_request, features_used, generation_request, validated_body
from .shapes import AnthropicMessage, MessageTokenCount, StreamEvent

logger = logging.getLogger(__name__)

# The endpoints records name.
MESSAGES = "messages"
COUNT_TOKENS = "messages.count_tokens"


@dataclass
class JsonResult:
    body: AnthropicMessage


@dataclass
class StreamResult:
    """Anthropic's stream events, an `error` event if it fails midway. Closing it cancels."""

    events: AsyncGenerator[StreamEvent, None]

    async def sse(self) -> AsyncGenerator[bytes, None]:
        """The same stream as Server-Sent Events with `event:` lines."""
        async with aclosing(self.events) as events:
            async for event in events:
                yield sse_event(event)


async def messages_serve(*, key: ApiKey, read_body: Callable[[], object]) -> JsonResult | StreamResult:
    """Answer one Messages request; exactly one record is written whatever happens."""
    answer = _answer(key, read_body)
    try:
        first = await anext(answer)
    except BaseException:
        await answer.aclose()
        raise
    if isinstance(first, JsonResult):
        await answer.aclose()
        return first
    # A stream's first event came out, so every later one is an event too (JsonResult only comes alone).
    return StreamResult(_prepend(first, cast(AsyncGenerator[StreamEvent, None], answer)))


async def _prepend(first: StreamEvent, rest: AsyncGenerator[StreamEvent, None]) -> AsyncGenerator[StreamEvent, None]:
    async with aclosing(rest):
        yield first
        async for event in rest:
            yield event


async def _answer(key: ApiKey, read_body: Callable[[], object]) -> AsyncGenerator[JsonResult | StreamEvent, None]:
    """One JsonResult, or a stream's events: the first only once the engine's first chunk is in."""
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
            result = JsonResult(await _collect(body, life, chunks))
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
    builder = OutcomeBuilder()
    async with aclosing(chunks):
        async for chunk in chunks:
            life.first_token()
            builder.add(chunk)
    outcome = builder.outcome()
    life.succeeded(outcome.final)
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
        chunk = first
        while True:
            life.first_token()
            life.streamed(len(chunk.token_ids))
            for event in writer.chunk(chunk):
                yield event
            if chunk.finish_reason is not None:
                break
            chunk = await anext(chunks)
    except Exception as exc:
        # Headers are already sent: report the error in-band, as Anthropic does.
        error = error_info(exc)
        if error is None:
            logger.exception("stream %s failed", life.request_id)
            error = INTERNAL_ERROR
        life.failed(error)
        yield anthropic_error_body(error)
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
