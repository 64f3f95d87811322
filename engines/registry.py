"""Engine names to engine classes, imported lazily so optional libraries stay optional."""

from __future__ import annotations

import importlib

from .base import Engine, ModelSpec
from .errors import EngineUnavailableError

_ENGINE_CLASSES = {
    "llama_cpp": "engines.llama_cpp:LlamaCppEngine",
    "mlx": "engines.mlx:MlxEngine",
    "vllm": "engines.vllm:VllmEngine",
    "upstream": "engines.upstream:UpstreamEngine",
    "echo": "engines.echo:EchoEngine",
}
# Not registered: engines.child_server.SupervisedServerEngine runs any command from its options,
# and engine options are editable in the admin; vLLM supplies a fixed command line instead.


def engine_class(name: str) -> type[Engine]:
    """Resolve a concrete engine name to its class, or raise EngineUnavailableError."""
    try:
        module_name, class_name = _ENGINE_CLASSES[name].split(":")
    except KeyError:
        raise EngineUnavailableError(f"unknown engine {name!r}") from None
    engine: type[Engine] = getattr(importlib.import_module(module_name), class_name)
    return engine


def create_engine(name: str, spec: ModelSpec) -> Engine:
    """Instantiate (but do not load) the engine `name` for `spec`."""
    return engine_class(name)(spec)
