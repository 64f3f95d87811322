"""Registry reads remembered for a moment on the request path, cleared when this process saves."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class RecentReads(Generic[Value]):
    """Values by key, each trusted for `ttl_seconds` after it was read; at most `max_entries` kept."""

    def __init__(self, *, ttl_seconds: float, max_entries: int):
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._values: dict[Hashable, tuple[float, Value]] = {}  # key -> (trusted until, monotonic; value)

    async def get(self, key: Hashable, read: Callable[[], Awaitable[Value]]) -> Value:
        """The remembered value while fresh; otherwise `read()` it and remember it."""
        now = time.monotonic()
        remembered = self._values.get(key)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        value = await read()
        if len(self._values) >= self.max_entries:
            self._values.clear()  # rare; each key is read again
        self._values[key] = (now + self.ttl_seconds, value)
        return value

    def forget(self, **_signal_kwargs: object) -> None:
        """Read everything again next time (connected to the registry's save and delete signals)."""
        self._values.clear()

    def expire_all(self) -> None:
        """What the TTL passing does to every remembered value, without waiting for it (tests)."""
        self._values = {key: (0.0, value) for key, (_, value) in self._values.items()}
