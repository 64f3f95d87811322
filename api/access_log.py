"""One access-log line per request, with nothing secret in it: query values and keys are redacted."""

from __future__ import annotations

import logging
import re

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
        logger.log(level, "HTTP %s %s %s [%.2f, %s]", details["method"], path, status,
                   details["time_taken"], details["client"])
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
