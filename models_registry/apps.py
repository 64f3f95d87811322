from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    name = "models_registry"
    verbose_name = "Models and API keys"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from .models import ServedModel
        from .selectors import forget_enabled_model_names

        post_save.connect(forget_enabled_model_names, sender=ServedModel, dispatch_uid="enabled-names-save")
        post_delete.connect(forget_enabled_model_names, sender=ServedModel, dispatch_uid="enabled-names-delete")
