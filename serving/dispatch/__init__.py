"""The one dispatch interface between the API and the engine hosts.

Embedded mode (no REDIS_URL) runs the engine host inside this process. Distributed mode
sends the job to the Celery queue `model.<name>`, and a worker streams chunks back over the
channel layer. Callers see the same async generator of chunks either way.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from django.conf import settings

from engines.base import Chunk, GenerationRequest
from monitoring.load import ModelLoad

from ..route import Route
from . import distributed, embedded
from .backend import Backend, OnStarted

MODE = "distributed" if settings.DISTRIBUTED else "embedded"


def _backend() -> Backend:
    if settings.DISTRIBUTED:
        return distributed
    return embedded


def generate(
    route: Route, request: GenerationRequest, *, record: dict[str, Any], on_started: OnStarted
) -> AsyncGenerator[Chunk, None]:
    """Stream chunks for one request from whichever host serves the route's model."""
    return _backend().generate(route, request, record=record, on_started=on_started)


async def readiness() -> tuple[bool, str]:
    """Whether at least one enabled model can be served now, with a reason if not."""
    return await _backend().readiness()


async def request_load(model_names: list[str]) -> dict[str, ModelLoad]:
    """Requests running and waiting, and KV cache use, per model over every host that serves it."""
    return await _backend().request_load(model_names)


def engine_states() -> list[dict[str, Any]]:
    """Engines loaded in this process (none in a distributed web process)."""
    return embedded.engine_host().states()


def start_embedded_host() -> None:
    """Embedded mode: this process hosts the engines and converges on the deployments from start-up
    (PRELOAD_MODELS=false: models load on their first request only); workers do it when distributed."""
    if not settings.DISTRIBUTED and settings.PRELOAD_MODELS:
        embedded.start_reconciling()
