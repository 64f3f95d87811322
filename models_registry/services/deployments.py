"""Deployments: the admin's actions on models and workers, and the copies engine hosts report.

Every change that should move copies announces itself (deployment_events) once committed, so
engine hosts reconcile within a second or two instead of at their next periodic read.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .. import deployment_events
from ..models import Replica, ServedModel, WorkerRegistration

State = Replica.State


# --- the admin's actions and the web processes' demand ---


def served_model_want(*, model_name: str, seconds: float) -> None:
    """Ask for a copy of an on-demand model for the next `seconds` (a request waits, or the admin's load)."""
    until = timezone.now() + dt.timedelta(seconds=seconds)
    with transaction.atomic():
        updated = (
            ServedModel.objects.filter(name=model_name).exclude(wanted_until__gte=until).update(wanted_until=until)
        )
        if updated:
            deployment_events.announce()


def served_model_demand_met(*, model_name: str) -> None:
    """A copy is ready: from now on its keep-alive decides how long it stays (the requests that
    waited for it reach it well within its first minutes: placement gives a new copy a grace)."""
    ServedModel.objects.filter(name=model_name, wanted_until__isnull=False).update(wanted_until=None)


@transaction.atomic
def served_model_load(*, model: ServedModel, seconds: float) -> None:
    """The admin's load action: an on-demand model is loaded as if a request asked for it."""
    served_model_want(model_name=model.name, seconds=seconds)


@transaction.atomic
def served_model_unload(*, model: ServedModel) -> bool:
    """The admin's unload action: every copy goes now. A model with replicas becomes on demand
    (else its hosts would load it straight back); returns whether that happened."""
    made_on_demand = model.replicas > 0
    ServedModel.objects.filter(pk=model.pk).update(wanted_until=None, replicas=0, updated_at=timezone.now())
    model.refresh_from_db()
    deployment_events.announce("unload", model=model.name)
    return made_on_demand


@transaction.atomic
def served_model_reload(*, model: ServedModel) -> int:
    """The admin's reload action: a rolling reload of every copy; returns the new revision."""
    ServedModel.objects.filter(pk=model.pk).update(revision=F("revision") + 1, updated_at=timezone.now())
    model.refresh_from_db()
    deployment_events.announce()
    return model.revision


@transaction.atomic
def worker_drain(*, worker: WorkerRegistration) -> None:
    """The admin's drain action: the worker takes no new jobs, and its copies are placed elsewhere."""
    WorkerRegistration.objects.filter(pk=worker.pk).update(drained=True)
    deployment_events.announce()


@transaction.atomic
def worker_resume(*, worker: WorkerRegistration) -> None:
    """Undo a drain."""
    WorkerRegistration.objects.filter(pk=worker.pk).update(drained=False)
    deployment_events.announce()


# --- what engine hosts report of their copies ---


def replica_set_state(
    *,
    worker_id: str,
    model_name: str,
    revision: str,
    engine: str,
    state: str,
    error: str = "",
    memory_bytes: int | None = None,
) -> None:
    """Create or move the host's copy of a model (of one revision) to `state`."""
    worker = WorkerRegistration.objects.filter(worker_id=worker_id).first()
    model = ServedModel.objects.filter(name=model_name).first()
    if worker is None or model is None:  # the model was deleted meanwhile: its copies went with it
        return
    defaults: dict = {"state": state, "error": error, "state_changed_at": timezone.now()}
    if engine:  # a drain keeps the engine the row has
        defaults["engine"] = engine
    if memory_bytes is not None:
        defaults["memory_bytes"] = memory_bytes
    Replica.objects.update_or_create(worker=worker, model=model, revision=revision, defaults=defaults)


def replica_remove(*, worker_id: str, model_name: str, revision: str | None = None) -> None:
    """The host no longer holds this copy (every revision when `revision` is None)."""
    copies = Replica.objects.filter(worker__worker_id=worker_id, model__name=model_name)
    if revision is not None:
        copies = copies.filter(revision=revision)
    copies.delete()


def replicas_touch(*, worker_id: str, last_used: dict[str, dt.datetime]) -> None:
    """When each model's copy on the host last served a request (for keep-alive and eviction)."""
    for model_name, when in last_used.items():
        Replica.objects.filter(worker__worker_id=worker_id, model__name=model_name).update(last_used_at=when)


def replicas_of_dead_workers_remove() -> int:
    """Copies on workers marked dead are gone with them."""
    deleted, _ = Replica.objects.filter(worker__state=WorkerRegistration.State.DEAD).delete()
    return deleted
