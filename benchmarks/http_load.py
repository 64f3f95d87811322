"""A closed-loop HTTP/1.1 load client that costs as little CPU as it can.

On a 2-core machine the client shares the cores with the server it measures: an SDK client
(httpx, openai) spends a millisecond or more per request of its own, which would show as the
server's latency. This one writes a prepared request on a keep-alive connection and reads the
answer with asyncio streams, nothing more. Every concurrency level sends the same request.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from benchmarks.machine import CpuAccount
from benchmarks.streaming import cpu_record, ms, percentile

CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0


@dataclass
class Sample:
    ok: bool
    latency_s: float
    error: str | None = None


def chat_request(base_url: str, api_key: str, model: str, *, prompt: str = "Say hello.", max_tokens: int = 16) -> bytes:
    """A non-streamed chat completion as raw HTTP/1.1 bytes, ready to be written as often as needed."""
    url = urlsplit(base_url)
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
    ).encode()
    headers = [
        f"POST {url.path.rstrip('/')}/v1/chat/completions HTTP/1.1",
        f"Host: {url.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Accept: application/json",
    ]
    if api_key:
        headers.append(f"Authorization: Bearer {api_key}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; reopened when the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request, return (status, body)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
            )
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection before answering")
        status = int(status_line.split()[1])
        length, chunked, close = None, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"connection" and value == b"close":
                close = True
        if chunked:
            body = bytearray()
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                body += await self.reader.readexactly(size + 2)
                del body[-2:]
            body = bytes(body)
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body, close = await self.reader.read(), True
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def one_request(connection: Connection, request: bytes) -> Sample:
    """One exchange; a non-200 or an answer without choices counts as an error."""
    start = time.perf_counter()
    try:
        status, body = await asyncio.wait_for(connection.exchange(request), REQUEST_TIMEOUT_S)
    except Exception as exc:
        connection.close()
        return Sample(False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"[:200])
    elapsed = time.perf_counter() - start
    if status != 200 or b'"choices"' not in body:
        return Sample(False, elapsed, f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
    return Sample(True, elapsed)


@dataclass
class LevelResult:
    level: int
    requests: int
    wall_s: float
    samples: list[Sample] = field(repr=False)
    cpu: dict | None = None

    def summary(self) -> dict:
        ok = [s.latency_s for s in self.samples if s.ok]
        return {
            "level": self.level,
            "requests": self.requests,
            "ok": len(ok),
            "errors": self.requests - len(ok),
            "wall_s": round(self.wall_s, 3),
            "requests_per_s": round(len(ok) / self.wall_s, 1) if self.wall_s > 0 else None,
            "latency_p50_ms": ms(percentile(ok, 0.5)),
            "latency_p99_ms": ms(percentile(ok, 0.99)),
            "error_messages": sorted({s.error for s in self.samples if not s.ok})[:5],
            "cpu": self.cpu,
        }


async def run_level(host: str, port: int, request: bytes, level: int, n_requests: int) -> LevelResult:
    """Keep `level` requests in flight, one connection each, until `n_requests` are done."""
    remaining = iter(range(n_requests))
    samples: list[Sample] = []

    async def client_loop():
        connection = Connection(host, port)
        try:
            for _ in remaining:  # one shared iterator: the loops take turns drawing from it
                samples.append(await one_request(connection, request))
        finally:
            connection.close()

    cpu = CpuAccount()
    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(min(level, n_requests))))
    wall = time.perf_counter() - start
    return LevelResult(level, n_requests, wall, samples, cpu_record(cpu.measure()))


async def measure_levels(
    base_url: str, api_key: str, model: str, levels: list[int], *, requests_per_level, warmup: int, label: str = ""
) -> list[dict]:
    """Warm up, then each level in turn; one progress line per level. Returns the level summaries."""
    url = urlsplit(base_url)
    request = chat_request(base_url, api_key, model)
    warm = await run_level(url.hostname, url.port, request, min(4, max(levels)), warmup)
    failed = [s.error for s in warm.samples if not s.ok]
    if failed:
        raise RuntimeError(f"{label}warm-up failed: {failed[0]}")
    summaries = []
    for level in levels:
        result = await run_level(url.hostname, url.port, request, level, requests_per_level(level))
        s = result.summary()
        other = (s["cpu"] or {}).get("other_share")
        print(
            f"  {label}c={level:>3}: {s['ok']}/{s['requests']} ok in {s['wall_s']:.2f}s, "
            f"{s['requests_per_s']} req/s, p50 {s['latency_p50_ms']} ms, p99 {s['latency_p99_ms']} ms"
            + (f", other processes {other:.0%} of the machine" if other is not None else ""),
            flush=True,
        )
        summaries.append(s)
    return summaries
