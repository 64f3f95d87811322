"""Chat and legacy completions: parse, route, admit, dispatch, then answer as JSON or as a stream.

Everything happens inside the request's lifecycle (serving.lifecycle): a JSON answer leaves it
before the view sees the body, a stream only once its last event is out, so either way exactly
one record is written and the key's limit slot is given back once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Literal, overload

from engines.base import Chunk
from models_registry.models import ApiKey
from serving import serve
from serving.lifecycle import RequestLifecycle, request_lifecycle
from serving.outcome import finish_reasons

from ..answers import EventStream, JsonAnswer, first_answer
from ..errors import Error, error_body, error_info
from .format import (
    CHAT,
    STREAM_DONE,
    ChunkWriter,
    Completion,
    CompletionChunk,
    completion_body,
    sse_event,
)
from .requests import features_used, generation_request, refuse_unsupported_options, validated_body, wants_logprobs

logger = logging.getLogger(__name__)

# What a stream carries: chunk objects, an error body if it fails midway, then STREAM_DONE.
Event = CompletionChunk | Error | str


# With force_stream the body is made to ask for a stream, so the answer is always one.
@overload
async def completion_serve(
    *, kind: str, key: ApiKey, read_body: Callable[[], object], force_stream: Literal[True]
) -> EventStream[Event]: ...


@overload
async def completion_serve(
    *, kind: str, key: ApiKey, read_body: Callable[[], object], force_stream: bool = False
) -> JsonAnswer[Completion] | EventStream[Event]: ...


async def completion_serve(
    *, kind: str, key: ApiKey, read_body: Callable[[], object], force_stream: bool = False
) -> JsonAnswer[Completion] | EventStream[Event]:
    """Answer one completion request; exactly one record is written whatever happens.

    `force_stream` is for transports that always stream (WebSockets), whatever `stream` says.
    Errors before the first token raise, so they still get a proper 4xx/5xx.
    """
    return await first_answer(_answer(kind, key, read_body, force_stream), sse_event)


async def _answer(
    kind: str, key: ApiKey, read_body: Callable[[], object], force_stream: bool
) -> AsyncGenerator[JsonAnswer[Completion] | Event, None]:
    """One JsonAnswer, or a stream's events: the first only once the engine's first chunk is in."""
    async with request_lifecycle(endpoint=kind, api_key_id=key.pk, describe=error_info) as life:
        data = read_body()
        if force_stream and isinstance(data, dict):
            data = {**data, "stream": True}  # before validation: stream_options requires it
        body = validated_body(kind, data)
        life.stream = bool(body.get("stream"))
        route = await serve.route_request(key=key, name=body["model"])
        life.routed(route)
        await life.admit(key)  # 429 past a per-key limit
        serve.require_features(route, features_used(kind, body))
        refuse_unsupported_options(kind, body, route.engine)
        request = generation_request(kind, body, route.model, life.request_id, tenant=str(key.pk))
        chunks = await serve.generate(life, route, request)
        if not life.stream:
            result = JsonAnswer(await _collect(kind, body, life, chunks))
        else:
            async with aclosing(chunks):
                # Wait for the first chunk before answering, so errors found before any token
                # (context overflow, a model that will not load) still get a proper 4xx/5xx.
                first = await anext(chunks)
                async for event in _stream_events(kind, body, life, chunks, first):
                    yield event
            return
    yield result  # after the lifecycle: the record exists before the client has its answer


def _completion_id(kind: str, life: RequestLifecycle) -> str:
    return f"{'chatcmpl' if kind == CHAT else 'cmpl'}-{life.request_id}"


async def _collect(kind: str, body: dict, life: RequestLifecycle, chunks: AsyncGenerator[Chunk, None]) -> Completion:
    outcome = await life.collect(chunks, n=body.get("n") or 1, logprobs=wants_logprobs(kind, body))
    return completion_body(
        kind=kind,
        completion_id=_completion_id(kind, life),
        model=body["model"],
        choices=outcome.choices,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        cached_tokens=outcome.cached_tokens,
    )


async def _stream_events(
    kind: str, body: dict, life: RequestLifecycle, chunks: AsyncGenerator[Chunk, None], first: Chunk
) -> AsyncGenerator[Event, None]:
    """Chunk objects for one request; an error after the first arrives in-band, as OpenAI sends it."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    writer = ChunkWriter(
        kind=kind,
        completion_id=_completion_id(kind, life),
        model=body["model"],
        include_usage=include_usage,
        n=body.get("n") or 1,
        logprobs=wants_logprobs(kind, body),
    )
    try:
        for opening in writer.openings():
            yield opening
        async for chunk in life.relayed(first, chunks):
            if chunk.text or chunk.logprobs:
                yield writer.delta(chunk.text, chunk.index, chunk.logprobs)
            for piece in chunk.tool_calls:
                for event in writer.tool_calls(piece, chunk.index):
                    yield event
    except Exception as exc:
        # Headers are already sent: report the error in-band, as OpenAI does.
        yield error_body(life.failed_midstream(exc))  # no [DONE] after an error, as OpenAI's streams end
        return
    life.succeeded(chunk)
    for index, reason in enumerate(finish_reasons(chunk, writer.n)):
        yield writer.finish(reason, index)
    if include_usage:
        yield writer.usage(chunk.prompt_tokens or 0, chunk.completion_tokens or 0, chunk.cached_tokens)
    yield STREAM_DONE
