"""Which concrete engine a served model runs on here, and why: what `auto` resolves to.

The admin shows it per row and serving resolves every request's route with it, so the
hardware probe behind `auto` (which runs nvidia-smi) happens once per process.
"""

from __future__ import annotations

import functools

from django.conf import settings

from engines.platform import explain_engine_choice, get_platform_info

from .models import ServedModel


@functools.cache
def platform_info() -> dict:
    """This machine's hardware facts; they never change while the process lives."""
    return get_platform_info()


def engine_choice(model: ServedModel) -> tuple[str, str]:
    """The model's concrete engine and a one-line reason: `auto` follows INFERENCE_ENGINE, then the
    hardware (for an embed model, llama_cpp)."""
    if model.engine != "auto":
        return model.engine, "chosen for this model"
    force = settings.INFERENCE_ENGINE if settings.INFERENCE_ENGINE != "auto" else None
    if force is None and model.task == ServedModel.Task.EMBED:
        # The hardware's best generation engine may not embed (mlx, vllm's proxy); llama.cpp
        # embeds a GGUF on any machine.
        return "llama_cpp", "auto: llama.cpp embeds GGUF models on any hardware"
    return explain_engine_choice(force, info=None if force else platform_info())
