"""Reads from the registry."""

from __future__ import annotations

import datetime as dt

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from .models import ApiKey, Replica, ServedModel, WorkerRegistration
from .recent_reads import RecentReads


def served_models_for_key(*, key: ApiKey) -> list[ServedModel]:
    """Enabled models the key may use: its allowlist, or every enabled model if it has none (one or two queries)."""
    allowlist = list(key.allowed_models.all())
    if allowlist:  # an allowlist of only disabled models allows nothing, never everything
        return [model for model in allowlist if model.enabled]
    return list(ServedModel.objects.filter(enabled=True))


def served_model_for_key(*, key: ApiKey, name: str) -> ServedModel | None:
    """The enabled model called `name` (or aliased so) that the key may use, else None."""
    return _named(served_models_for_key(key=key), name)


def _named(models: list[ServedModel], name: str) -> ServedModel | None:
    for model in models:
        if name == model.name or name in (model.aliases or []):
            return model
    return None


# Every completion looks its model up by key; reading the allowlist and the models for each one
# cost a thread hop and up to two queries per request. A key's models are remembered this long,
# like a verified key (api.authentication): saves in this process clear them at once (see
# apps.py), and an edit made elsewhere (allowlist, model enabled or changed) shows within it.
SERVED_MODELS_TTL_SECONDS = 1.0
served_models_recent: RecentReads[list[ServedModel]] = RecentReads(
    ttl_seconds=SERVED_MODELS_TTL_SECONDS, max_entries=4096
)


async def served_models_for_key_recent(*, key: ApiKey) -> list[ServedModel]:
    """served_models_for_key as read at most SERVED_MODELS_TTL_SECONDS ago.

    When they are that fresh, no thread and no query: the lookup stays on the event loop.
    """
    return await served_models_recent.get(key.pk, lambda: sync_to_async(served_models_for_key)(key=key))


async def served_model_for_key_recent(*, key: ApiKey, name: str) -> ServedModel | None:
    """served_model_for_key from the key's models as read at most SERVED_MODELS_TTL_SECONDS ago."""
    return _named(await served_models_for_key_recent(key=key), name)


def served_model_by_name(*, name: str) -> ServedModel | None:
    """The model registered under exactly `name`, enabled or not."""
    return ServedModel.objects.filter(name=name).first()


def enabled_model_names() -> list[str]:
    return list(ServedModel.objects.filter(enabled=True).values_list("name", flat=True))


# /health is polled many times a second; reading the registry for each poll cost a worker thread
# and a database connection per request. Saves in this process clear it at once (see apps.py);
# changes made by other processes show within the TTL.
ENABLED_NAMES_TTL_SECONDS = 1.0
enabled_names_recent: RecentReads[list[str]] = RecentReads(ttl_seconds=ENABLED_NAMES_TTL_SECONDS, max_entries=1)


async def enabled_model_names_recent() -> list[str]:
    """enabled_model_names, read from the database at most once per ENABLED_NAMES_TTL_SECONDS."""
    return await enabled_names_recent.get(None, sync_to_async(enabled_model_names))


def active_worker_ids() -> list[str]:
    """Workers not marked dead; their liveness keys in Redis tell which are really alive."""
    return list(
        WorkerRegistration.objects.exclude(state=WorkerRegistration.State.DEAD).values_list("worker_id", flat=True)
    )


def heartbeat_cutoff(*, now: dt.datetime | None = None) -> dt.datetime:
    """A worker heard from before this is silent: dead, once someone marks it so."""
    return (now or timezone.now()) - dt.timedelta(seconds=settings.WORKER_DEAD_AFTER_SECONDS)


def live_workers(*, now: dt.datetime | None = None) -> list[WorkerRegistration]:
    """Workers heard from within WORKER_DEAD_AFTER_SECONDS and not marked dead."""
    return list(
        WorkerRegistration.objects.filter(last_heartbeat__gte=heartbeat_cutoff(now=now)).exclude(
            state=WorkerRegistration.State.DEAD
        )
    )


def ready_workers_for(*, model_name: str) -> list[WorkerRegistration]:
    """Workers that are ready, heard from recently, and host `model_name`."""
    candidates = WorkerRegistration.objects.filter(
        state=WorkerRegistration.State.READY, last_heartbeat__gte=heartbeat_cutoff()
    )
    return [w for w in candidates if model_name in (w.hosted_models or [])]


def loaded_model_names(*, names: list[str] | None = None) -> set[str]:
    """Models with a ready copy on a host not marked dead (of `names`, when given)."""
    copies = Replica.objects.filter(state=Replica.State.READY).exclude(worker__state=WorkerRegistration.State.DEAD)
    if names is not None:
        copies = copies.filter(model__name__in=names)
    return set(copies.values_list("model__name", flat=True))


def live_worker_placements() -> tuple[list[str], list[str]]:
    """The labels and the hosts of workers not marked dead, each sorted: what placement can name."""
    labels: set[str] = set()
    hosts: set[str] = set()
    live = WorkerRegistration.objects.exclude(state=WorkerRegistration.State.DEAD)
    for worker_labels, host in live.values_list("labels", "host"):
        labels.update(label for label in worker_labels or [] if isinstance(label, str))
        hosts.add(host)
    return sorted(labels), sorted(hosts)


def replicas_of(*, model: ServedModel) -> list[Replica]:
    """The model's copies on engine hosts, with their workers: by worker, then revision."""
    return list(model.copies.select_related("worker").order_by("worker__worker_id", "revision"))
