from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        # Imported once the app registry is ready: these modules use the models.
        from support_bot import config_cache

        from .models import BusinessHours, EscalationRule, Greeting, SuggestedQuestion, WidgetSite

        post_migrate.connect(_ensure_roles, dispatch_uid="conversations.ensure_roles")
        # Read on every customer message through the configuration cache.
        config_cache.watch(EscalationRule, BusinessHours, WidgetSite)
        config_cache.watch(Greeting, SuggestedQuestion)  # the first screen


def _ensure_roles(sender: AppConfig, **kwargs: object) -> None:
    """After the last app's post_migrate (and flush): by then the auth app's own handler has
    created every app's permissions."""
    # Imported when called: roles uses the auth models, which load after this module.
    from . import roles

    if sender.label == list(apps.get_app_configs())[-1].label:
        roles.ensure_roles()
