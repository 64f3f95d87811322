"""This process's system sampler, and where it publishes its summary.

In distributed mode every process shares its summary with the others; serving does the
sharing (serving/hosts.py, over Redis) and hands the sampler a `Publisher` when it starts it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from django.conf import settings

from .sampler import GpuProbe, SystemSampler

_lock = threading.Lock()
_sampler: SystemSampler | None = None
_publisher: Publisher | None = None


class Publisher(Protocol):
    """Takes each summary as the sampler makes it; `withdraw` removes this process's when it stops."""

    def __call__(self, summary: dict) -> None: ...

    def withdraw(self, host: str, pid: int) -> None: ...


def process_sampler() -> SystemSampler:
    """This process's sampler, created on first use; it samples in the background once started."""
    global _sampler
    with _lock:
        if _sampler is None:
            _sampler = SystemSampler(disk_path=str(settings.BASE_DIR), gpu=GpuProbe.open())
        return _sampler


def start_process_sampler(
    *, role: str, name: str = "", publisher: Callable[[], Publisher] | None = None
) -> SystemSampler:
    """Start sampling this process in the background; calls after the first change nothing.

    `publisher` makes where the summaries go, if anywhere, once sampling really starts.
    """
    global _publisher
    sampler = process_sampler()
    with _lock:
        if sampler.running or settings.SYSTEM_SAMPLE_SECONDS <= 0:
            return sampler
        sampler.role, sampler.name = role, name
        _publisher = publisher() if publisher is not None else None
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


def process_summary() -> dict:
    """This process's latest sample and averages."""
    return process_sampler().summary()
