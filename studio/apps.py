from django.apps import AppConfig


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = "Prompt studio"

    def ready(self) -> None:
        # Imported once the app registry is ready: these modules use the models.
        from bot import config as bot_config
        from support_bot import config_cache

        from . import admin_eval  # noqa: F401  (test sets and runs in the admin)
        from .admin_ab import ExperimentAdmin  # noqa: F401  (the A/B experiments' admin)
        from .models import Experiment, ModelPrice, PromptVersion
        from .runtime import StudioSource

        # Read on every bot reply through the configuration cache.
        config_cache.watch(PromptVersion, Experiment, ModelPrice)
        # Replies, assist and eval_kb answer with the prompt versions and A/B arms from now on.
        bot_config.use_source(StudioSource())
