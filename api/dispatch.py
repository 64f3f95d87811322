"""The one dispatch interface between the API and the engine host.

Today every request runs on the engine host inside this process (embedded mode). The
distributed mode will send the same job to a Celery queue `model.<name>` behind this
same interface, so callers do not change.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing

from django.conf import settings

from engines.base import Chunk, GenerationRequest, ModelSpec
from engines.host import EngineHost
from engines.platform import detect_best_engine, get_platform_info
from engines.registry import engine_class
from models_registry.models import ServedModel
from models_registry.selectors import enabled_model_names

logger = logging.getLogger(__name__)

MODE = "embedded"

_host = EngineHost()
# Unload before interpreter teardown: llama.cpp's finalizers fail once modules are gone.
atexit.register(_host.shutdown)


def engine_host() -> EngineHost:
    """This process's engine host."""
    return _host


@functools.cache
def platform_info() -> dict:
    """Hardware facts never change while the process lives, and probing runs nvidia-smi."""
    return get_platform_info()


def resolve_engine(model: ServedModel) -> str:
    """The concrete engine for a model; `auto` follows INFERENCE_ENGINE, then the hardware."""
    if model.engine != "auto":
        return model.engine
    force = settings.INFERENCE_ENGINE if settings.INFERENCE_ENGINE != "auto" else None
    return detect_best_engine(force, info=None if force else platform_info())


def model_spec(model: ServedModel) -> ModelSpec:
    return ModelSpec(
        name=model.name,
        source=model.source,
        context_length=model.context_length,
        options=dict(model.engine_options or {}),
    )


def engine_capabilities(model: ServedModel) -> frozenset[str]:
    """Features the model's engine declares; raises EngineUnavailableError if it cannot run here."""
    return engine_class(resolve_engine(model)).capabilities


async def generate(model: ServedModel, request: GenerationRequest) -> AsyncIterator[Chunk]:
    """Stream chunks for one request from whichever host serves `model`."""
    async with aclosing(_host.generate(resolve_engine(model), model_spec(model), request)) as chunks:
        async for chunk in chunks:
            yield chunk


def readiness() -> tuple[bool, str]:
    """Whether this process can serve at least one enabled model, with a reason if not."""
    return _host.readiness(enabled_model_names())


def load_enabled_models() -> None:
    """Blocking: load every enabled model, logging (not raising) failures."""
    for model in ServedModel.objects.filter(enabled=True):
        try:
            _host.ensure_loaded(resolve_engine(model), model_spec(model))
        except Exception:
            logger.exception("could not load model %s", model.name)


def start_preloading() -> None:
    """Load enabled models on a background thread so the server answers /health meanwhile."""
    if not settings.PRELOAD_MODELS:
        return
    threading.Thread(target=load_enabled_models, name="preload-models", daemon=True).start()
