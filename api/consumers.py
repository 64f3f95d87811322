"""WebSocket streaming of chat and legacy completions and of responses, one request at a time per connection.

The protocol is described in the README ("WebSocket streaming"). In short: authenticate with
the handshake's `Authorization: Bearer <key>` header or a first `{"type": "auth", "api_key"}`
frame; send `{"type": "request", "body": {...}}`; receive the SSE stream's chunk objects and
error bodies as JSON text frames, and the text frame `[DONE]` at the end of every request;
`{"type": "cancel"}` stops the request in progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from models_registry.models import ApiKey
from models_registry.services.api_keys import api_key_verify
from serving.errors import INTERNAL_ERROR, ErrorInfo, RequestTooLarge

from .authentication import bearer_token
from .errors import error_body, error_info
from .json_body import parse_json
from .openai.completions import completion_serve
from .openai.format import CHAT, STREAM_DONE, TEXT
from .openai.responses.serve import response_create

logger = logging.getLogger(__name__)

# Close codes 4000-4999 belong to applications; 4401 reads as HTTP's 401.
CLOSE_UNAUTHORIZED = 4401
# Sent after a request the client cancelled, just before its [DONE].
STREAM_CANCELLED = {"object": "stream.cancelled"}

_FIELDS = {"auth": {"type", "api_key"}, "request": {"type", "body"}, "cancel": {"type"}}

_BAD_SCHEME = "Send the API key as 'Authorization: Bearer <key>'."
_BAD_KEY = "Incorrect, expired or revoked API key provided. Issue a key in the admin."
_NO_KEY = (
    "You didn't provide an API key. Send 'Authorization: Bearer <key>' on the handshake, "
    'or {"type": "auth", "api_key": "<key>"} as the first message.'
)


def _unauthorized(message: str) -> ErrorInfo:
    return ErrorInfo(401, "invalid_request_error", "invalid_api_key", message, None)


def _invalid_message(message: str, param: str | None = None) -> ErrorInfo:
    return ErrorInfo(400, "invalid_request_error", "invalid_message", message, param)


def _handshake_token(scope: dict) -> str | None:
    """The handshake's bearer token: None if it has no Authorization header, "" if not a usable one."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            return bearer_token(value.decode("latin-1")) or ""
    return None


class _CompletionConsumer(AsyncJsonWebsocketConsumer):
    kind: str
    # Seconds an unauthenticated connection may stay open waiting for its auth frame.
    auth_timeout = 10.0
    # Tokens arrive through dispatch's own channels; a channel layer here would only hold
    # one more Redis receive open per socket. An alias that is not configured means none.
    channel_layer_alias = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Kept to verify the key again for every request, so revoking it takes effect on open sockets.
        self._token: str | None = None
        self._rejected = False
        self._auth_timer: asyncio.Task | None = None
        self._request: asyncio.Task | None = None

    # Connection lifecycle

    async def connect(self):
        token = _handshake_token(self.scope)
        # Accept before judging the key: only an accepted socket can carry the error frame.
        await self.accept()
        if token is None:
            self._auth_timer = asyncio.create_task(self._expire_unauthenticated())
        elif not token:
            await self._reject(_BAD_SCHEME)
        else:
            await self._authenticate(token)

    async def disconnect(self, code):
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self._request is not None and not self._request.done():
            # Cancelling closes the stream, which stops generation and records "cancelled".
            self._request.cancel()
            await asyncio.wait([self._request], timeout=30)
            if not self._request.done():
                logger.warning("websocket request did not stop within 30 s of the client leaving")

    async def _expire_unauthenticated(self) -> None:
        await asyncio.sleep(self.auth_timeout)
        if self._token is None and not self._rejected:
            await self._reject(f"No API key arrived within {self.auth_timeout:g} seconds. {_NO_KEY}")

    async def _authenticate(self, token: str) -> None:
        if await self._verified_key(token) is None or self._rejected:
            return
        self._token = token
        if self._auth_timer is not None:
            self._auth_timer.cancel()

    async def _verified_key(self, token: str) -> ApiKey | None:
        """The active key for `token`; otherwise the client is told and the socket closed."""
        key = await database_sync_to_async(api_key_verify)(plaintext=token)
        if key is None:
            await self._reject(_BAD_KEY)  # never echo the key: it may be a real secret
        return key

    async def _reject(self, message: str) -> None:
        logger.info("websocket %s rejected: %s", self.scope["path"], message)
        self._rejected = True
        await self.send_json(error_body(_unauthorized(message)))
        await self.close(code=CLOSE_UNAUTHORIZED)

    # Incoming frames

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if self._rejected:
            return  # closing; the client has been told why
        problem = None
        if text_data is None:
            problem = _invalid_message("Send messages as JSON text frames, not binary frames.")
        elif _too_large(text_data):
            problem = error_info(
                RequestTooLarge(
                    f"A message is larger than this server's limit of {settings.MAX_REQUEST_BODY_BYTES} bytes."
                )
            )
        else:
            try:
                message = await self.decode_json(text_data)
            except ValueError as exc:
                problem = _invalid_message(f"A message is not valid JSON: {exc}.")
        if problem is None:
            await self.receive_json(message)
        elif self._token is None:
            await self._reject(_NO_KEY)
        else:
            await self._refuse(problem)

    async def receive_json(self, content, **kwargs):
        if self._token is None:
            await self._receive_unauthenticated(content)
            return
        problem = _message_problem(content)
        if problem is not None:
            await self._refuse(problem)
        elif content["type"] == "auth":
            await self._refuse(_invalid_message("This connection is already authenticated."))
        elif content["type"] == "cancel":
            await self._cancel()
        elif self._request is not None and not self._request.done():
            await self._refuse(
                ErrorInfo(
                    409,
                    "invalid_request_error",
                    "request_in_progress",
                    "A request is already streaming on this connection. Wait for its [DONE], send "
                    '{"type": "cancel"}, or open another connection.',
                    None,
                )
            )
        else:
            key = await self._verified_key(self._token)
            if key is not None:
                self._request = asyncio.create_task(self._serve(key, content["body"]))
                self._request.add_done_callback(_log_failure)

    async def _receive_unauthenticated(self, content) -> None:
        """Before a key is known, only a well-formed auth frame is accepted."""
        if _message_problem(content) is not None or content["type"] != "auth":
            await self._reject(_NO_KEY)
        elif not isinstance(content["api_key"], str) or not content["api_key"].strip():
            await self._reject("The auth message's 'api_key' must be a non-empty string.")
        else:
            await self._authenticate(content["api_key"].strip())

    async def _refuse(self, error: ErrorInfo) -> None:
        """Answer a message that breaks the protocol; the connection stays open."""
        logger.info("websocket %s: %s (%s)", self.scope["path"], error.code, error.message)
        await self.send_json(error_body(error))

    # Requests

    async def _serve(self, key: ApiKey, body: dict) -> None:
        """Stream one request's frames; its last frame is [DONE], unless it was cancelled."""
        try:
            stream = await self._stream(key, body)
        except Exception as exc:
            info = error_info(exc)
            if info is None:
                logger.exception("websocket request failed before streaming")
                info = INTERNAL_ERROR
            await self.send_json(error_body(info))
        else:
            async with aclosing(stream) as events:
                async for event in events:
                    if event != STREAM_DONE:  # sent below, once the record is written
                        await self.send_json(event)
        # Only now is the connection free for the next request, so [DONE] goes last.
        await self.send(text_data=STREAM_DONE)

    async def _stream(self, key: ApiKey, body: dict) -> AsyncGenerator[Any, None]:
        """The request's events; raises instead if it fails before its first one."""
        # force_stream: this transport always streams, so `stream_options` needs no `"stream": true`.
        result = await completion_serve(kind=self.kind, key=key, read_body=lambda: body, force_stream=True)
        return result.events

    async def _cancel(self) -> None:
        request = self._request
        if request is None or request.done():
            return  # it ended first: its [DONE] is already on the way, there is nothing to stop
        request.cancel()
        await asyncio.wait([request])
        if request.cancelled():
            await self.send_json(STREAM_CANCELLED)
            await self.send(text_data=STREAM_DONE)

    @classmethod
    async def decode_json(cls, text_data):
        return parse_json(text_data)  # the HTTP bodies' rules: bounded nesting, no lone surrogates

    @classmethod
    async def encode_json(cls, content):
        return json.dumps(content, separators=(",", ":"))  # the same bytes as the SSE payloads


def _too_large(text: str) -> bool:
    """Whether a message is over MAX_REQUEST_BODY_BYTES, counted in UTF-8 as HTTP bodies are."""
    return len(text.encode("utf-8", "surrogatepass")) > settings.MAX_REQUEST_BODY_BYTES


def _message_problem(content) -> ErrorInfo | None:
    """Why a client message is malformed, or None."""
    if not isinstance(content, dict):
        return _invalid_message("A message must be a JSON object with a 'type'.")
    message_type = content.get("type")
    if not isinstance(message_type, str) or message_type not in _FIELDS:
        return _invalid_message(
            f"Unknown message type {message_type!r}; expected auth, request or cancel.", param="type"
        )
    unknown = sorted(set(content) - _FIELDS[message_type])
    if unknown:
        return _invalid_message(
            f"Unknown field(s) in a {message_type!r} message: {', '.join(unknown)}.", param=unknown[0]
        )
    missing = sorted(_FIELDS[message_type] - set(content))
    if missing:
        return _invalid_message(
            f"A {message_type!r} message needs the field(s): {', '.join(missing)}.", param=missing[0]
        )
    if message_type == "request" and not isinstance(content["body"], dict):
        return _invalid_message("'body' must be a JSON object: the body of the matching POST request.", param="body")
    return None


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("websocket request task failed", exc_info=task.exception())


class ChatCompletionsConsumer(_CompletionConsumer):
    """`ws/v1/chat/completions`: bodies as for POST /v1/chat/completions."""

    kind = CHAT


class CompletionsConsumer(_CompletionConsumer):
    """`ws/v1/completions`: bodies as for POST /v1/completions."""

    kind = TEXT


class ResponsesConsumer(_CompletionConsumer):
    """`ws/v1/responses`: bodies as for POST /v1/responses; frames are its stream's events."""

    kind = "responses"

    async def _stream(self, key: ApiKey, body: dict) -> AsyncGenerator[Any, None]:
        result = await response_create(key=key, read_body=lambda: body, force_stream=True)
        return result.events
