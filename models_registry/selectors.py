"""Reads from the registry."""

from __future__ import annotations

import datetime as dt
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from .models import ApiKey, ServedModel, WorkerRegistration


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
_MAX_REMEMBERED_KEYS = 4096
# key pk -> (monotonic time until which the list is trusted, the key's models)
_served_models: dict[int, tuple[float, list[ServedModel]]] = {}


async def served_model_for_key_recent(*, key: ApiKey, name: str) -> ServedModel | None:
    """served_model_for_key from the key's models as read at most SERVED_MODELS_TTL_SECONDS ago.

    When they are that fresh, no thread and no query: the lookup stays on the event loop.
    """
    remembered = _served_models.get(key.pk)
    now = time.monotonic()
    if remembered is not None and remembered[0] > now:
        return _named(remembered[1], name)
    models = await sync_to_async(served_models_for_key)(key=key)
    if len(_served_models) >= _MAX_REMEMBERED_KEYS:
        _served_models.clear()  # rare; each key reads its models again
    _served_models[key.pk] = (now + SERVED_MODELS_TTL_SECONDS, models)
    return _named(models, name)


def forget_served_models(**_signal_kwargs) -> None:
    """Make every key read its models again (a model, key or allowlist was saved or deleted here)."""
    _served_models.clear()


def served_model_by_name(*, name: str) -> ServedModel | None:
    """The model registered under exactly `name`, enabled or not."""
    return ServedModel.objects.filter(name=name).first()


def enabled_model_names() -> list[str]:
    return list(ServedModel.objects.filter(enabled=True).values_list("name", flat=True))


# /health is polled many times a second; reading the registry for each poll cost a worker thread
# and a database connection per request. Saves in this process clear it at once (see apps.py);
# changes made by other processes show within the TTL.
ENABLED_NAMES_TTL_SECONDS = 1.0
_enabled_names: tuple[float, list[str]] = (0.0, [])


async def enabled_model_names_recent() -> list[str]:
    """enabled_model_names, read from the database at most once per ENABLED_NAMES_TTL_SECONDS."""
    global _enabled_names
    read_at, names = _enabled_names
    now = time.monotonic()
    if not read_at or now - read_at >= ENABLED_NAMES_TTL_SECONDS:
        names = await sync_to_async(enabled_model_names)()
        _enabled_names = (now, names)
    return names


def forget_enabled_model_names(**_signal_kwargs) -> None:
    """Make the next enabled_model_names_recent read the database (a model was saved or deleted)."""
    global _enabled_names
    _enabled_names = (0.0, [])


def active_worker_ids() -> list[str]:
    """Workers not marked dead; their liveness keys in Redis tell which are really alive."""
    return list(
        WorkerRegistration.objects.exclude(state=WorkerRegistration.State.DEAD).values_list("worker_id", flat=True)
    )


def ready_workers_for(*, model_name: str) -> list[WorkerRegistration]:
    """Workers that are ready, heard from recently, and host `model_name`."""
    fresh = timezone.now() - dt.timedelta(seconds=settings.WORKER_DEAD_AFTER_SECONDS)
    candidates = WorkerRegistration.objects.filter(state=WorkerRegistration.State.READY, last_heartbeat__gte=fresh)
    return [w for w in candidates if model_name in (w.hosted_models or [])]
