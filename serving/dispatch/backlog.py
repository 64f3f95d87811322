"""Distributed mode's bounded queue: a model's jobs waiting in Redis, their limit and drain rate.

Celery's Redis transport keeps a queue as a list under its name, and a worker pops a job only
when it has a free engine slot (CELERY_WORKER_DISABLE_PREFETCH), so the list's length is the
number of jobs waiting for a slot. A web process refuses a job at once, with a 429 and
Retry-After, when that many already wait as the model's `max_waiting` engine option allows.

The check and the enqueue are two steps, not one: requests checked at the same instant may
each see the last free place and all enqueue, so a queue can exceed its limit by the number
of requests admitted concurrently. That is tolerated; the limit bounds the wait, not exactly.

Workers count each job they finish in a Redis counter per model and time bucket; the rate
over the last DRAIN_WINDOW_SECONDS gives Retry-After: how long until the queue has room.
"""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis

from engines.errors import EngineBusyError

from ..protocol import finished_key

DRAIN_WINDOW_SECONDS = 30
BUCKET_SECONDS = 5
# Retry-After when no job finished within the window (nothing to estimate from), and its cap.
UNKNOWN_DRAIN_RETRY_AFTER = 5
MAX_RETRY_AFTER = 60


async def count_finished(client: aioredis.Redis, model_name: str) -> None:
    """Add one finished job to the model's current bucket (called by the worker that ran it)."""
    key = finished_key(model_name, int(time.time() // BUCKET_SECONDS))
    async with client.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, DRAIN_WINDOW_SECONDS + 2 * BUCKET_SECONDS)
        await pipe.execute()


async def drain_rate(client: aioredis.Redis, model_name: str) -> float:
    """Jobs per second that the model's workers finished over about the last DRAIN_WINDOW_SECONDS."""
    now = time.time()
    current = int(now // BUCKET_SECONDS)
    buckets = range(current - DRAIN_WINDOW_SECONDS // BUCKET_SECONDS, current + 1)
    counts = await client.mget([finished_key(model_name, b) for b in buckets])
    finished = sum(int(c) for c in counts if c)
    # The window's full buckets plus the part of the current one that has passed.
    span = DRAIN_WINDOW_SECONDS + (now - current * BUCKET_SECONDS)
    return finished / span


def retry_after(waiting: int, limit: int, per_second: float) -> int:
    """Seconds until enough jobs drain that one more would fit under the limit."""
    if per_second <= 0:
        return UNKNOWN_DRAIN_RETRY_AFTER
    to_drain = waiting - limit + 1
    return max(1, min(MAX_RETRY_AFTER, math.ceil(to_drain / per_second)))


async def require_room(client: aioredis.Redis, model_name: str, queue: str, limit: int) -> None:
    """Raise EngineBusyError when `queue` already holds `limit` jobs or more."""
    waiting = await client.llen(queue)
    if waiting < limit:
        return
    seconds = retry_after(waiting, limit, await drain_rate(client, model_name))
    raise EngineBusyError(
        f"Model `{model_name}` has {waiting} requests waiting for a worker (limit {limit}); retry in about {seconds}s.",
        retry_after=seconds,
    )
