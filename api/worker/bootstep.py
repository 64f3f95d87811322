"""Celery worker bootstep: host engines for the chosen models and consume their queues."""

from __future__ import annotations

import logging

from celery import bootsteps
from celery.signals import worker_shutting_down

logger = logging.getLogger(__name__)

_runtime = None


def current_runtime():
    """The WorkerRuntime of this worker process (None outside a worker)."""
    return _runtime


class EngineHostStep(bootsteps.StartStopStep):
    """Loads models before the consumer starts, so a worker takes jobs only once ready."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, models=None, **options):
        super().__init__(worker, **options)
        from ..dispatch.distributed import queue_name
        from .runtime import resolve_worker_models

        self.models = resolve_worker_models(models)
        if not self.models:
            raise RuntimeError("this worker has no enabled models to host")
        for model in self.models:
            worker.app.amqp.queues.select_add(queue_name(model.name))
        self.concurrency = worker.concurrency

    def start(self, worker):
        global _runtime
        from .runtime import WorkerRuntime

        _runtime = WorkerRuntime(self.models, self.concurrency)
        _runtime.start()

    def stop(self, worker):
        if _runtime is not None:
            _runtime.stop()


@worker_shutting_down.connect
def _drain_on_shutdown(**kwargs):
    """Stop advertising the worker as soon as shutdown begins; running jobs finish first."""
    if _runtime is not None:
        try:
            _runtime.drain()
        except Exception:
            logger.warning("could not mark worker draining", exc_info=True)
