"""The worker's gateway: which model queues its Celery consumer takes jobs from, changed live.

The reconciler opens a model's queue once its copy is ready and closes it before the copy
drains. Celery's own remote control does the same (celery.worker.control's add_consumer and
cancel_consumer): it hands `Consumer.add_task_queue` / `cancel_task_queue` to
`consumer.call_soon`, which runs them on the consumer's own thread, the only one that may touch
the kombu consumer. `call_soon` is safe to call from another thread: kombu's hub takes its
callbacks under a lock and wakes its poll (and without a hub, the synchronous loop drains a
deque). We do the same, from the reconciler's thread.

The selection in `app.amqp.queues` is the truth the consumer is rebuilt from after a lost
broker connection, so each operation updates it even while the consumer has no task consumer
(before it starts, or between reconnects); the live consumer follows when it has one.

A job already taken from a queue that was just closed still reaches this worker: the runtime
sends it back to its queue once (see WorkerRuntime._requeue).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..protocol import queue_name

logger = logging.getLogger(__name__)


class ConsumerGateway:
    """Opens and closes `model.<name>` queues on a Celery worker's consumer (the reconciler's Gateway).

    `open` and `close` record the wish and ask the consumer's thread to converge on it: kombu's
    hub keeps its pending callbacks in a set, in no order, so each callback applies the latest
    wish instead of one step, and an open quickly followed by a close ends closed.
    """

    def __init__(self, worker: Any) -> None:
        # `worker` is Celery's WorkController; its `consumer` exists once the worker is built.
        self._worker = worker
        self._lock = threading.Lock()
        self._wanted: set[str] = set()  # model names, under the lock
        self._applied: set[str] = set()  # queue names, only on the consumer's thread

    def open(self, model_name: str) -> None:
        """Start taking jobs for the model: its copy is ready."""
        with self._lock:
            if model_name in self._wanted:
                return
            self._wanted.add(model_name)
        logger.info("taking jobs for %s", model_name)
        self._converge_soon()

    def close(self, model_name: str) -> None:
        """Take no new jobs for the model: its copy is about to drain or unload."""
        with self._lock:
            if model_name not in self._wanted:
                return
            self._wanted.discard(model_name)
        logger.info("no longer taking jobs for %s", model_name)
        self._converge_soon()

    def opened(self) -> set[str]:
        """The models whose queues this worker consumes (or is about to)."""
        with self._lock:
            return set(self._wanted)

    def _converge_soon(self) -> None:
        consumer = getattr(self._worker, "consumer", None)
        if consumer is None:  # not built yet: the selection is what it will start from
            self._converge(None)
        else:
            consumer.call_soon(self._converge, consumer)

    def _converge(self, consumer: Any) -> None:
        """On the consumer's thread (or before the consumer exists): consume exactly the wanted queues."""
        with self._lock:
            wanted = {queue_name(name) for name in self._wanted}
        queues = self._worker.app.amqp.queues
        for queue in sorted(self._applied - wanted):
            queues.deselect(queue)
            self._live(consumer, "cancel_task_queue", queue)
        for queue in sorted(wanted - self._applied):
            queues.select_add(queue)
            self._live(consumer, "add_task_queue", queue)
        self._applied = wanted

    @staticmethod
    def _live(consumer: Any, operation: str, queue: str) -> None:
        """Apply the change to the running task consumer, if there is one now.

        Without one (not started yet, or reconnecting to the broker), or if the change fails
        with the connection, the selection above is what the consumer is rebuilt from.
        """
        if consumer is None or consumer.task_consumer is None:
            return
        try:
            getattr(consumer, operation)(queue)
        except Exception:
            logger.warning(
                "could not %s %s now; the consumer takes it up when it reconnects", operation, queue, exc_info=True
            )
