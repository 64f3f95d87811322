"""Every process's system summary: monitoring samples this process, serving shares it.

In distributed mode each web and worker process publishes its summary under its own Redis
key (host:pid) with a TTL of a few sample intervals, so a process that dies drops out of the
hosts list by itself, and reading the list needs no registry of processes.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from monitoring.host_samples import process_summary, start_process_sampler, stop_process_sampler
from monitoring.sampler import SystemSampler

from .protocol import SYSTEM_SUMMARY_PREFIX, redis_client, system_summary_key

logger = logging.getLogger(__name__)

MIN_TTL_SECONDS = 15


class RedisPublisher:
    """Writes each summary to Redis; an outage is logged once, not at every tick."""

    def __init__(self) -> None:
        self._client = redis_client(sync=True)
        self._ttl = math.ceil(max(3 * settings.SYSTEM_SAMPLE_SECONDS, MIN_TTL_SECONDS))
        self._failing = False

    def __call__(self, summary: dict[str, Any]) -> None:
        try:
            self._client.set(system_summary_key(summary["host"], summary["pid"]), json.dumps(summary), ex=self._ttl)
        except RedisError as exc:
            if not self._failing:
                logger.warning("cannot publish system samples to Redis: %s", exc)
            self._failing = True
        else:
            self._failing = False

    def withdraw(self, host: str, pid: int) -> None:
        try:
            self._client.delete(system_summary_key(host, pid))
        except RedisError:
            pass  # the key expires anyway
        self._client.close()


def start_sampling(*, role: str, name: str = "") -> SystemSampler:
    """Sample this process in the background and, in distributed mode, share its summaries."""
    return start_process_sampler(role=role, name=name, publisher=RedisPublisher if settings.DISTRIBUTED else None)


def stop_sampling() -> None:
    """Stop sampling and leave the hosts list at once (a worker shutting down)."""
    stop_process_sampler()


def published_summaries() -> list[dict[str, Any]]:
    """Summaries every live process published to Redis (distributed mode)."""
    with redis_client(sync=True) as client:
        keys = sorted(client.scan_iter(match=f"{SYSTEM_SUMMARY_PREFIX}*", count=500))
        values = client.mget(keys) if keys else []
    return [json.loads(value) for value in values if value]


def hosts_status() -> list[dict[str, Any]]:
    """This process's summary and, in distributed mode, every other live process's."""
    mine = process_summary()
    others: list[dict[str, Any]] = []
    if settings.DISTRIBUTED:
        try:
            others = [s for s in published_summaries() if (s["host"], s["pid"]) != (mine["host"], mine["pid"])]
        except RedisError as exc:
            logger.warning("cannot read other hosts' system samples: %s", exc)
    return sorted([mine, *others], key=lambda s: (s["host"], s["role"], s["pid"]))
