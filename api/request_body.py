"""ASGI middleware in front of Django: bound every HTTP request body, and read chunked ones.

Django's ASGI handler spools any body, however large, and DRF reads a body only when the
request has a Content-Length, so a body sent with `Transfer-Encoding: chunked` looked empty.
Here a declared length over MAX_REQUEST_BODY_BYTES is refused before anything is read, and a
body without a Content-Length is read up to that limit and handed on with the length set.
"""

from __future__ import annotations

import json

from django.conf import settings

from serving.errors import ErrorInfo, RequestTooLarge, error_info

from .anthropic.errors import anthropic_error_body, anthropic_status, is_anthropic_path
from .errors import error_body


class RequestBodyLimit:
    """Wraps an ASGI HTTP application; other scope types pass straight through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.MAX_REQUEST_BODY_BYTES
        lengths = {value for name, value in scope["headers"] if name.lower() == b"content-length"}
        if lengths:
            declared = lengths.pop() if len(lengths) == 1 else b""
            if not declared.isdigit():
                return await _answer(
                    scope,
                    send,
                    ErrorInfo(
                        400,
                        "invalid_request_error",
                        "bad_request",
                        "Bad request: the Content-Length header is not one non-negative integer.",
                        None,
                    ),
                )
            if int(declared) > limit:
                return await _answer(scope, send, _too_large(limit))
            return await self.app(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nobody to answer
            body += message.get("body", b"")
            if len(body) > limit:
                return await _answer(scope, send, _too_large(limit))
            if not message.get("more_body", False):
                break
        if body:
            # The body is whole now: describe it as such, so Django and DRF read it.
            headers = [(name, value) for name, value in scope["headers"] if name.lower() != b"transfer-encoding"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        pending = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replay():
            # The body once, then the client's own messages (Django waits for http.disconnect).
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> ErrorInfo:
    return error_info(RequestTooLarge(f"The request body is larger than this server's limit of {limit} bytes."))


async def _answer(scope, send, info: ErrorInfo) -> None:
    """The error in the shape of the protocol the path speaks (Anthropic's on its routes, else OpenAI's)."""
    anthropic = is_anthropic_path(scope["path"])
    body = json.dumps(anthropic_error_body(info) if anthropic else error_body(info)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": anthropic_status(info) if anthropic else info.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
