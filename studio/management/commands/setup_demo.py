"""Loads the demo knowledge base, seeds the chat's suggested questions and makes sure the demo
team exists: an admin, an agent and an operator, sharing one generated password (printed, and
kept in var/demo-credentials.txt)."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand

from conversations import roles
from conversations.models import SuggestedQuestion
from studio import services as studio_services

# The chat's first screen for the demo company (conversations/first_screen.py): questions its
# help articles answer. Seeded once; operators edit them under Suggested questions.
DEMO_SUGGESTIONS = {
    "": (
        "Where is my order?",
        "How do I return an item?",
        "My thermostat won't connect to Wi-Fi",
        "How do I reset my password?",
    ),
    "de": (
        "Wo ist meine Bestellung?",
        "Wie kann ich einen Artikel zurücksenden?",
        "Mein Thermostat verbindet sich nicht mit dem WLAN",
        "Wie setze ich mein Passwort zurück?",
    ),
}

# username -> (first name, group or None for a superuser)
DEMO_TEAM = {
    "demo": ("Demo", None),
    "anna": ("Anna", roles.AGENTS),
    "olivia": ("Olivia", roles.OPERATORS),
}


class Command(BaseCommand):
    help = "Load the demo knowledge base and create the demo team (prints their password)."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("load_demo_kb", verbosity=options["verbosity"])
        # The bot's prompt as a first published, active version operators can build on.
        studio_services.ensure_default_version()
        if not SuggestedQuestion.objects.exists():
            SuggestedQuestion.objects.bulk_create(
                SuggestedQuestion(text=text, language=language, position=position)
                for language, questions in DEMO_SUGGESTIONS.items()
                for position, text in enumerate(questions, start=1)
            )
        credentials = settings.VAR_DIR / "demo-credentials.txt"
        User = get_user_model()
        password = credentials.read_text().split()[-1] if credentials.exists() else None
        if password is None:
            password = secrets.token_urlsafe(12)
            credentials.write_text(f"demo {password}\n")
            credentials.chmod(0o600)
        for username, (first_name, group) in DEMO_TEAM.items():
            user = User.objects.filter(username=username).first()
            if user is None:
                user = User(username=username, email=f"{username}@example.com")
            if user.pk is None or not user.check_password(password):
                user.set_password(password)
            user.first_name = first_name
            user.is_staff = True
            user.is_superuser = group is None
            user.save()
            if group is not None:
                user.groups.add(Group.objects.get(name=group))
        self.stdout.write(
            self.style.SUCCESS(
                "Demo team (password "
                f"{password}): demo (admin, /admin/), anna (agent, /agent/), olivia (operator)"
            )
        )
