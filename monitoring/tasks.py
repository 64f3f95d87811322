"""Periodic monitoring jobs, run by Celery beat (inference_platform/celery.py)."""

from celery import shared_task
from django.conf import settings

from .services import request_records_prune


@shared_task(name="monitoring.prune_request_records", ignore_result=True, soft_time_limit=1500, time_limit=1800)
def prune_request_records() -> int:
    """Delete records older than RECORD_RETENTION_DAYS; 0 keeps them forever."""
    if settings.RECORD_RETENTION_DAYS <= 0:
        return 0
    return request_records_prune(
        older_than_days=settings.RECORD_RETENTION_DAYS, batch_size=settings.RECORD_RETENTION_BATCH_SIZE
    )
