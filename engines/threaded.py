"""Engines whose library must be driven from one thread, one sequence at a time (MLX).

Each such engine owns a one-thread executor and serves one sequence at a time from its
queue (the llama.cpp engine batches instead: engines.llama_scheduler). The event loop only awaits an asyncio.Queue that the thread fills, so it is never
blocked; closing the async iterator sets an Event that the thread checks before every token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing

from .base import Chunk, Engine, GenerationRequest
from .errors import ContextOverflowError, EngineCrashedError, EngineError
from .stops import StopMatcher

logger = logging.getLogger(__name__)

Emit = Callable[[Chunk | BaseException], None]


class ThreadRelay:
    """Hands one request's chunks from an engine thread to the event loop awaiting them.

    Made on the loop. The thread calls `emit` (thread-safe); `cancelled` is set once the
    consumer is gone or done, and the thread checks it before every token.
    """

    def __init__(self):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self.cancelled = threading.Event()

    def emit(self, item: Chunk | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is gone: nobody is listening
            self.cancelled.set()

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Chunks up to the final one; an emitted error is raised. Closing it sets `cancelled`."""
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self.cancelled.set()


class SingleThreadEngine(Engine):
    """Subclasses load into `_executor` and implement `_require` and `_decode_unsafe`."""

    _executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def slots(self) -> int:
        return 1  # one sequence at a time: the others wait in the admission queue

    def _require(self):
        """The loaded model, or EngineUnavailableError."""
        raise NotImplementedError

    def _decode_unsafe(self, request: GenerationRequest, emit: Emit, cancelled: threading.Event) -> Chunk:
        """On the engine thread: emit text chunks as they come and return the final chunk."""
        raise NotImplementedError

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self._require()
        relay = ThreadRelay()
        asyncio.get_running_loop().run_in_executor(self._executor, self._decode, request, relay.emit,
                                                   relay.cancelled)
        # Normal end, error or client gone: closing the relay stops the thread at its next token.
        async with aclosing(relay.chunks()) as chunks:
            async for chunk in chunks:
                yield chunk

    def _decode(self, request: GenerationRequest, emit: Emit, cancelled: threading.Event) -> None:
        if cancelled.is_set():  # cancelled while still queued
            return
        try:
            emit(self._decode_unsafe(request, emit, cancelled))
        except EngineError as exc:
            emit(exc)
        except Exception as exc:  # a crash in one request must not kill the thread
            logger.exception("%s generation failed for request %s", self.name, request.request_id)
            emit(EngineCrashedError(f"{self.name} failed: {exc}"))


def completion_budget(*, prompt_tokens: int, max_tokens: int | None, n_ctx: int) -> int:
    """Tokens a request may generate: its max_tokens, or what the context has left.

    Raises ContextOverflowError when the prompt and the completion do not both fit, or
    when the prompt fills the window and leaves nothing to generate into.
    """
    room = n_ctx - prompt_tokens
    budget = max_tokens if max_tokens is not None else room
    if budget > room or room < 1:
        raise ContextOverflowError(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_tokens + budget} tokens ({prompt_tokens} in the prompt, "
            f"{budget} in the completion). Please reduce the length of the prompt or completion."
        )
    return budget


def stream_tokens(
    tokens: Iterator[int],
    *,
    max_tokens: int,
    is_end: Callable[[int], bool],
    to_text: Callable[[int], str],
    final_text: Callable[[], str],
    stops: tuple[str, ...],
    emit: Emit,
    cancelled: threading.Event,
    prompt_tokens: int,
) -> Chunk:
    """The per-token loop of a decoding thread; returns the final chunk with the counts.

    `to_text` turns one more token into whatever text it completes (incremental decoding
    holds back partial characters); `final_text` releases what is still held at the end.
    """
    matcher = StopMatcher(stops)
    generated = 0
    pending_ids: list[int] = []
    finish = "length"
    while generated < max_tokens:
        if cancelled.is_set():
            finish = "cancelled"
            break
        token = next(tokens, None)
        if token is None or is_end(token):
            finish = "stop"
            break
        generated += 1
        pending_ids.append(token)
        safe = matcher.feed(to_text(token))
        if safe:
            emit(Chunk(text=safe, token_ids=tuple(pending_ids)))
            pending_ids = []
        if matcher.stopped:
            finish = "stop"
            break
    tail = matcher.feed(final_text()) + matcher.flush()
    return Chunk(text=tail, token_ids=tuple(pending_ids) if tail else (), finish_reason=finish,
                 prompt_tokens=prompt_tokens, completion_tokens=generated)
