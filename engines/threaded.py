"""What engines whose library runs on a thread of its own share (llama.cpp, MLX).

Each such engine has one thread that owns the model and batches sequences
(engines.llama_scheduler, engines.mlx_scheduler). The event loop only awaits an
asyncio.Queue that the thread fills, so it is never blocked; closing the async iterator
sets an Event that the thread checks between steps. `ThreadedEngine` holds the part of
such an engine that does not depend on the library: the path of one request from the
loop to the scheduler thread and back, and the scheduler's place in `state` and `unload`.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, Generic, Protocol, TypeVar

from .base import Chunk, Engine, FinishReason, GenerationRequest, ModelSpec, completion_budget
from .errors import EngineUnavailableError
from .tool_calls import parsed_tool_calls
from .tool_prompt import offers_tools

Emit = Callable[[Chunk | BaseException], None]


class ThreadRelay:
    """Hands one request's chunks from an engine thread to the event loop awaiting them.

    Made on the loop. The thread calls `emit` (thread-safe); `cancelled` is set once the
    consumer is gone or done, and the thread checks it between steps.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self.cancelled = threading.Event()

    def emit(self, item: Chunk | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is gone: nobody is listening
            self.cancelled.set()

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
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


async def relayed(relay: ThreadRelay, wake: Callable[[], None]) -> AsyncGenerator[Chunk, None]:
    """The relay's chunks; however the stream ends (finished, failed, client gone), `wake` the
    engine thread so that a cancelled sequence leaves the batch at its next step."""
    try:
        async with aclosing(relay.chunks()) as chunks:
            async for chunk in chunks:
                yield chunk
    finally:
        wake()


class BatchScheduler(Protocol):
    """What ThreadedEngine needs of a scheduler thread (llama_scheduler, mlx_scheduler)."""

    def submit(self, sequence: Any) -> None:
        """Queue a sequence; the scheduler thread admits it at its next step."""

    def wake(self) -> None:
        """Make the thread look at its queues now (a sequence was cancelled)."""

    def stats(self) -> dict[str, int]:
        """Gauges for status pages."""


SchedulerT = TypeVar("SchedulerT", bound=BatchScheduler)


class ThreadedEngine(Engine, Generic[SchedulerT]):
    """An engine whose scheduler thread owns the model: one request's path there and back.

    Subclasses load the model and set `_scheduler`, and say how a request becomes prompt
    tokens (`_prompt_tokens`) and a job for their scheduler (`_sequence`).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self._scheduler: SchedulerT | None = None

    @abc.abstractmethod
    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The token ids the model is fed for `request`; runs off the event loop."""

    @abc.abstractmethod
    def _sequence(
        self, request: GenerationRequest, prompt: list[int], max_tokens: int, relay: ThreadRelay, prepared: Any = None
    ) -> Any:
        """The scheduler's job for `request`, reporting through `relay`; `prepared` is what
        `_prepare` made for it."""

    def _prepare(self, request: GenerationRequest) -> Any:
        """Per-request work too slow for the event loop and not the scheduler thread's (compiling
        a grammar); runs off the loop beside tokenizing. By default nothing."""
        return None

    def _prompt_and_prepared(self, request: GenerationRequest) -> tuple[list[int], Any]:
        return self._prompt_tokens(request), self._prepare(request)

    def _check_request(self, request: GenerationRequest) -> None:
        """Refuse, before any work, what this model cannot do; by default nothing."""

    def _nothing_to_generate(self, request: GenerationRequest, prompt_tokens: int) -> Chunk:
        """The answer to a request whose budget is zero tokens: it needs no place in the batch."""
        n = request.sampling.n
        length: FinishReason = "length"
        reasons = (length,) * n if n > 1 else ()
        return Chunk(finish_reason="length", prompt_tokens=prompt_tokens, completion_tokens=0, finish_reasons=reasons)

    def _detach_scheduler(self) -> SchedulerT | None:
        """Take the scheduler away from new requests; the caller closes it."""
        scheduler, self._scheduler = self._scheduler, None
        return scheduler

    async def _generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        scheduler = self._scheduler
        if scheduler is None or not self.loaded:
            raise EngineUnavailableError(f"model {self.spec.name} is not loaded")
        self._check_request(request)
        # Templates and tokenizing run off the loop: a long prompt takes a while. Tokenizers
        # only read the vocabulary, so they may run beside the scheduler thread.
        prompt, prepared = await asyncio.to_thread(self._prompt_and_prepared, request)
        max_tokens = completion_budget(
            prompt_tokens=len(prompt), max_tokens=request.sampling.max_tokens, n_ctx=self.spec.context_length
        )
        if max_tokens == 0:
            yield self._nothing_to_generate(request, len(prompt))
            return
        relay = ThreadRelay()
        scheduler.submit(self._sequence(request, prompt, max_tokens, relay, prepared))
        async with aclosing(relayed(relay, scheduler.wake)) as chunks:
            # The model writes its tool calls as text; the client gets them as calls.
            stream = parsed_tool_calls(chunks, request) if offers_tools(request) else chunks
            async with aclosing(stream):
                async for chunk in stream:
                    yield chunk

    def state(self) -> dict[str, Any]:
        state = super().state()
        if self._scheduler is not None:
            state.update(self._scheduler.stats())
        return state
