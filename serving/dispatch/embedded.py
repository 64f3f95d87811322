"""Embedded mode: the engine host lives in this (web) process."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from engines.base import Chunk, GenerationRequest
from engines.host import EngineHost
from models_registry.models import ServedModel
from models_registry.selectors import enabled_model_names_recent
from monitoring.load import ModelLoad

from ..route import Route, route_for
from .backend import OnStarted

logger = logging.getLogger(__name__)

WORKER_ID = f"embedded@{socket.gethostname()}:{os.getpid()}"

_host = EngineHost()
# Unload before interpreter teardown: llama.cpp's finalizers fail once modules are gone.
atexit.register(_host.shutdown)


def engine_host() -> EngineHost:
    """This process's engine host."""
    return _host


async def generate(
    route: Route, request: GenerationRequest, *, record: dict[str, Any], on_started: OnStarted
) -> AsyncGenerator[Chunk, None]:
    """Stream from this process's host; the caller records the request (nothing else can)."""
    on_started(WORKER_ID, 0.0, False)
    async with aclosing(_host.generate(route.engine, route.spec, request)) as chunks:
        async for chunk in chunks:
            yield chunk


async def readiness() -> tuple[bool, str]:
    return _host.readiness(await enabled_model_names_recent())


async def request_load(model_names: list[str]) -> dict[str, ModelLoad]:
    """Each engine's own admission queue says what runs and what waits; nothing waits outside
    the engines in embedded mode."""
    load = dict.fromkeys(model_names, ModelLoad())
    for state in _host.states():
        load[state["model"]] = ModelLoad.of_engine(state)
    return load


def load_enabled_models() -> None:
    """Blocking: load every enabled model, logging (not raising) failures."""
    for model in ServedModel.objects.filter(enabled=True):
        try:
            route = route_for(model)
            _host.ensure_loaded(route.engine, route.spec)
        except Exception:
            logger.exception("could not load model %s", model.name)


def start_preloading() -> None:
    """Load enabled models on a background thread so the server answers /health meanwhile."""
    threading.Thread(target=load_enabled_models, name="preload-models", daemon=True).start()
