"""Reads from the registry."""

from __future__ import annotations

from .models import ApiKey, ServedModel


def served_models_for_key(*, key: ApiKey) -> list[ServedModel]:
    """Enabled models the key may use: its allowlist, or every enabled model if it has none."""
    allowed = list(key.allowed_models.filter(enabled=True))
    if allowed or key.allowed_models.exists():
        return allowed
    return list(ServedModel.objects.filter(enabled=True))


def served_model_for_key(*, key: ApiKey, name: str) -> ServedModel | None:
    """The enabled model called `name` (or aliased so) that the key may use, else None."""
    for model in served_models_for_key(key=key):
        if name == model.name or name in (model.aliases or []):
            return model
    return None


def enabled_model_names() -> list[str]:
    return list(ServedModel.objects.filter(enabled=True).values_list("name", flat=True))
