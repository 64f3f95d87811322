"""Timing one request and writing its single record when it ends, whatever the outcome."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid

from asgiref.sync import sync_to_async

from monitoring.services import request_record_create

from ..errors import ErrorInfo, WorkerLost

logger = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's convention for "client went away before the answer"


class RequestTracker:
    """Collects what a request's record needs as the request proceeds.

    Times are wall-clock (time.time) so that a worker on another process can go on
    timing a request that a web process started.
    """

    def __init__(self, *, endpoint: str, api_key_id: int | None, request_id: str | None = None,
                 started_at: float | None = None):
        self.request_id = request_id or uuid.uuid4().hex
        self.endpoint = endpoint
        self.api_key_id = api_key_id
        self.started_at = started_at if started_at is not None else time.time()
        self._first_token_at: float | None = None
        # The served model's own name (an alias counts as its model), set once the request is
        # resolved. A name no model answers to stays empty: any key holder could make up
        # names, and each kept would be a new series on the dashboard.
        self.model_name = ""
        self.engine = ""
        self.worker = ""
        self.queue_wait_ms: float | None = None
        self.stream = False
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.recorded_by_worker = False
        self._finished = False

    def started(self, worker: str, queue_wait_ms: float, records_itself: bool) -> None:
        """A host took the job; a remote worker then writes the record, not this process."""
        self.worker = worker
        self.queue_wait_ms = queue_wait_ms
        self.recorded_by_worker = records_itself

    def first_token(self) -> None:
        if self._first_token_at is None:
            self._first_token_at = time.time()

    def streamed(self, token_count: int) -> None:
        """Count tokens as they pass, so a cancelled stream's record still says how far it got."""
        self.completion_tokens = (self.completion_tokens or 0) + token_count

    def counts(self, prompt_tokens: int | None, completion_tokens: int | None,
               cached_tokens: int | None = None) -> None:
        """The engine's final counts; `cached_tokens` is None where the engine does not say."""
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cached_tokens = cached_tokens

    def record_fields(self) -> dict:
        """What this request carries to a worker so the worker can write the record."""
        return {"endpoint": self.endpoint, "api_key_id": self.api_key_id, "model_name": self.model_name,
                "engine": self.engine, "stream": self.stream}

    async def finish(self, *, status: int, finish_reason: str = "", error: ErrorInfo | None = None) -> None:
        """Write the record once; later calls are ignored. Never raises.

        When a worker owns the record, this process writes it only if the worker was lost.
        """
        if self._finished:
            return
        self._finished = True
        if self.recorded_by_worker and not (error and error.code == WorkerLost.code):
            return
        now = time.time()
        fields = dict(
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
        try:
            # Shielded: the record must be written even when the client's task is cancelled.
            await asyncio.shield(sync_to_async(request_record_create)(**fields))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("could not record request %s", self.request_id)
