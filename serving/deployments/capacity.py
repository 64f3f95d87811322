"""What an engine host reports of itself when it registers: its labels and its room for models."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from models_registry.engine_choice import platform_info


def host_capacity(*, pinned: bool = False) -> dict[str, Any]:
    """Memory (and GPUs where present), the memory budget and the most models it may hold at once.

    `pinned`: a worker started with --models, which placement leaves alone.
    """
    info = platform_info()
    return {
        "pinned": pinned,
        "memory_total_bytes": info["memory_total_bytes"],
        "memory_budget_bytes": settings.MODEL_MEMORY_BUDGET_MB * 1024 * 1024,
        "max_loaded_models": settings.MAX_LOADED_MODELS,
        "gpus": info["cuda_devices"],
    }
