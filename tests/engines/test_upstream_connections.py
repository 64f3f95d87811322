"""The upstream engine keeps its connections open between requests (one client per event loop), sends a
request again when the server had closed the kept-alive connection, and closes them on unload."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from engines.base import GenerationRequest, ModelSpec, SamplingParams
from engines.upstream import UpstreamEngine

MODELS = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
ANSWER = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'


@dataclass
class KeepAliveServer:
    base_url: str
    connections: int = 0
    open_connections: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def keep_alive_server(*, close_after_each: bool = False) -> Iterator[KeepAliveServer]:
    """HTTP/1.1 with keep-alive; `close_after_each` drops the connection after every answer without
    saying so (no `Connection: close`), as servers with a short idle timeout do."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = KeepAliveServer(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}/v1")

    def serve(conn: socket.socket) -> None:
        with server.lock:
            server.connections += 1
            server.open_connections += 1
        reader = conn.makefile("rb")
        try:
            while True:
                request_line = reader.readline()
                if not request_line:
                    return
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                reader.read(length)
                body, kind = (
                    (MODELS, b"application/json") if request_line.startswith(b"GET") else (ANSWER, b"text/event-stream")
                )
                with server.lock:
                    server.requests += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: "
                    + kind
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                if close_after_each:
                    return
        except OSError:
            return
        finally:
            with server.lock:
                server.open_connections -= 1
            reader.close()
            conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server
    finally:
        listener.close()


def _engine(server: KeepAliveServer) -> UpstreamEngine:
    engine = UpstreamEngine(ModelSpec(name="m", source="m", options={"base_url": server.base_url}))
    engine.load()
    return engine


def _chat() -> GenerationRequest:
    return GenerationRequest(
        request_id="t", sampling=SamplingParams(max_tokens=4), messages=({"role": "user", "content": "hi"},)
    )


async def _answer(engine: UpstreamEngine) -> str:
    return "".join([chunk.text async for chunk in engine.generate(_chat())])


async def _until(condition, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


async def test_requests_on_one_loop_share_a_kept_alive_connection():
    with keep_alive_server() as server:
        engine = _engine(server)
        opened_by_load = server.connections
        assert [await _answer(engine) for _ in range(5)] == ["hi"] * 5
        assert server.connections == opened_by_load + 1
        engine.unload()


async def test_a_connection_the_server_closed_meanwhile_costs_no_request():
    with keep_alive_server(close_after_each=True) as server:
        engine = _engine(server)
        for _ in range(5):
            assert await _answer(engine) == "hi"
            await _until(lambda: server.open_connections == 0)  # the server has hung up the kept-alive one
        engine.unload()


async def test_unload_closes_the_connections():
    with keep_alive_server() as server:
        engine = _engine(server)
        assert await _answer(engine) == "hi"
        await _until(lambda: server.open_connections == 1)
        assert server.open_connections == 1
        engine.unload()
        await _until(lambda: server.open_connections == 0)
        assert server.open_connections == 0
