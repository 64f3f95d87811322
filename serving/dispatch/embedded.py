"""Embedded mode: the engine host lives in this (web) process.

It behaves as a worker does: this process registers itself as an engine host and a reconciler
converges it on the deployments (models with replicas load at start; on-demand ones unload
after their keep-alive; an edit reloads rolling). A request for a model not loaded here loads
it on the spot (its TTFT includes the load), first unloading the least recently used idle
on-demand model when MAX_LOADED_MODELS or MODEL_MEMORY_BUDGET_MB leaves no room.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import socket
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from engines.base import Chunk, GenerationRequest
from engines.host import CopyInfo, EngineHost
from models_registry.models import ServedModel, WorkerRegistration
from models_registry.selectors import enabled_model_names_recent
from models_registry.services import workers as worker_services
from monitoring.load import ModelLoad

from ..deployments.capacity import host_capacity
from ..deployments.demand import RETRY_AFTER_SECONDS
from ..deployments.reconciler import Reconciler
from ..errors import ModelNotPlaced
from ..route import Route
from .backend import OnStarted

logger = logging.getLogger(__name__)

WORKER_ID = f"embedded@{socket.gethostname()}:{os.getpid()}"
ROOM_POLL_SECONDS = 0.2

_host = EngineHost()
_reconciler: Reconciler | None = None
# The latest version of each model requests asked for (their sources size them against the budget).
_models: dict[str, ServedModel] = {}


def _shutdown() -> None:
    if _reconciler is not None:
        _reconciler.stop()
    _host.shutdown()


# Unload before interpreter teardown: llama.cpp's finalizers fail once modules are gone.
atexit.register(_shutdown)


def engine_host() -> EngineHost:
    """This process's engine host."""
    return _host


async def generate(
    route: Route, request: GenerationRequest, *, record: dict[str, Any], on_started: OnStarted
) -> AsyncGenerator[Chunk, None]:
    """Stream from this process's host; the caller records the request (nothing else can)."""
    on_started(WORKER_ID, 0.0, False)
    model = route.model
    _models[model.name] = model
    if not _host.has(model.name) and (settings.MAX_LOADED_MODELS or settings.MODEL_MEMORY_BUDGET_MB):
        await asyncio.to_thread(make_room_for, model)
    async with aclosing(_host.generate(route.engine, route.spec, request, version=route.version)) as chunks:
        async for chunk in chunks:
            yield chunk


def make_room_for(model: ServedModel) -> None:
    """Blocking: unload least recently used idle on-demand copies until `model` fits, waiting
    (up to LOAD_TIMEOUT_SECONDS) while the copies in the way are in use."""
    deadline = time.monotonic() + settings.LOAD_TIMEOUT_SECONDS
    while True:
        copies = _host.copies()
        if model.name in copies or _fits(model, copies):
            return
        on_demand = set(ServedModel.objects.filter(name__in=list(copies), replicas=0).values_list("name", flat=True))
        idle = [
            (info.last_used or info.loaded_at, name)
            for name, info in copies.items()
            if info.in_flight == 0 and name in on_demand
        ]
        if idle:
            victim = min(idle)[1]
            logger.info("unloading idle model %s to make room for %s", victim, model.name)
            _host.unload(victim, wait=True)
            continue
        if time.monotonic() > deadline:
            raise ModelNotPlaced(
                f"Model `{model.name}` cannot be loaded now: this host holds {len(copies)} models "
                f"(MAX_LOADED_MODELS {settings.MAX_LOADED_MODELS}, MODEL_MEMORY_BUDGET_MB "
                f"{settings.MODEL_MEMORY_BUDGET_MB}) and none of them is an idle on-demand model.",
                retry_after=RETRY_AFTER_SECONDS,
            )
        time.sleep(ROOM_POLL_SECONDS)


def _fits(model: ServedModel, copies: dict[str, CopyInfo]) -> bool:
    if settings.MAX_LOADED_MODELS and len(copies) >= settings.MAX_LOADED_MODELS:
        return False
    budget = settings.MODEL_MEMORY_BUDGET_MB * 1024 * 1024
    if budget:
        held = sum(_file_size(name) for name in copies)
        return bool(held + _file_size(model.name) <= budget)
    return True


def _file_size(name: str) -> int:
    model = _models.get(name)
    try:
        return os.path.getsize(model.source) if model and model.source and os.path.isfile(model.source) else 0
    except OSError:
        return 0


async def readiness() -> tuple[bool, str]:
    ready, reason = _host.readiness(await enabled_model_names_recent())
    if not ready and not _host.loading() and await _has_on_demand_models():
        return True, "ready: models load on demand"
    return ready, reason


@sync_to_async
def _has_on_demand_models() -> bool:
    return ServedModel.objects.filter(enabled=True, replicas=0).exists()


async def request_load(model_names: list[str]) -> dict[str, ModelLoad]:
    """Each engine's own admission queue says what runs and what waits; nothing waits outside
    the engines in embedded mode."""
    load = dict.fromkeys(model_names, ModelLoad())
    for state in _host.states():
        load[state["model"]] = ModelLoad.of_engine(state)
    return load


_registered = False


def _heartbeat() -> None:
    """Before each reconciler pass: register this process as an engine host (on the first), else beat."""
    global _registered
    if not _registered:
        worker_services.worker_register(
            worker_id=WORKER_ID,
            host=socket.gethostname(),
            pid=os.getpid(),
            models=[],
            concurrency=0,
            labels=settings.WORKER_LABELS,
            capacity=host_capacity(),
        )
        worker_services.worker_set_state(worker_id=WORKER_ID, state=WorkerRegistration.State.READY)
        _registered = True
    else:
        in_flight = sum(info.in_flight for info in _host.copies().values())
        worker_services.worker_heartbeat(worker_id=WORKER_ID, in_flight=in_flight)


def start_reconciling() -> None:
    """Converge this process on the deployments, on a thread: the server answers /health meanwhile,
    and models with replicas load first."""
    global _reconciler
    _reconciler = Reconciler(host=_host, worker_id=WORKER_ID, on_pass=_heartbeat)
    _reconciler.start()
