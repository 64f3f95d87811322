"""Timing one request and writing its single record when it ends, whatever the outcome."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

from asgiref.sync import sync_to_async
from django.utils import timezone

from monitoring.services import request_record_create

from ..errors import ErrorInfo

logger = logging.getLogger(__name__)

WORKER_ID = f"embedded@{socket.gethostname()}:{os.getpid()}"
CLIENT_CLOSED = 499  # nginx's convention for "client went away before the answer"


class RequestTracker:
    """Collects what a request's record needs as the request proceeds."""

    def __init__(self, *, endpoint: str, api_key_id: int | None):
        self.request_id = uuid.uuid4().hex
        self.endpoint = endpoint
        self.api_key_id = api_key_id
        self.created_at = timezone.now()
        self._t0 = time.perf_counter()
        self._first_token_at: float | None = None
        self.model_name = ""
        self.engine = ""
        self.stream = False
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self._finished = False

    def first_token(self) -> None:
        if self._first_token_at is None:
            self._first_token_at = time.perf_counter()

    def streamed(self, token_count: int) -> None:
        """Count tokens as they pass, so a cancelled stream's record still says how far it got."""
        self.completion_tokens = (self.completion_tokens or 0) + token_count

    def counts(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens

    async def finish(self, *, status: int, finish_reason: str = "", error: ErrorInfo | None = None) -> None:
        """Write the record once; later calls are ignored. Never raises."""
        if self._finished:
            return
        self._finished = True
        now = time.perf_counter()
        fields = dict(
            request_id=self.request_id,
            created_at=self.created_at,
            endpoint=self.endpoint,
            stream=self.stream,
            duration_ms=(now - self._t0) * 1000,
            status_code=status,
            api_key_id=self.api_key_id,
            model_name=self.model_name,
            engine=self.engine,
            worker=WORKER_ID,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_ms=(self._first_token_at - self._t0) * 1000 if self._first_token_at else None,
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
