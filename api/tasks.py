"""Celery tasks. Thin: JSON in, one runtime call. The job enforces its own time limit
(JOB_TIME_LIMIT_SECONDS) because Celery's time limits do not apply to the thread pool."""

from celery import shared_task

from .worker.bootstep import current_runtime


@shared_task(name="api.generate", ignore_result=True)
def generate_task(job: dict) -> None:
    """Run one generation job on this worker's engine host."""
    runtime = current_runtime()
    if runtime is None:
        raise RuntimeError("api.generate runs only in a worker started with the engine host step")
    runtime.run_job(job)
