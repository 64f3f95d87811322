"""Celery worker bootstep: host engines for the chosen models and consume their queues."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.signals import worker_shutting_down
from django.conf import settings

from .pool_size import pool_concurrency, reconcile_pool_concurrency
from .queues import ConsumerGateway
from .runtime import WorkerRuntime, resolve_worker_labels, resolve_worker_models

logger = logging.getLogger(__name__)

_runtime: WorkerRuntime | None = None


def current_runtime() -> WorkerRuntime | None:
    """The WorkerRuntime of this worker process (None outside a worker)."""
    return _runtime


# Celery ships no type information (celery-types is not installed), so its base class is Any.
class EngineHostStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Hosts the engines of this worker and opens their queues as their copies become ready.

    Two modes. Reconcile mode (no --models, WORKER_MODELS empty): the worker registers with its
    labels and capacity, is ready at once with no model, and loads, reloads and unloads what the
    deployments place on it, live. Pinned mode (--models, or WORKER_MODELS): it loads those
    models before the pool is made, so the pool can have one thread per engine slot, and before
    the consumer starts, so it takes jobs only once ready; edits to them still reload them.

    Celery builds a worker in two passes: every step's __init__, then every step's create
    (the Pool step makes its pool there, from `worker.min_concurrency`). Loading in __init__
    therefore sizes the pool from the engines as loaded. Requiring the Pool keeps the stop
    order: this step stops first, while the pool's threads still wait on its engine loop.
    """

    requires = {"celery.worker.components:Pool"}

    # `worker` is Celery's WorkController; `models`, `labels` and `concurrency` are the --models,
    # --labels and --concurrency options as given.
    def __init__(
        self,
        worker: Any,
        models: str | None = None,
        labels: str | None = None,
        concurrency: int | None = None,
        **options: Any,
    ) -> None:
        global _runtime
        super().__init__(worker, **options)
        pinned = resolve_worker_models(models)
        gateway = ConsumerGateway(worker)
        self.runtime = _runtime = WorkerRuntime(pinned, labels=resolve_worker_labels(labels), gateway=gateway)
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
            if pinned is None:
                size, explained = reconcile_pool_concurrency(concurrency, settings.MAX_LOADED_MODELS)
            else:
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
