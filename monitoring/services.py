"""Writing per-request records."""

from __future__ import annotations

import datetime as dt

from .models import RequestRecord


def request_record_create(
    *,
    request_id: str,
    created_at: dt.datetime,
    endpoint: str,
    stream: bool,
    duration_ms: float,
    status_code: int,
    api_key_id: int | None = None,
    model_name: str = "",
    engine: str = "",
    worker: str = "",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    ttft_ms: float | None = None,
    queue_wait_ms: float | None = None,
    finish_reason: str = "",
    error_type: str = "",
    error_message: str = "",
) -> RequestRecord:
    """Store the one record of a finished request; a second record for the same id is ignored.

    In distributed mode the worker and the web process can both learn how a request
    ended (e.g. the worker dies right after recording), so the first write wins.
    """
    seconds = duration_ms / 1000
    tokens_per_second = completion_tokens / seconds if completion_tokens and seconds > 0 else None
    record, _ = RequestRecord.objects.get_or_create(request_id=request_id, defaults=dict(
        created_at=created_at,
        api_key_id=api_key_id,
        model_name=model_name[:256],
        engine=engine,
        worker=worker,
        endpoint=endpoint,
        stream=stream,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        ttft_ms=ttft_ms,
        queue_wait_ms=queue_wait_ms,
        duration_ms=duration_ms,
        tokens_per_second=tokens_per_second,
        finish_reason=finish_reason,
        status_code=status_code,
        error_type=error_type,
        error_message=error_message[:500],
    ))
    return record
