"""One access-log line per request, with nothing secret in it: query values and keys are redacted.

From daphne's action_logger (log_action), or from the AccessLog ASGI middleware under uvicorn.
"""

from __future__ import annotations

import logging
import re
import time

logger = logging.getLogger(__name__)

# Longer paths are cut: a 100 KB model id in the path must not become a 100 KB log line.
MAX_LOGGED_PATH = 200
REDACTED = "[redacted]"
# An API key pasted into the path itself (ipk-<prefix>-<secret>).
_KEY_IN_PATH = re.compile(r"ipk-[A-Za-z0-9_-]+")


def redact_uri(uri: str) -> str:
    """The request target as it may be logged: query parameter names kept, their values redacted."""
    path, separator, query = uri.partition("?")
    path = _KEY_IN_PATH.sub(f"ipk-{REDACTED}", path)
    if len(path) > MAX_LOGGED_PATH:
        path = f"{path[:MAX_LOGGED_PATH]}...({len(path)} chars)"
    if not separator:
        return path
    # Clients put keys in query strings (?api_key=…), and proxies log them: keep no value at all.
    names = [item.partition("=")[0][:40] for item in query.split("&") if item]
    return f"{path}?{'&'.join(f'{name}={REDACTED}' for name in names[:20])}"


def log_action(protocol: str, action: str, details: dict) -> None:
    """daphne's action_logger: one line per finished HTTP request and per WebSocket event."""
    path = redact_uri(str(details.get("path", "")))
    if protocol == "http" and action == "complete":
        status = details["status"]
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        logger.log(
            level, "HTTP %s %s %s [%.2f, %s]", details["method"], path, status, details["time_taken"], details["client"]
        )
    elif protocol == "websocket" and action in ("connected", "rejected", "disconnected"):
        logger.info("WebSocket %s %s [%s]", action.upper(), path, details["client"])


class ServerErrorsOnly(logging.Filter):
    """Keeps django.request's 5xx records (they carry the traceback); the access log has the 4xx."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", 500) >= 500


class WithoutTraceback(logging.Filter):
    """A bad Host header is the client's mistake: one line, not Django's traceback for each request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = record.exc_text = None
        return True


class AccessLog:
    """ASGI middleware: the same access-log lines as daphne's action_logger, for servers without one (uvicorn)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope, receive, send):
        started = time.perf_counter()
        status, size = 500, 0  # what the log says if the application fails before answering

        async def logging_send(message):
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            log_action(
                "http",
                "complete",
                {
                    "path": _target(scope),
                    "status": status,
                    "method": scope["method"],
                    "client": _client(scope),
                    "time_taken": time.perf_counter() - started,
                    "size": size,
                },
            )

    async def _websocket(self, scope, receive, send):
        details = {"path": _target(scope), "client": _client(scope)}
        accepted = False

        async def logging_send(message):
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
                log_action("websocket", "connected", details)
            elif message["type"] == "websocket.close" and not accepted:
                log_action("websocket", "rejected", details)
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            if accepted:
                log_action("websocket", "disconnected", details)


def _target(scope) -> str:
    query = scope.get("query_string", b"")
    return scope["path"] + (f"?{query.decode('latin-1')}" if query else "")


def _client(scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"
