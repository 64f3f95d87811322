"""Periodic API jobs, run by Celery beat (inference_platform/celery.py)."""

from celery import shared_task

from .services.stored_responses import stored_responses_prune


@shared_task(name="api.prune_stored_responses", ignore_result=True, soft_time_limit=1500, time_limit=1800)
def prune_stored_responses() -> int:
    """Delete stored `/v1/responses` answers older than RESPONSE_RETENTION_DAYS; 0 keeps them forever."""
    return stored_responses_prune()
