"""This process's system sampler, and in distributed mode every process's summary through Redis.

Each process publishes its summary under its own key (host:pid) with a TTL of a few sample
intervals, so a process that dies drops out of the hosts list by itself, and reading the list
needs no registry of processes.
"""

from __future__ import annotations

import json
import logging
import math
import threading

import redis
from django.conf import settings
from redis.exceptions import RedisError

from .sampler import GpuProbe, SystemSampler

logger = logging.getLogger(__name__)

KEY_PREFIX = "inference:system:"
MIN_TTL_SECONDS = 15

_lock = threading.Lock()
_sampler: SystemSampler | None = None
_publisher: RedisPublisher | None = None


def host_key(host: str, pid: int) -> str:
    return f"{KEY_PREFIX}{host}:{pid}"


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, **settings.REDIS_CONNECTION_OPTIONS,
                                socket_timeout=settings.REDIS_TIMEOUT_SECONDS)


class RedisPublisher:
    """Writes each summary to Redis; an outage is logged once, not at every tick."""

    def __init__(self):
        self._client = _client()
        self._ttl = math.ceil(max(3 * settings.SYSTEM_SAMPLE_SECONDS, MIN_TTL_SECONDS))
        self._failing = False

    def __call__(self, summary: dict) -> None:
        try:
            self._client.set(host_key(summary["host"], summary["pid"]), json.dumps(summary), ex=self._ttl)
        except RedisError as exc:
            if not self._failing:
                logger.warning("cannot publish system samples to Redis: %s", exc)
            self._failing = True
        else:
            self._failing = False

    def withdraw(self, host: str, pid: int) -> None:
        try:
            self._client.delete(host_key(host, pid))
        except RedisError:
            pass  # the key expires anyway
        self._client.close()


def process_sampler() -> SystemSampler:
    """This process's sampler, created on first use; it samples in the background once started."""
    global _sampler
    with _lock:
        if _sampler is None:
            _sampler = SystemSampler(disk_path=str(settings.BASE_DIR), gpu=GpuProbe.open())
        return _sampler


def start_process_sampler(*, role: str, name: str = "") -> SystemSampler:
    """Start sampling this process in the background; calls after the first change nothing."""
    global _publisher
    sampler = process_sampler()
    with _lock:
        if sampler.running or settings.SYSTEM_SAMPLE_SECONDS <= 0:
            return sampler
        sampler.role, sampler.name = role, name
        _publisher = RedisPublisher() if settings.DISTRIBUTED else None
        sampler.start(settings.SYSTEM_SAMPLE_SECONDS, publish=_publisher)
    return sampler


def stop_process_sampler() -> None:
    """Stop sampling and leave the hosts list at once (a worker shutting down)."""
    global _publisher
    with _lock:
        if _sampler is None or not _sampler.running:
            return
        _sampler.stop()
        if _publisher is not None:
            _publisher.withdraw(_sampler.host, _sampler.pid)
            _publisher = None


def published_summaries() -> list[dict]:
    """Summaries every live process published to Redis (distributed mode)."""
    with _client() as client:
        keys = sorted(client.scan_iter(match=f"{KEY_PREFIX}*", count=500))
        values = client.mget(keys) if keys else []
    return [json.loads(value) for value in values if value]


def hosts_status() -> list[dict]:
    """This process's summary and, in distributed mode, every other live process's."""
    mine = process_sampler().summary()
    others: list[dict] = []
    if settings.DISTRIBUTED:
        try:
            others = [s for s in published_summaries() if (s["host"], s["pid"]) != (mine["host"], mine["pid"])]
        except RedisError as exc:
            logger.warning("cannot read other hosts' system samples: %s", exc)
    return sorted([mine, *others], key=lambda s: (s["host"], s["role"], s["pid"]))
