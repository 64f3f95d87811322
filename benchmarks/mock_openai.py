"""A fixed-answer OpenAI server: the upstream for the gateway benchmark, as fast as Python allows.

It answers POST /v1/chat/completions with the same short completion every time (streamed as
server-sent events when the body says `"stream": true`), GET /v1/models with one model and
anything else with a 404. It is a bare asyncio protocol with HTTP/1.1 keep-alive and nothing
else, so that what a gateway adds on top of it is what the benchmark measures, not the mock.
Standard library only (uvloop when the interpreter has it), so any interpreter can run it:

    python benchmarks/mock_openai.py --port 9100     # prints "mock-openai ready on PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

MODEL = "mock-gpt"
ANSWER = "This is a fixed answer from the mock upstream."
PROMPT_TOKENS, COMPLETION_TOKENS = 12, 10
MAX_HEAD_BYTES = 64 * 1024


def _completion() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        },
        separators=(",", ":"),
    ).encode()


def _stream() -> bytes:
    def event(delta: dict, finish: str | None, usage: dict | None = None) -> str:
        chunk = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            chunk = {**chunk, "choices": [], "usage": usage}
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"

    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }
    return "".join(
        [
            event({"role": "assistant", "content": ANSWER}, None),
            event({}, "stop"),
            event({}, None, usage),
            "data: [DONE]\n\n",
        ]
    ).encode()


MODELS_BODY = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "mock"}]}).encode()
# Built once: the answer is fixed, so the mock spends nothing per request on JSON.
COMPLETION_BODY = _completion()
STREAM_BODY = _stream()
NOT_FOUND_BODY = json.dumps(
    {"error": {"message": "no such path", "type": "invalid_request_error", "param": None, "code": "not_found"}}
).encode()


def _response(status: str, content_type: bytes, body: bytes, *, close: bool) -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + (b"\r\nconnection: close" if close else b"")
        + b"\r\n\r\n"
        + body
    )


class MockProtocol(asyncio.Protocol):
    """One connection: requests in order, each answered as soon as its body is complete."""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self.transport.close()
                return
            head = self.buffer[:head_end].decode("latin-1")
            request_line, *header_lines = head.split("\r\n")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < head_end + 4 + length:
                return  # the body is still coming
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            close = headers.get("connection", "").lower() == "close"
            self.transport.write(self.answer(request_line, body, close=close))
            if close:
                self.transport.close()
                return

    def answer(self, request_line: str, body: bytes, *, close: bool) -> bytes:
        method, _, rest = request_line.partition(" ")
        path = rest.partition(" ")[0].partition("?")[0].rstrip("/")
        if method == "POST" and path.endswith("/chat/completions"):
            if b'"stream"' in body and json.loads(body).get("stream"):
                return _response("200 OK", b"text/event-stream", STREAM_BODY, close=close)
            return _response("200 OK", b"application/json", COMPLETION_BODY, close=close)
        if method == "GET" and path.endswith("/models"):
            return _response("200 OK", b"application/json", MODELS_BODY, close=close)
        return _response("404 Not Found", b"application/json", NOT_FOUND_BODY, close=close)


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock-openai ready on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
