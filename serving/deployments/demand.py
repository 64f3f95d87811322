"""Load on demand: a request for a model with no ready copy waits, bounded, for one.

The request marks the model wanted (so that a host with room loads it, evicting the least
recently used idle on-demand copy if it must) and waits up to LOAD_TIMEOUT_SECONDS: its time to
first token includes the load. When no host can take the model (its placement matches no live
worker, or every one that does is full of copies in use), or its load failed, the answer is a
503 with Retry-After at once, saying why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.conf import settings

from models_registry.models import Replica, ServedModel, WorkerRegistration
from models_registry.selectors import live_workers
from models_registry.services.deployments import served_model_want

from ..errors import ModelNotPlaced
from . import snapshot
from .placement import plan

POLL_SECONDS = 0.2
# How often a waiting request checks again that the model can still be placed.
RECHECK_SECONDS = 2.0
RETRY_AFTER_SECONDS = 10


async def await_copy(model: ServedModel, *, is_ready: Callable[[], Awaitable[bool]]) -> None:
    """Return once a copy of `model` is ready; raise ModelNotPlaced when none can be, or not in time."""
    if await is_ready():
        return
    await _require_placeable(model)
    await sync_to_async(served_model_want)(model_name=model.name, seconds=settings.LOAD_TIMEOUT_SECONDS)
    started = time.monotonic()
    checked = started
    while time.monotonic() - started < settings.LOAD_TIMEOUT_SECONDS:
        await asyncio.sleep(POLL_SECONDS)
        if await is_ready():
            return
        if time.monotonic() - checked >= RECHECK_SECONDS:
            checked = time.monotonic()
            await _require_placeable(model)
            # The want may have been met and a copy dropped since: want it again.
            await sync_to_async(served_model_want)(model_name=model.name, seconds=settings.LOAD_TIMEOUT_SECONDS)
    raise ModelNotPlaced(
        f"Model `{model.name}` did not become ready within {settings.LOAD_TIMEOUT_SECONDS:.0f}s "
        f"(LOAD_TIMEOUT_SECONDS); it is still loading or waiting for room. Try again shortly.",
        retry_after=RETRY_AFTER_SECONDS,
    )


async def _require_placeable(model: ServedModel) -> None:
    reason = await sync_to_async(why_not_placeable)(model_name=model.name)
    if reason is not None:
        raise ModelNotPlaced(f"Model `{model.name}` cannot be loaded now: {reason}.", retry_after=RETRY_AFTER_SECONDS)


def why_not_placeable(*, model_name: str) -> str | None:
    """Why no host can hold the model now, were it wanted; None when one can (or does)."""
    models = snapshot.enabled_models()
    if model_name not in models:
        return "it is not enabled"
    failed = _failure(model_name)
    if failed is not None:
        return failed
    deployments = [
        dataclasses.replace(view, wanted=True) if view.name == model_name else view
        for view in snapshot.deployment_views(models)
    ]
    workers = live_workers()
    result = plan(deployments, snapshot.host_views(workers), now=time.time())
    if result.hosts_of(model_name) or _copy_coming(model_name, workers):
        return None  # one copy is enough to serve: fewer than all its replicas is no refusal
    return result.unplaced.get(model_name, "no live worker takes it")


def _copy_coming(model_name: str, workers: list[WorkerRegistration]) -> bool:
    """A copy loading or ready on a live worker (a pinned one included, which placement leaves out)."""
    return Replica.objects.filter(model__name=model_name, worker__in=workers, state__in=snapshot.HELD_STATES).exists()


def _failure(model_name: str) -> str | None:
    """The error of its last load, when every copy of the model failed and none loads or serves."""
    rows = list(Replica.objects.filter(model__name=model_name).select_related("worker"))
    if rows and all(row.state == Replica.State.FAILED for row in rows):
        row = max(rows, key=lambda r: r.state_changed_at)
        return f"it failed to load on {row.worker.worker_id}: {row.error}"
    return None
