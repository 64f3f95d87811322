"""The one dispatch interface between the API and the engine hosts.

Embedded mode (no REDIS_URL) runs the engine host inside this process. Distributed mode
sends the job to the Celery queue `model.<name>`, and a worker streams chunks back over the
channel layer. Callers see the same async iterator of chunks either way.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Callable

from django.conf import settings

from engines.base import Chunk, GenerationRequest, ModelSpec
from engines.capabilities import capabilities_of
from engines.platform import detect_best_engine, get_platform_info
from models_registry.models import ServedModel

# Called once a host has taken the job: (worker id, queue wait in ms, whether that host
# writes the request's record itself).
OnStarted = Callable[[str, float, bool], None]

MODE = "distributed" if settings.DISTRIBUTED else "embedded"


@dataclasses.dataclass(frozen=True)
class ModelLoad:
    """A model's scheduler state over every host that serves it, as vLLM's gauges report it."""

    running: int = 0  # admitted to an engine's slots
    waiting: int = 0  # in an engine's admission queue, or in the model's job queue
    kv_cache_tokens: int = 0  # KV cells that running requests hold ...
    kv_cache_capacity: int = 0  # ... out of all (0: no engine reports its KV cache)

    @property
    def kv_cache_usage(self) -> float | None:
        """The share of KV cells in use, 0 to 1; None where no engine reports one."""
        return self.kv_cache_tokens / self.kv_cache_capacity if self.kv_cache_capacity else None

    @classmethod
    def of_engine(cls, state: dict) -> ModelLoad:
        """One engine's load, from its `state()`."""
        return cls(running=state["num_requests_running"], waiting=state["num_requests_waiting"],
                   kv_cache_tokens=state.get("kv_cache_tokens", 0), kv_cache_capacity=state.get("kv_cache_capacity", 0))

    def __add__(self, other: ModelLoad) -> ModelLoad:
        return ModelLoad(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


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
    """Features the model's engine supports, from the table (no engine library is imported)."""
    return capabilities_of(resolve_engine(model))


def _backend():
    if settings.DISTRIBUTED:
        from . import distributed

        return distributed
    from . import embedded

    return embedded


def generate(model: ServedModel, request: GenerationRequest, *, record: dict,
             on_started: OnStarted) -> AsyncIterator[Chunk]:
    """Stream chunks for one request from whichever host serves `model`."""
    return _backend().generate(model, request, record=record, on_started=on_started)


async def readiness() -> tuple[bool, str]:
    """Whether at least one enabled model can be served now, with a reason if not."""
    return await _backend().readiness()


async def request_load(model_names: list[str]) -> dict[str, ModelLoad]:
    """Requests running and waiting, and KV cache use, per model over every host that serves it."""
    return await _backend().request_load(model_names)


def engine_states() -> list[dict]:
    """Engines loaded in this process (none in a distributed web process)."""
    from .embedded import engine_host

    return engine_host().states()


def start_preloading() -> None:
    """Embedded mode loads enabled models at start-up; workers do it in distributed mode."""
    if not settings.DISTRIBUTED and settings.PRELOAD_MODELS:
        from .embedded import start_preloading as start

        start()
