"""Celery tasks. Thin: JSON in, one runtime call. The job enforces its own time limit
(serving.worker.jobs.JOB_TIME_LIMIT_SECONDS) because Celery's time limits do not apply to the thread pool.

Web processes send the job by name (serving.protocol.GENERATE_TASK), so they never import
this module; the Celery app includes it, so every worker registers it.
"""

from typing import Any

from celery import shared_task

from ..protocol import GENERATE_TASK
from .bootstep import current_runtime


# Celery ships no type information, so its task decorator is untyped.
@shared_task(name=GENERATE_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def generate_task(job: dict[str, Any]) -> None:
    """Run one generation job on this worker's engine host."""
    runtime = current_runtime()
    if runtime is None:
        raise RuntimeError(f"{GENERATE_TASK} runs only in a worker started with the engine host step")
    runtime.run_job(job)
