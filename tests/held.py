"""Requests held open until the test lets them go, so tests wait on states, not on durations."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from models_registry.models import ServedModel
from models_registry.services.served_models import served_model_register

# Only turns a hang into a failure; nothing here waits this long when things work.
DEADLINE_S = 120
# At 20 ms a token, LONG_WORDS words take 80 s to echo: a request of them is still running
# whenever a test looks, until the test hangs it up.
LONG_WORDS = 4000
LONG_ECHO = "long-echo"


def register_long_echo() -> ServedModel:
    """The echo engine with room for long_chat(): a request that runs until something stops it."""
    return served_model_register(
        name=LONG_ECHO,
        source="",
        engine="echo",
        context_length=2 * LONG_WORDS + 64,
        engine_options={"token_delay_ms": 20},
    )


def long_chat(**extra) -> dict:
    """A chat body for the long echo model that generates LONG_WORDS tokens."""
    return {
        "model": LONG_ECHO,
        "max_tokens": LONG_WORDS,
        "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(LONG_WORDS))}],
        **extra,
    }


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds saying what never happened."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class HeldPost:
    """A POST through the ASGI app from a client that stays connected until the test hangs it up.

    httpx's ASGITransport cannot do this: it only returns once the application is done.
    """

    def __init__(self, app, path: str, body: dict, *, key: str):
        self._hang_up = asyncio.Event()
        self.sent: list[dict] = []  # the ASGI messages the application has sent so far
        self.task = asyncio.create_task(self._post(app, path, json.dumps(body).encode(), key))

    async def hang_up(self) -> list[dict]:
        """Disconnect; return the ASGI messages the application sent (none if it was still working)."""
        self._hang_up.set()
        return await self.task

    async def _post(self, app, path: str, payload: bytes, key: str) -> list[dict]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"authorization", f"Bearer {key}".encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        body_sent = False

        async def receive() -> dict:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await self._hang_up.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            self.sent.append(message)

        await app(scope, receive, send)
        return self.sent


async def hang_up_all(held: list[HeldPost]) -> list[list[dict]]:
    """Hang up one client after the other, so the records of their requests are written apart."""
    return [await post.hang_up() for post in held]
