from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from inbox.services import wake_snoozed


class Command(BaseCommand):
    help = "Bring back snoozed conversations whose time has come (run it every minute or so)."

    def handle(self, *args: Any, **options: Any) -> None:
        woken = wake_snoozed()
        self.stdout.write(f"{woken} conversation(s) woken up.")
