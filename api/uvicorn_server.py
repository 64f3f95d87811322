"""uvicorn behind `serve`: uvloop and httptools when installed, and answers for requests over its limits."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING

from api.access_log import AccessLog, log_action
from api.errors import ErrorInfo, error_body

# Twisted's limits, which the daphne server (api/http_server.py) keeps: one line, and the whole head.
MAX_REQUEST_LINE_BYTES = 16 * 1024
MAX_REQUEST_HEAD_BYTES = 16 * 1024
# A refused connection stays open this long to swallow the rest of its request: closing a socket
# with unread input resets it, and the client could lose the answer it has not read yet.
LINGER_SECONDS = 5
GRACEFUL_SHUTDOWN_SECONDS = 10


def uvicorn_available() -> bool:
    """Whether `serve` can run on uvicorn: uvicorn itself and a WebSocket implementation for it."""
    return bool(importlib.util.find_spec("uvicorn")) and any(
        importlib.util.find_spec(name) for name in ("websockets", "wsproto")
    )


def _error_response(status: HTTPStatus, code: str, message: str) -> bytes:
    body = json.dumps(error_body(ErrorInfo(status.value, "invalid_request_error", code, message, None))).encode()
    return (
        f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )


if TYPE_CHECKING:
    # Checked as one of the uvicorn protocols it is mixed into: both have what it uses
    # (transport, client, data_received, on_response_complete).
    from uvicorn.protocols.http.h11_impl import H11Protocol as _UvicornHTTPProtocol
else:
    _UvicornHTTPProtocol = object


class AnsweringHeadLimits(_UvicornHTTPProtocol):
    """Mixed into uvicorn's HTTP protocols: a request head over the limits gets a 414 or 431 JSON answer.

    httptools sets no limit on a request head at all, and h11 answers one over its buffer with a
    plain-text 400. The head is checked here, before the parser sees it, while it is still
    coming; once it is complete nothing more is copied, so a request's body costs nothing.
    Malformed requests get the parser's 400, in OpenAI's error shape.
    """

    _head = b""
    _in_head = True
    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # swallowing the rest of a refused request
        if self._in_head:
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if (end < 0 and len(head) > MAX_REQUEST_HEAD_BYTES) or end + 4 > MAX_REQUEST_HEAD_BYTES:
                self._refuse_head(head)
                return
            if end < 0:
                self._head = head
            else:
                self._head, self._in_head = b"", False
        super().data_received(data)

    def on_response_complete(self) -> None:
        self._in_head = True  # the next request on this connection starts with its head
        super().on_response_complete()

    def _refuse_head(self, head: bytes) -> None:
        line_end = head.find(b"\r\n")
        if line_end < 0 or line_end > MAX_REQUEST_LINE_BYTES:
            status, code = HTTPStatus.REQUEST_URI_TOO_LONG, "request_uri_too_long"
            message = f"The request line is longer than {MAX_REQUEST_LINE_BYTES} bytes."
        else:
            status, code = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request_header_fields_too_large"
            message = f"The request line and headers are longer than {MAX_REQUEST_HEAD_BYTES} bytes."
        method, _, rest = head[: line_end if 0 <= line_end <= MAX_REQUEST_LINE_BYTES else 1000].partition(b" ")
        self._refuse(status, code, message, method=method, target=rest.partition(b" ")[0])

    def send_400_response(self, msg: str) -> None:
        self._refuse(HTTPStatus.BAD_REQUEST, "bad_request", f"Bad request: {msg}", method=b"?", target=b"?")

    def _refuse(self, status: HTTPStatus, code: str, message: str, *, method: bytes, target: bytes) -> None:
        self._refused = True
        response = _error_response(status, code, message)
        self.transport.write(response)
        client = self.client or ("?", 0)
        log_action(
            "http",
            "complete",
            {
                "path": target.decode("ascii", "replace"),
                "status": status.value,
                "method": method[:16].decode("ascii", "replace"),
                "client": f"{client[0]}:{client[1]}",
                "time_taken": 0.0,
                "size": len(response),
            },
        )
        # End our side, swallow the rest for a while, then close (see LINGER_SECONDS).
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, self.transport.close)


def uvicorn_http_protocol() -> type:
    """uvicorn's fastest HTTP protocol here (httptools, else h11), answering head limits as above."""
    base: type[asyncio.Protocol]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    return type(f"Answering{base.__name__}", (AnsweringHeadLimits, base), {})


def run_uvicorn(application, *, host: str, port: int) -> None:
    """Serve `application` on uvicorn until interrupted.

    uvicorn handles SIGINT and SIGTERM itself, in the main thread only: under the autoreloader,
    whose thread runs this, the reloader's process handles them.
    """
    import uvicorn

    # uvicorn logs each WebSocket handshake at INFO with its full path, query string and all, where
    # clients put keys (?api_key=...). AccessLog writes the redacted line; uvicorn keeps its warnings.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    config = uvicorn.Config(
        AccessLog(application),
        host=host,
        port=port,
        loop="auto",  # uvloop when installed
        http=uvicorn_http_protocol(),
        ws="auto",  # websockets, else wsproto
        lifespan="off",  # Channels' router knows no lifespan events; start-up work happens at import
        access_log=False,  # AccessLog writes the platform's own redacted line instead
        log_config=None,  # the platform's LOGGING stays in charge
        server_header=False,
        # The head limits above are the ones clients see; h11's own buffer limit must not come first.
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES * 4,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    uvicorn.Server(config).run()
