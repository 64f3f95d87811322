"""Serving: which engine `auto` models run on, the bundled model, and what is logged of prompts."""

from django.core.exceptions import ImproperlyConfigured

from engines.platform import FORCEABLE_ENGINES

from .environment import env

INFERENCE_ENGINE = env("INFERENCE_ENGINE")
if INFERENCE_ENGINE not in FORCEABLE_ENGINES:
    raise ImproperlyConfigured(
        f"INFERENCE_ENGINE={INFERENCE_ENGINE!r} is not an engine; choose one of {', '.join(FORCEABLE_ENGINES)}"
    )
BUNDLED_MODEL_NAME = env("BUNDLED_MODEL_NAME")
BUNDLED_MODEL_CONTEXT = env("BUNDLED_MODEL_CONTEXT")
# Load enabled models when the ASGI app starts, so /health turns ready without a request.
PRELOAD_MODELS = env("PRELOAD_MODELS")
# Prompts and completions are never logged unless an operator turns this on.
LOG_PROMPTS = env("LOG_PROMPTS")
