"""The load /metrics shows per model: what serving reports of every host that serves it.

Monitoring owns the shape; serving fills it (serving.dispatch.request_load) and the project's
/metrics view hands it over, so monitoring never imports serving.
"""

from __future__ import annotations

import dataclasses


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
        return cls(
            running=state["num_requests_running"],
            waiting=state["num_requests_waiting"],
            kv_cache_tokens=state.get("kv_cache_tokens", 0),
            kv_cache_capacity=state.get("kv_cache_capacity", 0),
        )

    def __add__(self, other: ModelLoad) -> ModelLoad:
        return ModelLoad(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))
