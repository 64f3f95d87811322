"""Celery worker bootstep: host engines for the chosen models and consume their queues."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.signals import worker_shutting_down

from ..protocol import queue_name
from .pool_size import pool_concurrency
from .runtime import WorkerRuntime, resolve_worker_models

logger = logging.getLogger(__name__)

_runtime: WorkerRuntime | None = None


def current_runtime() -> WorkerRuntime | None:
    """The WorkerRuntime of this worker process (None outside a worker)."""
    return _runtime


# Celery ships no type information (celery-types is not installed), so its base class is Any.
class EngineHostStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Loads models before the pool is made, so the pool can have one thread per engine slot,
    and before the consumer starts, so a worker takes jobs only once ready.

    Celery builds a worker in two passes: every step's __init__, then every step's create
    (the Pool step makes its pool there, from `worker.min_concurrency`). Loading in __init__
    therefore sizes the pool from the engines as loaded. Requiring the Pool keeps the stop
    order: this step stops first, while the pool's threads still wait on its engine loop.
    """

    requires = {"celery.worker.components:Pool"}

    # `worker` is Celery's WorkController; `models` and `concurrency` are the --models and
    # --concurrency options as given.
    def __init__(self, worker: Any, models: str | None = None, concurrency: int | None = None, **options: Any) -> None:
        global _runtime
        super().__init__(worker, **options)
        served = resolve_worker_models(models)
        if not served:
            raise RuntimeError("this worker has no enabled models to host")
        for model in served:
            worker.app.amqp.queues.select_add(queue_name(model.name))
        self.runtime = _runtime = WorkerRuntime(served)
        slots = self.runtime.load()
        if worker.autoscale:
            logger.info(
                "pool autoscales from %s to %s threads (engine slots: %s)",
                worker.min_concurrency,
                worker.max_concurrency,
                slots,
            )
        else:
            # `concurrency` is --concurrency as given (None when absent or 0); `worker.concurrency`
            # already holds Celery's default, the CPU count, in its place.
            size, explained = pool_concurrency(slots, concurrency)
            worker.concurrency = worker.min_concurrency = size
            logger.info(explained)
        self.concurrency = worker.concurrency

    def start(self, worker: Any) -> None:
        self.runtime.start(self.concurrency)

    def stop(self, worker: Any) -> None:
        if _runtime is not None:
            _runtime.stop()


# Celery ships no type information, so its signal decorator is untyped.
@worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _drain_on_shutdown(**kwargs: Any) -> None:
    """Stop advertising the worker as soon as shutdown begins; running jobs finish first."""
    if _runtime is not None:
        try:
            _runtime.drain()
        except Exception:
            logger.warning("could not mark worker draining", exc_info=True)
