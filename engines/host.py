"""The engine host: the loaded copy of each model in this process, and jobs fed into them.

The embedded web process and each Celery worker run the same host. A copy is one loaded engine
and the version it was loaded as (its engine, spec and revision: serving.deployments decides).
Loading a new version is rolling: the new engine loads while the old one serves, new requests
go to the new one once it is ready, and the old one is unloaded when its last request ends.
Loading is blocking, so it happens on a thread; callers on an event loop await it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from .base import Chunk, Engine, GenerationRequest, ModelSpec
from .capabilities import require_request_features
from .errors import EngineUnavailableError
from .registry import create_engine

logger = logging.getLogger(__name__)

# How long an old copy may take to finish its requests before it is unloaded anyway.
DEFAULT_DRAIN_TIMEOUT_SECONDS = 600.0
_DRAIN_POLL_SECONDS = 0.05


def spec_version(engine_name: str, spec: ModelSpec, revision: int | str = 0) -> str:
    """A short digest of what a copy was loaded as: a change in any part means a reload."""
    described = json.dumps(
        {"engine": engine_name, "spec": dataclasses.asdict(spec), "revision": revision}, sort_keys=True, default=str
    )
    return hashlib.sha256(described.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Copy:
    """One loaded engine serving a model, as a version."""

    engine: Engine
    version: str
    loaded_at: float = dataclasses.field(default_factory=time.time)
    last_used: float | None = None  # epoch seconds the last request on it ended
    # Requests that hold this copy, from before they reach the engine until they end: a copy is
    # unloaded only at zero, so a request that found it is never left with an unloaded engine.
    in_flight: int = 0


@dataclasses.dataclass(frozen=True)
class CopyInfo:
    """A snapshot of a copy, for reconciliation and status pages."""

    engine_name: str
    version: str
    in_flight: int
    loaded_at: float
    last_used: float | None


class EngineHost:
    """Keeps one current copy per model name, and feeds jobs into them.

    `load_on_demand`: a request for a model with no copy (or an older version) loads it first,
    as the embedded process does; a worker's host serves only what its reconciler loaded.
    """

    def __init__(self, *, load_on_demand: bool = True) -> None:
        self.load_on_demand = load_on_demand
        self._copies: dict[str, Copy] = {}
        self._retiring: list[Copy] = []
        self._load_errors: dict[str, str] = {}
        self._loading: set[str] = set()
        self._load_lock = threading.Lock()  # one load at a time: loads compete for the same cores
        self._lock = threading.Lock()  # guards the dictionaries and lists above

    # --- loading and unloading (blocking; call them on a thread) ---

    def ensure_loaded(self, engine_name: str, spec: ModelSpec, *, version: str | None = None) -> Engine:
        """Return the current copy's engine for `spec`, loading this version first if it is not the current one.

        The copy it replaces keeps serving while the new one loads, then finishes its requests
        and is unloaded.
        """
        version = version or spec_version(engine_name, spec)
        engine = self._current(spec.name, version)
        if engine is not None:
            return engine
        with self._load_lock:
            engine = self._current(spec.name, version)  # another thread may have loaded it meanwhile
            if engine is not None:
                return engine
            with self._lock:
                self._loading.add(spec.name)
            try:
                engine = create_engine(engine_name, spec)
                logger.info("loading model %s on engine %s", spec.name, engine_name)
                engine.load()
            except Exception as exc:
                with self._lock:
                    self._load_errors[spec.name] = str(exc)
                raise
            finally:
                with self._lock:
                    self._loading.discard(spec.name)
            with self._lock:
                self._load_errors.pop(spec.name, None)
                old = self._copies.get(spec.name)
                self._copies[spec.name] = Copy(engine=engine, version=version)
            if old is not None:
                self._retire(old, wait=False)
            return engine

    def unload(self, name: str, *, wait: bool = True, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_SECONDS) -> bool:
        """Stop giving the model's copy new requests and unload it once its requests end (or at
        `drain_timeout`); with `wait`, return only once it is unloaded. False if there was none."""
        with self._lock:
            copy = self._copies.pop(name, None)
            self._load_errors.pop(name, None)
        if copy is None:
            return False
        self._retire(copy, wait=wait, drain_timeout=drain_timeout)
        return True

    def _retire(self, copy: Copy, *, wait: bool, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_SECONDS) -> None:
        with self._lock:
            idle = copy.in_flight == 0
            if not idle:
                self._retiring.append(copy)
        if idle:
            copy.engine.unload()
            return
        if wait:
            self._unload_when_drained(copy, drain_timeout)
        else:
            threading.Thread(
                target=self._unload_when_drained,
                args=(copy, drain_timeout),
                name=f"retire-{copy.engine.spec.name}",
                daemon=True,
            ).start()

    def _unload_when_drained(self, copy: Copy, drain_timeout: float) -> None:
        deadline = time.monotonic() + drain_timeout
        while copy.in_flight and time.monotonic() < deadline:
            time.sleep(_DRAIN_POLL_SECONDS)
        if copy.in_flight:
            logger.warning(
                "unloading %s with %d requests still running after %.0fs",
                copy.engine.spec.name,
                copy.in_flight,
                drain_timeout,
            )
        try:
            copy.engine.unload()
        finally:
            with self._lock:
                if copy in self._retiring:
                    self._retiring.remove(copy)

    def _current(self, name: str, version: str) -> Engine | None:
        copy = self._copies.get(name)
        if copy is not None and copy.version == version and copy.engine.loaded:
            return copy.engine
        return None

    # --- serving ---

    async def generate(
        self, engine_name: str, spec: ModelSpec, request: GenerationRequest, *, version: str | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream chunks for `request` from the copy serving `spec.name`.

        Loading on demand, a request waits for the version it names (the copy before it goes on
        serving the requests it has); otherwise it is served by whatever copy is current.
        """
        copy = self._lease(spec.name)
        if self.load_on_demand:
            wanted = version or spec_version(engine_name, spec)
            if copy is None or copy.version != wanted:
                if copy is not None:
                    self._release(copy)
                await asyncio.to_thread(self.ensure_loaded, engine_name, spec, version=wanted)
                copy = self._lease(spec.name)
        if copy is None:
            raise EngineUnavailableError(f"Model `{spec.name}` is not loaded on this host.")
        try:
            engine = copy.engine
            require_request_features(engine.name, engine.capabilities, request)
            async with aclosing(engine.generate(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            copy.last_used = time.time()
            self._release(copy)

    def _lease(self, name: str) -> Copy | None:
        with self._lock:
            copy = self._copies.get(name)
            if copy is None or not copy.engine.loaded:
                return None
            copy.in_flight += 1
            return copy

    def _release(self, copy: Copy) -> None:
        with self._lock:
            copy.in_flight -= 1

    # --- reading ---

    def has(self, name: str) -> bool:
        """Whether a loaded copy of the model serves requests here."""
        copy = self._copies.get(name)
        return copy is not None and copy.engine.loaded

    def copies(self) -> dict[str, CopyInfo]:
        """Each current copy, by model name."""
        with self._lock:
            current = list(self._copies.items())
        return {
            name: CopyInfo(
                engine_name=copy.engine.name,
                version=copy.version,
                in_flight=copy.in_flight,
                loaded_at=copy.loaded_at,
                last_used=copy.last_used,
            )
            for name, copy in current
            if copy.engine.loaded
        }

    def retiring(self) -> set[tuple[str, str]]:
        """(model, version) of old copies still finishing their requests."""
        with self._lock:
            return {(copy.engine.spec.name, copy.version) for copy in self._retiring}

    def loading(self) -> set[str]:
        """Models being loaded now."""
        with self._lock:
            return set(self._loading)

    def load_error(self, name: str) -> str | None:
        """Why the model's last load failed, if it did."""
        return self._load_errors.get(name)

    def readiness(self, names: list[str]) -> tuple[bool, str]:
        """Whether any of the named models is ready, and a reason when none is."""
        if not names:
            return False, "no enabled models are registered"
        if any(self.has(n) for n in names):
            return True, "ready"
        loading = [n for n in names if n in self._loading]
        if loading:
            return False, f"loading model {', '.join(loading)}"
        failed = {n: self._load_errors[n] for n in names if n in self._load_errors}
        if failed:
            return False, "; ".join(f"{n} failed to load: {e}" for n, e in failed.items())
        return False, "no engine loaded yet"

    def states(self) -> list[dict[str, Any]]:
        """Snapshot of every current copy's engine."""
        with self._lock:
            engines = [copy.engine for copy in self._copies.values()]
        return [engine.state() for engine in engines]

    def engine_for(self, model_name: str) -> Engine | None:
        """The current copy's engine for a model, if any."""
        copy = self._copies.get(model_name)
        return copy.engine if copy is not None else None

    def shutdown(self) -> None:
        """Unload every copy, retiring ones included, now."""
        with self._lock:
            copies = [*self._copies.values(), *self._retiring]
            self._copies.clear()
            self._retiring.clear()
        for copy in copies:
            copy.engine.unload()
