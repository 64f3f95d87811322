"""Engine names to engine classes, imported lazily so optional libraries stay optional."""

from __future__ import annotations

import importlib

from .base import Engine, ModelSpec
from .errors import EngineUnavailableError

_ENGINE_CLASSES = {
    "llama_cpp": "engines.llama_cpp:LlamaCppEngine",
    "echo": "engines.echo:EchoEngine",
}

# Engines the platform knows by name but this build cannot run yet.
_NOT_YET_BUILT = {
    "mlx": "the MLX engine is not part of this build yet",
    "vllm": "the vLLM engine is not part of this build yet",
}


def engine_class(name: str) -> type[Engine]:
    """Resolve a concrete engine name to its class, or raise EngineUnavailableError."""
    if name in _NOT_YET_BUILT:
        raise EngineUnavailableError(f"engine {name!r} cannot serve here: {_NOT_YET_BUILT[name]}")
    try:
        module_name, class_name = _ENGINE_CLASSES[name].split(":")
    except KeyError:
        raise EngineUnavailableError(f"unknown engine {name!r}") from None
    return getattr(importlib.import_module(module_name), class_name)


def create_engine(name: str, spec: ModelSpec) -> Engine:
    """Instantiate (but do not load) the engine `name` for `spec`."""
    return engine_class(name)(spec)
