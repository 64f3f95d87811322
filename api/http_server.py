"""daphne's HTTP server, made to answer requests over its size limits instead of dropping them."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from daphne.server import Server  # first: it installs the asyncio reactor twisted must use
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

from api.errors import ErrorInfo, error_body

# A refused connection stays open this long to swallow the rest of its request: closing a socket
# with unread input resets it, and the client could lose the answer it has not read yet.
LINGER_SECONDS = 5


class AnsweringHTTPChannel(HTTPChannel):
    """Twisted's HTTP/1.1 channel; a request line or headers over its limits get a 414 or 431 JSON answer.

    Twisted drops the connection without a word when one line passes MAX_LENGTH (16 KB: a long
    bearer key, a long model id in the path) and answers a bare 400 when all headers together
    pass totalHeadersSize. The limits stay; only the answers change.
    """

    def lineLengthExceeded(self, line: bytes) -> None:
        # Twisted's own (name-mangled, private) state: the request line is still to come.
        if self._HTTPChannel__first_line:  # type: ignore[attr-defined]
            method, _, rest = line.partition(b" ")
            self._refuse(
                HTTPStatus.REQUEST_URI_TOO_LONG,
                "request_uri_too_long",
                f"The request line is longer than {self.MAX_LENGTH} bytes.",
                method=method,
                target=rest.partition(b" ")[0],
            )
        else:
            self._refuse(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_fields_too_large",
                f"A request header is longer than {self.MAX_LENGTH} bytes.",
            )

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_fields_too_large",
                f"The request line and headers are longer than {self.totalHeadersSize} bytes.",
            )
            return
        super().lineReceived(line)

    def _refuse(
        self, status: HTTPStatus, code: str, message: str, *, method: bytes | None = None, target: bytes | None = None
    ) -> None:
        body = json.dumps(error_body(ErrorInfo(status.value, "invalid_request_error", code, message, None))).encode()
        # Any: twisted declares its transport with zope.interface, whose methods have no `self`,
        # which mypy misreads without the mypy-zope plugin (and it is set on a connected channel).
        transport: Any = self.transport
        transport.write(
            f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        if method is None or target is None:  # the request line was read: twisted keeps it until the request ends
            method, target = getattr(self, "_command", b"?"), getattr(self, "_path", b"?")
        peer = transport.getPeer()
        self.factory.server.log_action(
            "http",
            "complete",
            {
                "path": target.decode("ascii", "replace"),
                "status": status.value,
                "method": method[:16].decode("ascii", "replace"),
                "client": f"{peer.host}:{peer.port}",
                "time_taken": 0.0,
                "size": len(body),
            },
        )
        # Ignoring the rest of the request is the point; mypy refuses any assignment to a method.
        self.dataReceived = self.lineReceived = lambda *args: None  # type: ignore[method-assign]
        self.setTimeout(LINGER_SECONDS)  # then twisted's timeoutConnection closes it
        transport.loseWriteConnection()


def _answering_channel_protocol() -> _GenericHTTPChannelProtocol:
    # Twisted's own factory function with our channel: the wrapper is what switches to HTTP/2.
    return _GenericHTTPChannelProtocol(AnsweringHTTPChannel())


class PlatformServer(Server):
    """daphne's Server whose HTTP connections use AnsweringHTTPChannel."""

    def __init__(self, **kwargs):
        super().__init__(ready_callable=self._use_answering_channels, **kwargs)

    def _use_answering_channels(self) -> None:
        # run() calls this after building its factory and before the reactor accepts a connection.
        self.http_factory.protocol = _answering_channel_protocol
