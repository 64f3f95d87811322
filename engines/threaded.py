"""What engines whose library runs on a thread of its own share (llama.cpp, MLX).

Each such engine has one thread that owns the model and batches sequences
(engines.llama_scheduler, engines.mlx_scheduler). The event loop only awaits an
asyncio.Queue that the thread fills, so it is never blocked; closing the async iterator
sets an Event that the thread checks between steps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from .base import Chunk
from .errors import ContextOverflowError

Emit = Callable[[Chunk | BaseException], None]


class ThreadRelay:
    """Hands one request's chunks from an engine thread to the event loop awaiting them.

    Made on the loop. The thread calls `emit` (thread-safe); `cancelled` is set once the
    consumer is gone or done, and the thread checks it between steps.
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


async def relayed(relay: ThreadRelay, wake: Callable[[], None]) -> AsyncIterator[Chunk]:
    """The relay's chunks; however the stream ends (finished, failed, client gone), `wake` the
    engine thread so that a cancelled sequence leaves the batch at its next step."""
    try:
        async with aclosing(relay.chunks()) as chunks:
            async for chunk in chunks:
                yield chunk
    finally:
        wake()


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
