from django.apps import AppConfig


class RulesplatformConfig(AppConfig):
    """The project package as an app: last in INSTALLED_APPS, so it may import every app."""

    name = "rulesplatform"
    verbose_name = "Rules platform"

    def ready(self):
        from .versioning import register_versioned_models

        register_versioned_models()
