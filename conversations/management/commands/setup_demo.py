"""Loads the demo knowledge base and makes sure a demo staff user exists."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Load the demo knowledge base and create the demo staff user (prints its password)."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("load_demo_kb", verbosity=options["verbosity"])
        credentials = settings.VAR_DIR / "demo-credentials.txt"
        User = get_user_model()
        user = User.objects.filter(username="demo").first()
        if user is None or not credentials.exists():
            password = secrets.token_urlsafe(12)
            user = user or User(username="demo", email="demo@example.com")
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            credentials.write_text(f"demo {password}\n")
            credentials.chmod(0o600)
        username, password = credentials.read_text().split()
        self.stdout.write(
            self.style.SUCCESS(f"Demo staff user: {username} / {password}  (log in at /admin/)")
        )
