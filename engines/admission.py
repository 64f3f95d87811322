"""Backpressure for an engine with a fixed number of slots: a bounded queue, fair across tenants.

A request needs one slot per choice (`sampling.n`). While slots are free and nobody waits,
it goes straight in. Otherwise it waits, up to `max_waiting` requests in all; past that it
is refused at once with EngineBusyError, whose `retry_after` comes from how fast the queue
has drained lately. Waiting requests are served round-robin across tenants (API keys): each
tenant with requests waiting has its own FIFO, and a freed slot goes to the waiting tenant with
the fewest requests running, then the one admitted least recently: a key that just got a slot
waits behind keys that did not. When the queue is full, a newcomer whose tenant holds at least two fewer places
than the tenant holding the most takes that tenant's newest place (which is refused
instead): one key's burst cannot take the whole queue from the others.

Everything runs on the event loop that drives the engine; no locks are needed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

from .errors import EngineBusyError, EngineUnavailableError

# Requests that may wait for a slot per model unless its engine options say `max_waiting`.
DEFAULT_MAX_WAITING = 64
# The drain rate is measured over the releases of this many recent seconds.
DRAIN_WINDOW_SECONDS = 60.0
# Clients (the openai SDK among them) honour a Retry-After up to 60 s; past this the estimate
# says little anyway.
MAX_RETRY_AFTER_SECONDS = 30


@dataclasses.dataclass(eq=False)
class _Waiter:
    tenant: str
    need: int
    granted: asyncio.Future[None]


class AdmissionQueue:
    """One engine's slots and the requests waiting for them."""

    def __init__(self, *, slots: int, max_waiting: int, model: str = "", clock: Callable[[], float] = time.monotonic):
        self.slots = slots
        self.max_waiting = max_waiting
        self.model = model
        self._clock = clock
        self.slots_in_use = 0
        self.running = 0  # admitted requests (each holds `need` slots)
        self.refused = 0
        # Per tenant with requests waiting, oldest first; tenants in the order they began waiting.
        self._waiting: dict[str, collections.deque[_Waiter]] = {}
        self._waiting_count = 0
        # Per tenant with requests running or waiting: how many run, and when it was last admitted.
        self._running_by_tenant: collections.Counter[str] = collections.Counter()
        self._admitted_at: dict[str, int] = {}
        self._admissions = 0
        self._released: collections.deque[float] = collections.deque()

    @property
    def waiting(self) -> int:
        return self._waiting_count

    def waiting_by_tenant(self) -> dict[str, int]:
        """Places held per tenant (for status pages and tests)."""
        return {tenant: len(queue) for tenant, queue in self._waiting.items()}

    def admitted(self, *, tenant: str = "", need: int = 1) -> _Admission:
        """`async with` it to hold `need` slots for the body; waits for them, or raises EngineBusyError."""
        need = max(1, min(need, self.slots))  # more choices than slots: all slots, the scheduler queues the rest
        return _Admission(self, tenant, need)

    async def _acquire(self, tenant: str, need: int) -> None:
        if not self._waiting_count and self.slots_in_use + need <= self.slots:
            self._take(tenant, need)
            return
        if self._waiting_count >= self.max_waiting and not self._push_out_for(tenant):
            raise self._busy()
        waiter = _Waiter(tenant, need, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(tenant, collections.deque()).append(waiter)
        self._waiting_count += 1
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled() and waiter.granted.exception() is None:
                self._release(tenant, need)  # granted just as the client left: give the slots on
            else:
                self._forget(waiter)
            raise

    def _take(self, tenant: str, need: int) -> None:
        self.slots_in_use += need
        self.running += 1
        self._running_by_tenant[tenant] += 1
        self._admissions += 1
        self._admitted_at[tenant] = self._admissions

    def _release(self, tenant: str, need: int) -> None:
        self.slots_in_use -= need
        self.running -= 1
        self._running_by_tenant[tenant] -= 1
        if not self._running_by_tenant[tenant]:
            del self._running_by_tenant[tenant]
            if tenant not in self._waiting:
                self._admitted_at.pop(tenant, None)
        now = self._clock()
        self._released.append(now)
        self._trim(now)
        self._serve()

    def _serve(self) -> None:
        """Admit waiters while the next tenant's oldest fits (none is skipped: a request needing
        many slots is not starved by smaller ones behind it)."""
        while self._waiting:
            tenant = min(
                self._waiting, key=lambda name: (self._running_by_tenant[name], self._admitted_at.get(name, 0))
            )
            queue = self._waiting[tenant]
            head = queue[0]
            if self.slots_in_use + head.need > self.slots:
                return
            queue.popleft()
            self._waiting_count -= 1
            if not queue:
                del self._waiting[tenant]
            self._take(tenant, head.need)
            head.granted.set_result(None)

    def _forget(self, waiter: _Waiter) -> None:
        """A waiter that left (client gone, or pushed out) gives its place back."""
        queue = self._waiting.get(waiter.tenant)
        if queue is None or waiter not in queue:
            return
        queue.remove(waiter)
        self._waiting_count -= 1
        if not queue:
            del self._waiting[waiter.tenant]
            if waiter.tenant not in self._running_by_tenant:
                self._admitted_at.pop(waiter.tenant, None)
        self._serve()  # the head may have been the one that did not fit

    def _push_out_for(self, tenant: str) -> bool:
        """Refuse the newest waiter of the tenant holding the most places, if that tenant holds at
        least two more than `tenant`; True when a place was freed."""
        if not self._waiting:
            return False
        heaviest = max(self._waiting, key=lambda name: len(self._waiting[name]))
        if len(self._waiting[heaviest]) < len(self._waiting.get(tenant, ())) + 2:
            return False
        waiter = self._waiting[heaviest][-1]
        self._forget(waiter)
        waiter.granted.set_exception(self._busy())
        return True

    def _busy(self) -> EngineBusyError:
        self.refused += 1
        retry_after = self.retry_after()
        return EngineBusyError(
            f"Model `{self.model}` is at capacity: {self.running} requests running and "
            f"{self._waiting_count} waiting (max_waiting {self.max_waiting}). Try again in {retry_after} s.",
            retry_after=retry_after,
        )

    def drain_rate(self) -> float | None:
        """Requests finished per second over the recent window; None when none finished in it."""
        now = self._clock()
        self._trim(now)
        if not self._released:
            return None
        return len(self._released) / max(now - self._released[0], 1.0)

    def retry_after(self) -> int:
        """Seconds until the requests waiting now should have drained: waiting / drain rate.

        With no recent finish to measure, one request a second is assumed.
        """
        rate = self.drain_rate() or 1.0
        return max(1, min(MAX_RETRY_AFTER_SECONDS, math.ceil(self._waiting_count / rate)))

    def _trim(self, now: float) -> None:
        while self._released and self._released[0] < now - DRAIN_WINDOW_SECONDS:
            self._released.popleft()

    def stats(self) -> dict[str, int]:
        return {
            "num_requests_running": self.running,
            "num_requests_waiting": self._waiting_count,
            "slots": self.slots,
            "slots_in_use": self.slots_in_use,
            "max_waiting": self.max_waiting,
            "refused": self.refused,
        }


class _Admission:
    """One request's hold on its slots.

    A class rather than an async generator: when an event loop shuts down it closes every
    async generator in no particular order, and a generator-based context manager closed
    before the generator using it would then fail that one's clean-up.
    """

    def __init__(self, queue: AdmissionQueue, tenant: str, need: int):
        self._queue, self._tenant, self._need = queue, tenant, need

    async def __aenter__(self) -> None:
        await self._queue._acquire(self._tenant, self._need)

    async def __aexit__(self, *exc_info: object) -> None:
        self._queue._release(self._tenant, self._need)


def max_waiting_option(options: dict[str, Any], model: str) -> int:
    """The `max_waiting` engine option, checked; DEFAULT_MAX_WAITING when absent."""
    value = options.get("max_waiting", DEFAULT_MAX_WAITING)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EngineUnavailableError(
            f"engine option max_waiting of model `{model}` must be a whole number of 0 or more, not {value!r}"
        )
    return value
