"""What each dispatch backend (embedded, distributed) provides: the interface `serving.dispatch` calls."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

from engines.base import Chunk, GenerationRequest
from monitoring.load import ModelLoad

from ..route import Route

# Called once a host has taken the job: (worker id, queue wait in ms, whether that host
# writes the request's record itself).
OnStarted = Callable[[str, float, bool], None]


class Backend(Protocol):
    """A backend module's functions (a module satisfies a Protocol by its attributes)."""

    def generate(
        self, route: Route, request: GenerationRequest, *, record: dict[str, Any], on_started: OnStarted
    ) -> AsyncGenerator[Chunk, None]: ...

    async def readiness(self) -> tuple[bool, str]: ...

    async def request_load(self, model_names: list[str]) -> dict[str, ModelLoad]: ...
