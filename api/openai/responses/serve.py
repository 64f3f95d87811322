"""`POST /v1/responses`: parse, route, admit, dispatch, then answer as one response object or as events.

The lifecycle is chat's (api/openai/completions.py): exactly one record (endpoint "responses")
and one limit slot per request; errors before the first token are proper 4xx/5xx answers,
later ones a `response.failed` event. A stored response is saved once it is complete, before
the client has it, so that a `previous_response_id` sent right after finds it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, overload

from engines.base import Chunk
from models_registry.models import ApiKey
from serving import serve
from serving.lifecycle import RequestLifecycle, request_lifecycle

from ...answers import EventStream, JsonAnswer, first_answer
from ...errors import error_info
from ...services.stored_responses import stored_response_save
from ...shared_serializers import sharing_bound_fields
from .format import EventWriter, ResponseBuilder, sse_event
from .inputs import (
    chat_messages,
    features_used,
    generation_request,
    new_id,
    normalized_items,
    output_format,
    tool_choice,
    tool_specs,
)
from .serializers import ResponseRequestSerializer
from .shapes import ResponseObject, ResponseStreamEvent
from .stored import conversation_before

logger = logging.getLogger(__name__)

ENDPOINT = "responses"
_Serializer = sharing_bound_fields(ResponseRequestSerializer)


# With force_stream the body is made to ask for a stream, so the answer is always one.
@overload
async def response_create(
    *, key: ApiKey, read_body: Callable[[], object], force_stream: Literal[True]
) -> EventStream[ResponseStreamEvent]: ...


@overload
async def response_create(
    *, key: ApiKey, read_body: Callable[[], object], force_stream: bool = False
) -> JsonAnswer[ResponseObject] | EventStream[ResponseStreamEvent]: ...


async def response_create(
    *, key: ApiKey, read_body: Callable[[], object], force_stream: bool = False
) -> JsonAnswer[ResponseObject] | EventStream[ResponseStreamEvent]:
    """Answer one create request; exactly one record is written whatever happens.

    `force_stream` is for transports that always stream (WebSockets). Errors before the first
    token raise, so they still get a proper 4xx/5xx.
    """
    return await first_answer(_answer(key, read_body, force_stream), sse_event)


@dataclass
class _Parsed:
    """A validated request: its body, its input items and the conversation the engine sees."""

    body: dict[str, Any]
    items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]


async def _answer(
    key: ApiKey, read_body: Callable[[], object], force_stream: bool
) -> AsyncGenerator[JsonAnswer[ResponseObject] | ResponseStreamEvent, None]:
    """One JsonAnswer, or a stream's events: the first only once the engine's first chunk is in."""
    async with request_lifecycle(endpoint=ENDPOINT, api_key_id=key.pk, describe=error_info) as life:
        data = read_body()
        if force_stream and isinstance(data, dict):
            data = {**data, "stream": True}
        serializer = _Serializer(data=data)
        serializer.is_valid(raise_exception=True)
        body = serializer.validated_data
        life.stream = bool(body.get("stream"))
        items = normalized_items(body["input"])
        tools = tool_specs(body.get("tools"))
        choice = tool_choice(body.get("tool_choice"), tools)
        fmt = output_format(body.get("text"))
        route = await serve.route_request(key=key, name=body["model"])
        life.routed(route)
        await life.admit(key)  # 429 past a per-key limit
        previous = body.get("previous_response_id")
        earlier = await conversation_before(key=key, response_id=previous) if previous else []
        parsed = _Parsed(body=body, items=items, conversation=[*earlier, *items])
        serve.require_features(route, features_used(body, parsed.conversation, tools, fmt))
        messages = chat_messages(body.get("instructions"), parsed.conversation)
        request = generation_request(
            body,
            messages=messages,
            tools=tools,
            choice=choice,
            fmt=fmt,
            model=route.model,
            request_id=life.request_id,
            tenant=str(key.pk),
        )
        builder = ResponseBuilder(
            response_id=new_id("resp"),
            body=body,
            temperature=request.sampling.temperature,
            top_p=request.sampling.top_p,
        )
        chunks = await serve.generate(life, route, request)
        if not life.stream:
            response = await _collect(life, builder, chunks)
            await _store(key, parsed, response)
            result = JsonAnswer(response)
        else:
            async with aclosing(chunks):
                # The first chunk first: errors found before any token still get a proper 4xx/5xx.
                first = await anext(chunks)
                async for event in _stream_events(key, parsed, life, EventWriter(builder), chunks, first):
                    yield event
            return
    yield result  # after the lifecycle: the record exists before the client has its answer


async def _store(key: ApiKey, parsed: _Parsed, response: ResponseObject) -> None:
    """Keep the response for its key unless the request said `store: false`."""
    if parsed.body.get("store") is not False:
        await stored_response_save(
            key=key, response_id=response["id"], body=dict(response), input_items=parsed.conversation
        )


async def _collect(
    life: RequestLifecycle, builder: ResponseBuilder, chunks: AsyncGenerator[Chunk, None]
) -> ResponseObject:
    return builder.finished(await life.collect(chunks))


async def _stream_events(
    key: ApiKey,
    parsed: _Parsed,
    life: RequestLifecycle,
    writer: EventWriter,
    chunks: AsyncGenerator[Chunk, None],
    first: Chunk,
) -> AsyncGenerator[ResponseStreamEvent, None]:
    """The events of one response; an error after the first arrives in-band as response.failed."""
    try:
        for opening in writer.openings():
            yield opening
        async for chunk in life.relayed(first, chunks):
            for event in writer.chunk(chunk):
                yield event
        closing, response = writer.finish(chunk)
        for event in closing:
            yield event
        await _store(key, parsed, response)
    except Exception as exc:
        # Headers are already sent: the error goes in-band, as OpenAI's streams report it.
        yield writer.fail(life.failed_midstream(exc))
        return
    life.succeeded(chunk)
    yield writer.ending(response)
