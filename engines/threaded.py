"""Engines whose library must be driven from one thread (llama.cpp, MLX).

Each such engine owns a one-thread executor and serves one sequence at a time from its
queue. The event loop only awaits an asyncio.Queue that the thread fills, so it is never
blocked; closing the async iterator sets an Event that the thread checks before every token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Callable

from .base import Chunk, Engine, GenerationRequest
from .errors import EngineCrashedError, EngineError

logger = logging.getLogger(__name__)

Emit = Callable[[Chunk | BaseException], None]


class SingleThreadEngine(Engine):
    """Subclasses load into `_executor` and implement `_require` and `_decode_unsafe`."""

    _executor: concurrent.futures.ThreadPoolExecutor | None = None

    def _require(self):
        """The loaded model, or EngineUnavailableError."""
        raise NotImplementedError

    def _decode_unsafe(self, request: GenerationRequest, emit: Emit, cancelled: threading.Event) -> Chunk:
        """On the engine thread: emit text chunks as they come and return the final chunk."""
        raise NotImplementedError

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self._require()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Chunk | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the consumer's loop is gone: nobody is listening
                cancelled.set()

        loop.run_in_executor(self._executor, self._decode, request, emit, cancelled)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # Normal end, error or client gone: the thread checks this before every token.
            cancelled.set()

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
