"""Per-key limits: requests per minute, tokens per minute and concurrent requests.

One interface, two backends with the same semantics:

- `RedisLimiter` (distributed mode, `REDIS_URL` set): one Lua script admits a request
  atomically, so the limits hold across every web process sharing the Redis.
- `LocalLimiter` (embedded mode): the same counters in this process's memory, guarded by a lock.

Semantics, per key:

- **RPM**: fixed one-minute windows aligned to the clock (the Redis server's clock when
  distributed). Only admitted requests count; a request rejected with 429 does not.
- **TPM**: prompt + completion tokens are added to the window in which the request *ends*,
  once the engine has counted them. A request is admitted while the current window's total
  is below the limit, so a window can overshoot by what the requests in flight at its end
  use; the next window then starts fresh. (Reserving `max_tokens` up front would reject
  requests that never use their budget, and most clients leave `max_tokens` unset.)
- **Concurrency**: a counter incremented at admission and decremented when the request
  ends, whatever the outcome (success, error, client gone). In Redis the counter carries a
  TTL of `CONCURRENCY_TTL_SECONDS`, refreshed at every admission, so a web process that dies
  with requests in flight cannot leak slots forever.

Retry-After is the time left in the current window for RPM and TPM, and 1 second for
concurrency (a slot frees whenever any request of the key ends).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from redis.exceptions import RedisError

from .errors import RateLimited, ServiceUnavailable
from .protocol import LIMITS_PREFIX, limits_key, redis_client

if TYPE_CHECKING:
    from models_registry.models import ApiKey

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# Safety net for the Redis concurrency counter; refreshed by every admission.
CONCURRENCY_TTL_SECONDS = 3600
CONCURRENCY_RETRY_AFTER = 1
DEFAULT_PREFIX = LIMITS_PREFIX

_RPM, _TPM, _CONCURRENCY = "rpm", "tpm", "concurrency"


@dataclass(frozen=True)
class KeyLimits:
    key_id: int
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @classmethod
    def of(cls, key: ApiKey) -> KeyLimits:
        return cls(key_id=key.pk, rpm=key.rpm_limit, tpm=key.tpm_limit, concurrency=key.concurrency_limit)

    @property
    def unlimited(self) -> bool:
        return not (self.rpm or self.tpm or self.concurrency)


def _rejection(which: str, limit: int, retry_after: int) -> RateLimited:
    what = {_RPM: "requests per minute", _TPM: "tokens per minute", _CONCURRENCY: "concurrent requests"}[which]
    return RateLimited(
        f"Rate limit reached for this API key: {limit} {what}. Try again in {retry_after} s.", retry_after=retry_after
    )


class Admission:
    """A request that got in. `finish(tokens=...)` once when it ends; later calls do nothing."""

    def __init__(self, limiter: Limiter | None, limits: KeyLimits) -> None:
        self._limiter = limiter
        self.limits = limits
        self._finished = limiter is None

    async def finish(self, *, tokens: int = 0) -> None:
        """Give back the concurrency slot and add the request's tokens. Never raises."""
        if self._finished or self._limiter is None:  # no limiter (unlimited key): nothing to give back
            return
        self._finished = True
        try:
            # Shielded: a cancelled request must still give its slot back.
            await asyncio.shield(self._limiter.release(self.limits, tokens=tokens))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("could not release the limits of key %s", self.limits.key_id)


class Limiter:
    """The interface. `admit` raises RateLimited (429) when a limit is reached."""

    async def admit(self, limits: KeyLimits) -> Admission:
        if limits.unlimited:
            return Admission(None, limits)
        await self._admit(limits)
        return Admission(self, limits)

    async def _admit(self, limits: KeyLimits) -> None:
        raise NotImplementedError

    async def release(self, limits: KeyLimits, *, tokens: int) -> None:
        raise NotImplementedError


class LocalLimiter(Limiter):
    """Embedded mode: counters in this process. Check and commit happen under one lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int], tuple[int, int]] = {}  # (kind, key) -> (window, count)
        self._in_flight: dict[int, int] = {}

    def _count(self, kind: str, key_id: int, window: int) -> int:
        stored_window, count = self._windows.get((kind, key_id), (window, 0))
        return count if stored_window == window else 0

    async def _admit(self, limits: KeyLimits) -> None:
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        with self._lock:
            if limits.tpm and self._count(_TPM, limits.key_id, window) >= limits.tpm:
                raise _rejection(_TPM, limits.tpm, retry_after)
            if limits.rpm and self._count(_RPM, limits.key_id, window) >= limits.rpm:
                raise _rejection(_RPM, limits.rpm, retry_after)
            if limits.concurrency and self._in_flight.get(limits.key_id, 0) >= limits.concurrency:
                raise _rejection(_CONCURRENCY, limits.concurrency, CONCURRENCY_RETRY_AFTER)
            if limits.rpm:
                self._windows[(_RPM, limits.key_id)] = (window, self._count(_RPM, limits.key_id, window) + 1)
            if limits.concurrency:
                self._in_flight[limits.key_id] = self._in_flight.get(limits.key_id, 0) + 1

    async def release(self, limits: KeyLimits, *, tokens: int) -> None:
        window = int(self._clock() // WINDOW_SECONDS)
        with self._lock:
            if limits.concurrency:
                left = self._in_flight.get(limits.key_id, 0) - 1
                if left > 0:
                    self._in_flight[limits.key_id] = left
                else:
                    self._in_flight.pop(limits.key_id, None)
            if limits.tpm and tokens > 0:
                self._windows[(_TPM, limits.key_id)] = (window, self._count(_TPM, limits.key_id, window) + tokens)

    def in_flight(self, key_id: int) -> int:
        return self._in_flight.get(key_id, 0)


# KEYS[1]: this key's base name. ARGV: rpm, tpm, concurrency limits (0 = none), window
# seconds, concurrency TTL. Returns {0} when admitted, else {1|2|3 (rpm|tpm|concurrency), retry_after}.
# Time comes from the Redis server, so every web process agrees on the window.
_ADMIT = """
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local width, conc_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = math.floor(now / width)
local retry = math.max(1, math.ceil((window + 1) * width - now))
local rpm_key = KEYS[1] .. ':rpm:' .. window
local tpm_key = KEYS[1] .. ':tpm:' .. window
local conc_key = KEYS[1] .. ':concurrency'
if tpm > 0 and tonumber(redis.call('GET', tpm_key) or '0') >= tpm then return {2, retry} end
if rpm > 0 and tonumber(redis.call('GET', rpm_key) or '0') >= rpm then return {1, retry} end
if conc > 0 and tonumber(redis.call('GET', conc_key) or '0') >= conc then return {3, 1} end
if rpm > 0 then
  redis.call('INCR', rpm_key)
  redis.call('EXPIRE', rpm_key, width * 2)
end
if conc > 0 then
  redis.call('INCR', conc_key)
  redis.call('EXPIRE', conc_key, conc_ttl)
end
return {0}
"""

# KEYS[1]: base name. ARGV: release a concurrency slot (0/1), tokens to add, window seconds.
_RELEASE = """
local release, tokens, width = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if release == 1 then
  local conc_key = KEYS[1] .. ':concurrency'
  if redis.call('EXISTS', conc_key) == 1 and redis.call('DECR', conc_key) <= 0 then
    redis.call('DEL', conc_key)
  end
end
if tokens > 0 then
  local t = redis.call('TIME')
  local window = math.floor(tonumber(t[1]) / width)
  local tpm_key = KEYS[1] .. ':tpm:' .. window
  redis.call('INCRBY', tpm_key, tokens)
  redis.call('EXPIRE', tpm_key, width * 2)
end
return 0
"""

_KINDS = {1: _RPM, 2: _TPM, 3: _CONCURRENCY}


class RedisLimiter(Limiter):
    """Distributed mode: counters in Redis, checked and updated by one Lua script per call."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout if timeout is not None else settings.REDIS_TIMEOUT_SECONDS

    def base(self, key_id: int) -> str:
        return limits_key(key_id, self.prefix)

    async def _eval(self, script: str, key_id: int, *args: int) -> Any:
        """The script's reply as redis-py decodes it (a list or an int; its `eval` is typed Any)."""
        async with redis_client(url=self.url, timeout=self.timeout) as client:
            return await client.eval(script, 1, self.base(key_id), *args)

    async def _admit(self, limits: KeyLimits) -> None:
        try:
            result: list[int] = await self._eval(
                _ADMIT,
                limits.key_id,
                limits.rpm or 0,
                limits.tpm or 0,
                limits.concurrency or 0,
                WINDOW_SECONDS,
                CONCURRENCY_TTL_SECONDS,
            )
        except (RedisError, OSError) as exc:
            logger.warning("rate limiter unreachable: %s", exc)
            raise ServiceUnavailable("The rate limiter is unreachable; try again shortly.") from exc
        if int(result[0]) != 0:
            kind = _KINDS[int(result[0])]
            # The script refuses a request only for a limit that is set, so `or 0` never applies.
            limit = {_RPM: limits.rpm or 0, _TPM: limits.tpm or 0, _CONCURRENCY: limits.concurrency or 0}[kind]
            raise _rejection(kind, limit, int(result[1]))

    async def release(self, limits: KeyLimits, *, tokens: int) -> None:
        tokens = tokens if limits.tpm else 0
        if not limits.concurrency and not tokens:
            return
        await self._eval(_RELEASE, limits.key_id, 1 if limits.concurrency else 0, tokens, WINDOW_SECONDS)


_local = LocalLimiter()


def limiter() -> Limiter:
    """The limiter for this process's mode."""
    return RedisLimiter(settings.REDIS_URL) if settings.DISTRIBUTED else _local


async def limits_admit(*, key: ApiKey) -> Admission:
    """Admit one request of `key` or raise RateLimited (429, with a Retry-After)."""
    return await limiter().admit(KeyLimits.of(key))
