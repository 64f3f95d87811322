"""The registry's admin: served models (the control plane), API keys and workers. Writes go through the services."""

from .api_keys import ApiKeyAdmin, RotateForm
from .served_models import ServedModelAdmin
from .workers import WorkerRegistrationAdmin

__all__ = ["ApiKeyAdmin", "RotateForm", "ServedModelAdmin", "WorkerRegistrationAdmin"]
