"""Worker registrations: workers write their own rows; anyone may mark silent ones dead."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from ..models import WorkerRegistration
from ..selectors import heartbeat_cutoff

State = WorkerRegistration.State


def worker_register(
    *,
    worker_id: str,
    host: str,
    pid: int,
    models: list[str],
    concurrency: int,
    labels: list[str] | None = None,
    capacity: dict | None = None,
) -> WorkerRegistration:
    """Announce a starting worker (state loading), with its placement labels and its room for models."""
    worker, _ = WorkerRegistration.objects.update_or_create(
        worker_id=worker_id,
        defaults=dict(
            host=host,
            pid=pid,
            hosted_models=models,
            concurrency=concurrency,
            state=State.LOADING,
            last_heartbeat=timezone.now(),
            in_flight=0,
            error="",
            labels=labels or [],
            capacity=capacity or {},
        ),
    )
    return worker


def worker_set_state(
    *, worker_id: str, state: str, engines: dict | None = None, concurrency: int | None = None, error: str = ""
) -> None:
    """Move a worker to a new state (ready once its models are loaded, draining on shutdown)."""
    fields = {"state": state, "last_heartbeat": timezone.now(), "error": error[:500]}
    if engines is not None:
        fields["engines"] = engines
    if concurrency is not None:
        fields["concurrency"] = concurrency
    WorkerRegistration.objects.filter(worker_id=worker_id).update(**fields)


def worker_heartbeat(*, worker_id: str, in_flight: int) -> None:
    """Record that the worker is alive, and how busy it is."""
    WorkerRegistration.objects.filter(worker_id=worker_id).exclude(state=State.DEAD).update(
        last_heartbeat=timezone.now(), in_flight=in_flight
    )


def workers_mark_silent_dead(*, now: dt.datetime | None = None) -> int:
    """Mark workers whose heartbeat is older than WORKER_DEAD_AFTER_SECONDS as dead."""
    cutoff = heartbeat_cutoff(now=now)
    return (
        WorkerRegistration.objects.filter(last_heartbeat__lt=cutoff)
        .exclude(state=State.DEAD)
        .update(state=State.DEAD, in_flight=0)
    )


def worker_set_hosted(*, worker_id: str, engines: dict[str, str]) -> None:
    """The models whose copies on this worker are ready (model -> engine): web processes route by it."""
    WorkerRegistration.objects.filter(worker_id=worker_id).update(hosted_models=sorted(engines), engines=engines)
