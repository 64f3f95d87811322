"""What the database says of the deployments and the engine hosts, as the planner's views."""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict

from django.utils import timezone

from models_registry.models import Replica, ServedModel, WorkerRegistration

from .placement import CopyView, DeploymentView, HostView

# Copies that count as held: a failed load holds nothing.
HELD_STATES = (Replica.State.LOADING, Replica.State.READY)


def enabled_models() -> dict[str, ServedModel]:
    """Every enabled served model, by name."""
    return {model.name: model for model in ServedModel.objects.filter(enabled=True)}


def deployment_views(models: dict[str, ServedModel], *, now: dt.datetime | None = None) -> list[DeploymentView]:
    """The planner's view of each model's deployment."""
    now = now or timezone.now()
    measured: dict[str, int] = {}
    for name, memory in Replica.objects.filter(model__name__in=list(models), memory_bytes__gt=0).values_list(
        "model__name", "memory_bytes"
    ):
        measured[name] = max(measured.get(name, 0), memory or 0)
    return [
        DeploymentView(
            name=model.name,
            replicas=model.replicas,
            label=model.placement_label,
            host=model.placement_host,
            keep_alive_seconds=model.keep_alive_seconds,
            wanted=model.wanted_until is not None and model.wanted_until > now,
            memory_bytes=measured.get(model.name) or _file_size(model.source),
        )
        for model in models.values()
    ]


def _file_size(source: str) -> int:
    """A model file's size: what a copy needs at least before it is measured."""
    try:
        return os.path.getsize(source) if source and os.path.isfile(source) else 0
    except OSError:
        return 0


def host_views(workers: list[WorkerRegistration]) -> list[HostView]:
    """The planner's view of each worker, with the copies its Replica rows say it holds."""
    copies: dict[int, dict[str, CopyView]] = defaultdict(dict)
    rows = Replica.objects.filter(worker__in=workers, state__in=HELD_STATES).values_list(
        "worker_id", "model__name", "last_used_at", "state_changed_at", "memory_bytes"
    )
    for worker_pk, name, last_used, changed, memory in rows:
        copies[worker_pk][name] = CopyView(
            last_used=last_used.timestamp() if last_used else None,
            loaded_at=changed.timestamp(),
            memory_bytes=memory or 0,
        )
    return [host_view(worker, copies[worker.pk]) for worker in workers]


def host_view(worker: WorkerRegistration, copies: dict[str, CopyView]) -> HostView:
    """One worker as the planner sees it, holding `copies`."""
    capacity = worker.capacity or {}
    return HostView(
        worker_id=worker.worker_id,
        host=worker.host,
        labels=frozenset(worker.labels or []),
        drained=worker.drained,
        pinned=not _places(worker),
        max_loaded_models=int(capacity.get("max_loaded_models") or 0),
        memory_budget_bytes=int(capacity.get("memory_budget_bytes") or 0),
        copies=copies,
    )


def _places(worker: WorkerRegistration) -> bool:
    """Whether the worker takes placements: one pinned with --models says so in its capacity."""
    return not (worker.capacity or {}).get("pinned")
