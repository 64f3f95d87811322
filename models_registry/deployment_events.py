"""Wake every engine host's reconciler when what the deployments ask for changes.

The database says what each host should hold (served models, workers, copies); hosts re-read it
every RECONCILE_SECONDS anyway. An event only makes them read it now, so that an edit in the
admin takes effect within a second or two: a Redis pub/sub message in distributed mode, and in
every mode a call to the listeners of this process (the embedded host's reconciler).

Events: {"kind": "changed"} (re-read the deployments) and {"kind": "unload", "model": name}
(drop every copy of the model now: the admin's unload action).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

CHANNEL = "inference:deployments"

Listener = Callable[[dict[str, Any]], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def listen(listener: Listener) -> Callable[[], None]:
    """Call `listener` with each event announced in this process; returns the function that stops it."""
    with _lock:
        _listeners.append(listener)

    def stop() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return stop


def announce(kind: str = "changed", **fields: Any) -> None:
    """Send the event once the current transaction commits (at once outside one)."""
    event = {"kind": kind, **fields}
    transaction.on_commit(lambda: _send(event))


def _send(event: dict[str, Any]) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            logger.exception("deployment event listener failed on %r", event)
    if settings.REDIS_URL:
        try:
            client = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS,
            )
            with client:
                client.publish(CHANNEL, json.dumps(event))
        except redis.RedisError as exc:  # hosts still converge at their next periodic read
            logger.warning("could not announce deployment event %r: %s", event["kind"], exc)
