from django.apps import AppConfig

from conversations.signals import conversation_updated


class InboxConfig(AppConfig):
    name = "inbox"
    verbose_name = "Agent inbox"

    def ready(self) -> None:
        # Imported once the app registry is ready: the module uses the models.
        from . import events

        conversation_updated.connect(events.announce_row, dispatch_uid="inbox.announce_row")
