"""A request's lifecycle: the one owner of its record and of its per-key limit slot.

Whichever process finishes a request and however it ends (an answer, an error before or
after the first token, a client that leaves, a worker that dies), `request_lifecycle`
writes exactly one record and gives the limit slot back exactly once:

- the web process opens it around the whole request, the stream included: a streamed answer
  is an async generator that stays inside the `async with` until its last event;
- a worker opens it around the job it runs, for the record the web process handed it.

Where a remote worker runs the job, the worker writes the record (it knows the tokens and
times) and the web process writes none, unless the worker was lost and never could.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

from engines.base import Chunk
from models_registry.models import ApiKey

from .errors import INTERNAL_ERROR, ErrorInfo, WorkerLost, error_info
from .limits import Admission, limits_admit
from .outcome import Outcome, OutcomeBuilder
from .record_writer import record_submit
from .route import Route

logger = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's convention for "client went away before the answer"


@asynccontextmanager
async def request_lifecycle(
    *,
    endpoint: str,
    api_key_id: int | None,
    request_id: str | None = None,
    started_at: float | None = None,
    describe: Callable[[BaseException], ErrorInfo | None] = error_info,
) -> AsyncIterator[RequestLifecycle]:
    """Own one request from here to its end; on leaving, its record is written and its slot freed.

    An exception leaving the block sets the outcome unless one was set already: a cancellation
    (or a closed stream) is 499 `cancelled`, an error what `describe` makes of it (a protocol
    module adds its parsing errors to serving's), anything it does not know a 500.
    """
    life = RequestLifecycle(
        endpoint=endpoint, api_key_id=api_key_id, request_id=request_id, started_at=started_at, describe=describe
    )
    try:
        yield life
    except (asyncio.CancelledError, GeneratorExit):
        life.cancelled()
        raise
    except BaseException as exc:
        life.failed(describe(exc) or INTERNAL_ERROR)
        raise
    finally:
        await life.settle()


class RequestLifecycle:
    """What a request's record needs, gathered as the request proceeds, and its outcome.

    Times are wall-clock (time.time) so that a worker in another process can go on timing a
    request that a web process started.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        api_key_id: int | None,
        request_id: str | None = None,
        started_at: float | None = None,
        describe: Callable[[BaseException], ErrorInfo | None] = error_info,
    ):
        self._describe = describe
        self.request_id = request_id or uuid.uuid4().hex
        self.endpoint = endpoint
        self.api_key_id = api_key_id
        self.started_at = started_at if started_at is not None else time.time()
        self._first_token_at: float | None = None
        # The served model's own name (an alias counts as its model), set once the request is
        # routed. A name no model answers to stays empty: any key holder could make up names,
        # and each kept would be a new series on the dashboard.
        self.model_name = ""
        self.engine = ""
        self.worker = ""
        self.queue_wait_ms: float | None = None
        self.stream = False
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.cached_tokens: int | None = None
        self._outcome: tuple[int, str, ErrorInfo | None] | None = None  # status, finish reason, error
        self._admission: Admission | None = None
        self._recorded_remotely = False
        self._settled = False

    # --- as the request proceeds ---

    def routed(self, route: Route) -> None:
        """The request found its model and engine."""
        self.model_name, self.engine = route.model.name, route.engine

    async def admit(self, key: ApiKey) -> None:
        """Take a slot under the key's limits (429 past one); it is given back when the request ends."""
        self._admission = await limits_admit(key=key)

    def host_started(self, worker: str, queue_wait_ms: float, records_itself: bool) -> None:
        """A host took the job; one that records the request itself (a remote worker) owns the record."""
        self.worker = worker
        self.queue_wait_ms = queue_wait_ms
        self._recorded_remotely = records_itself

    def first_token(self) -> None:
        if self._first_token_at is None:
            self._first_token_at = time.time()

    def streamed(self, token_count: int) -> None:
        """Count tokens as they pass, so a cancelled stream's record still says how far it got."""
        self.completion_tokens = (self.completion_tokens or 0) + token_count

    async def relayed(self, first: Chunk, rest: AsyncGenerator[Chunk, None]) -> AsyncGenerator[Chunk, None]:
        """A stream's chunks, `first` included, up to the engine's final one, timed and counted as they pass."""
        chunk = first
        while True:
            self.first_token()
            self.streamed(len(chunk.token_ids))
            yield chunk
            if chunk.finish_reason is not None:
                return
            chunk = await anext(rest)

    async def collect(self, chunks: AsyncGenerator[Chunk, None], *, n: int = 1, logprobs: bool = False) -> Outcome:
        """The whole answer of a request that does not stream; the request has then succeeded."""
        builder = OutcomeBuilder(n=n, logprobs=logprobs)
        async with aclosing(chunks):
            async for chunk in chunks:
                self.first_token()
                builder.add(chunk)
        outcome = builder.outcome()
        self.succeeded(outcome.final)
        return outcome

    def failed_midstream(self, exc: Exception) -> ErrorInfo:
        """The error that broke a stream off after its headers went out, for the protocol to send in-band."""
        error = self._describe(exc)
        if error is None:
            logger.exception("stream %s failed", self.request_id)
            error = INTERNAL_ERROR
        self.failed(error)
        return error

    def job_record(self) -> dict[str, Any]:
        """What this request carries to a worker so the worker can write the record."""
        return {
            "endpoint": self.endpoint,
            "api_key_id": self.api_key_id,
            "model_name": self.model_name,
            "engine": self.engine,
            "stream": self.stream,
        }

    # --- the outcome: the first one set is the request's ---

    def succeeded(self, final: Chunk) -> None:
        """The engine's final chunk arrived: its counts (cached_tokens None where the engine does not say)."""
        if self._outcome is None:
            self.prompt_tokens = final.prompt_tokens
            self.completion_tokens = final.completion_tokens
            self.cached_tokens = final.cached_tokens
            self._outcome = (200, final.finish_reason or "", None)

    def failed(self, error: ErrorInfo) -> None:
        if self._outcome is None:
            self._outcome = (error.status, "error", error)

    def cancelled(self) -> None:
        if self._outcome is None:
            self._outcome = (CLIENT_CLOSED, "cancelled", None)

    async def settle(self) -> None:
        """Write the record and give the limit slot back, once; later calls do nothing. Never raises.

        Called on leaving `request_lifecycle`; a worker calls it early, so the record exists
        by the time the client has its answer.
        """
        if self._settled:
            return
        self._settled = True
        outcome = self._outcome
        if outcome is None:
            logger.error("request %s ended without an outcome", self.request_id)
            outcome = self._outcome = (INTERNAL_ERROR.status, "error", INTERNAL_ERROR)
        status, finish_reason, error = outcome
        try:
            if not self._recorded_remotely or (error is not None and error.code == WorkerLost.code):
                await self._record(status, finish_reason, error)
        finally:
            if self._admission is not None:
                await self._admission.finish(tokens=(self.prompt_tokens or 0) + (self.completion_tokens or 0))

    async def _record(self, status: int, finish_reason: str, error: ErrorInfo | None) -> None:
        now = time.time()
        fields: dict[str, Any] = dict(
            request_id=self.request_id,
            created_at=dt.datetime.fromtimestamp(self.started_at, tz=dt.UTC),
            endpoint=self.endpoint,
            stream=self.stream,
            duration_ms=(now - self.started_at) * 1000,
            status_code=status,
            api_key_id=self.api_key_id,
            model_name=self.model_name,
            engine=self.engine,
            worker=self.worker,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
            ttft_ms=(self._first_token_at - self.started_at) * 1000 if self._first_token_at else None,
            queue_wait_ms=self.queue_wait_ms,
            finish_reason=finish_reason,
            error_type=(error.code or error.type) if error else "",
            error_message=error.message if error else "",
        )
        # Queued before the first await, so a cancelled request's record is stored all the same;
        # the writer logs a record it could not store. Waiting for it (shielded: the record is
        # the writer's now) keeps the promise that the record exists before the client has its answer.
        stored = record_submit(fields)
        await asyncio.shield(asyncio.wrap_future(stored))
