"""The engine host: one loaded engine per model in this process.

The embedded web process and (later) each Celery worker run the same host. Loading is
blocking, so it happens on a thread; callers on an event loop await it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from .base import Chunk, Engine, GenerationRequest, ModelSpec
from .capabilities import require_request_features
from .registry import create_engine

logger = logging.getLogger(__name__)


class EngineHost:
    """Keeps engines keyed by model name and feeds jobs into them."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}
        self._load_errors: dict[str, str] = {}
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    def ensure_loaded(self, engine_name: str, spec: ModelSpec) -> Engine:
        """Blocking: return the loaded engine for `spec`, loading it on first use."""
        with self._lock:
            engine = self._engines.get(spec.name)
            if engine is not None and engine.name == engine_name and engine.spec == spec and engine.loaded:
                return engine
            self._loading.add(spec.name)
            try:
                if engine is not None:  # the registry entry changed, or the engine failed: reload
                    engine.unload()
                    del self._engines[spec.name]
                engine = create_engine(engine_name, spec)
                logger.info("loading model %s on engine %s", spec.name, engine_name)
                engine.load()
            except Exception as exc:
                self._load_errors[spec.name] = str(exc)
                raise
            finally:
                self._loading.discard(spec.name)
            self._load_errors.pop(spec.name, None)
            self._engines[spec.name] = engine
            return engine

    async def generate(
        self, engine_name: str, spec: ModelSpec, request: GenerationRequest
    ) -> AsyncGenerator[Chunk, None]:
        """Stream chunks for `request` from the engine serving `spec`."""
        engine = self._engines.get(spec.name)
        if engine is None or engine.name != engine_name or engine.spec != spec or not engine.loaded:
            engine = await asyncio.to_thread(self.ensure_loaded, engine_name, spec)
        require_request_features(engine.name, engine.capabilities, request)
        async with aclosing(engine.generate(request)) as chunks:
            async for chunk in chunks:
                yield chunk

    def readiness(self, names: list[str]) -> tuple[bool, str]:
        """Whether any of the named models is ready, and a reason when none is."""
        if not names:
            return False, "no enabled models are registered"
        if any(n in self._engines and self._engines[n].loaded for n in names):
            return True, "ready"
        loading = [n for n in names if n in self._loading]
        if loading:
            return False, f"loading model {', '.join(loading)}"
        failed = {n: self._load_errors[n] for n in names if n in self._load_errors}
        if failed:
            return False, "; ".join(f"{n} failed to load: {e}" for n, e in failed.items())
        return False, "no engine loaded yet"

    def states(self) -> list[dict[str, Any]]:
        """Snapshot of every engine this host holds."""
        return [engine.state() for engine in self._engines.values()]

    def engine_for(self, model_name: str) -> Engine | None:
        """The loaded engine for a model, if any."""
        return self._engines.get(model_name)

    def shutdown(self) -> None:
        """Unload every engine."""
        with self._lock:
            for engine in self._engines.values():
                engine.unload()
            self._engines.clear()
