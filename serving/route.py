"""A request's route: its served model, the concrete engine, the engine's spec and capabilities.

A view resolves the route once per request and everything after (the capability check,
dispatch, the record) reads it. Resolution is cached per model version, so a model that has
not changed costs a dictionary lookup, not a hardware probe and a new spec each request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from typing import cast

from django.conf import settings

from engines.base import ModelSpec, ModelTask
from engines.capabilities import capabilities_of
from engines.host import spec_version
from models_registry.engine_choice import engine_choice
from models_registry.models import ServedModel

# Model versions kept; more than any deployment serves, so the cache never thrashes.
_MAX_CACHED = 256


@dataclasses.dataclass(frozen=True)
class Route:
    """Where one request goes: `model` as the request found it, and what its version resolves to."""

    model: ServedModel
    engine: str
    spec: ModelSpec
    capabilities: frozenset[str]
    version: str  # what a copy serving this route is loaded as (engines.host.spec_version)


@dataclasses.dataclass(frozen=True)
class _Resolved:
    engine: str
    spec: ModelSpec
    capabilities: frozenset[str]
    version: str


# A model version: its pk, its `updated_at` and INFERENCE_ENGINE (see route_for).
_Version = tuple[int, dt.datetime, str]

_cache: dict[_Version, _Resolved] = {}
_lock = threading.Lock()


def model_spec(model: ServedModel) -> ModelSpec:
    """What an engine needs to load the model."""
    options = dict(model.engine_options or {})
    if model.slots:  # the deployment's slots are the engines' `parallel` sequences
        options["parallel"] = model.slots
    return ModelSpec(
        name=model.name,
        source=model.source,
        context_length=model.context_length,
        options=options,
        task=cast(ModelTask, model.task),  # the field's choices are exactly ModelTask's values
    )


def route_for(model: ServedModel) -> Route:
    """The model's route, resolved once per model version (its pk and `updated_at`, which the
    admin's reload action raises with the revision).

    INFERENCE_ENGINE is part of the version too: it decides what `auto` resolves to.
    """
    version: _Version = (model.pk, model.updated_at, settings.INFERENCE_ENGINE)
    resolved = _cache.get(version) if model.pk is not None else None
    if resolved is None:
        engine = engine_choice(model)[0]
        spec = model_spec(model)
        resolved = _Resolved(
            engine=engine,
            spec=spec,
            capabilities=capabilities_of(engine),
            version=spec_version(engine, spec, model.revision),
        )
        if model.pk is not None:
            with _lock:
                if len(_cache) >= _MAX_CACHED:
                    _cache.clear()
                _cache[version] = resolved
    return Route(
        model=model,
        engine=resolved.engine,
        spec=resolved.spec,
        capabilities=resolved.capabilities,
        version=resolved.version,
    )
