from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    name = "models_registry"
    verbose_name = "Models and API keys"

    def ready(self):
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from .models import ApiKey, ServedModel
        from .selectors import enabled_names_recent, served_models_recent

        post_save.connect(enabled_names_recent.forget, sender=ServedModel, dispatch_uid="enabled-names-save")
        post_delete.connect(enabled_names_recent.forget, sender=ServedModel, dispatch_uid="enabled-names-delete")
        for sender in (ServedModel, ApiKey):
            post_save.connect(
                served_models_recent.forget, sender=sender, dispatch_uid=f"served-models-save-{sender.__name__}"
            )
            post_delete.connect(
                served_models_recent.forget, sender=sender, dispatch_uid=f"served-models-delete-{sender.__name__}"
            )
        # An edit in the admin (or register_model) wakes every engine host's reconciler at once.
        post_save.connect(_deployments_changed, sender=ServedModel, dispatch_uid="deployments-save")
        post_delete.connect(_deployments_changed, sender=ServedModel, dispatch_uid="deployments-delete")
        m2m_changed.connect(
            served_models_recent.forget, sender=ApiKey.allowed_models.through, dispatch_uid="served-models-allowlist"
        )


def _deployments_changed(**kwargs):
    from . import deployment_events

    deployment_events.announce()
