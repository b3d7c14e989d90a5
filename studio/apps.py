from django.apps import AppConfig


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = "Prompt studio"

    def ready(self) -> None:
        from support_bot import config_cache

        from . import admin_eval  # noqa: F401  (test sets and runs in the admin)
        from .admin_ab import ExperimentAdmin  # noqa: F401  (the A/B experiments' admin)
        from .models import Experiment, ModelPrice, PromptVersion

        # Read on every bot reply through the configuration cache.
        config_cache.watch(PromptVersion, Experiment, ModelPrice)
