"""The answer to a request that may stream, whatever its protocol: one JSON body, or a stream of
events whose first event exists before the view answers.

Waiting for the first event means errors found before any token (context overflow, a model
that will not load) still get a proper 4xx/5xx instead of an in-band error after a 200.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

Body = TypeVar("Body")
Event = TypeVar("Event")


@dataclass
class JsonAnswer(Generic[Body]):
    """A whole answer's body."""

    body: Body


@dataclass
class EventStream(Generic[Event]):
    """A streamed answer's events (`encode` makes each one bytes); closing it cancels the generation."""

    events: AsyncGenerator[Event, None]
    encode: Callable[[Event], bytes]

    async def sse(self) -> AsyncGenerator[bytes, None]:
        """The same stream as Server-Sent Events."""
        async with aclosing(self.events) as events:
            async for event in events:
                yield self.encode(event)


async def first_answer(
    answer: AsyncGenerator[JsonAnswer[Body] | Event, None], encode: Callable[[Event], bytes]
) -> JsonAnswer[Body] | EventStream[Event]:
    """Run `answer` (one JsonAnswer, or events) up to its first item; errors before it raise."""
    try:
        first = await anext(answer)
    except BaseException:
        await answer.aclose()
        raise
    if isinstance(first, JsonAnswer):
        await answer.aclose()
        return first
    # A stream's first event came out, so every later one is an event too (a JsonAnswer only comes alone).
    return EventStream(_prepend(first, cast(AsyncGenerator[Event, None], answer)), encode)


async def _prepend(first: Event, rest: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    async with aclosing(rest):
        yield first
        async for event in rest:
            yield event
