"""The admin transcript in Chromium against the real ASGI server: it fits a 1,280 px window
with no horizontal scroll (it was 1,554 px wide) and a 390 px phone, and bot replies are drawn
as sanitised Markdown while hostile text stays inert, with no serious axe violation."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from conversations.models import Conversation, Customer
from inbox.models import Note
from studio.models import PromptVersion
from tests import personas
from tests.a11y import assert_no_serious_violations
from tests.conversations.test_admin_transcript_chat import HOSTILE, turn

olivia_operator = personas.olivia_operator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

LONG_WORD = "https://example.com/" + "a-very-long-unbroken-path-segment-" * 12


@pytest.mark.default_pass_only(
    reason="layout and rendering in the browser: the engine changes none of it"
)
def test_the_transcript_fits_1280_and_390_px_and_draws_markdown_safely(
    chromium, asgi_server, olivia_operator, tmp_path: Path
):
    base = asgi_server(LLM_PROVIDER="offline")
    version = PromptVersion.objects.create(name="Friendly v3", system_prompt="Be kind.")
    conversation = Conversation.objects.create(
        customer=Customer.objects.create(display_name="Alice Example"),
        rating=5,
        rating_comment="Great",
    )
    turn(conversation, 1, "customer", f"My kettle broke. {LONG_WORD}\n{HOSTILE}")
    turn(
        conversation,
        2,
        "bot",
        "See **returns** [1]:\n\n| Step | What |\n|---|---|\n| 1 | Pack it |\n\n" + HOSTILE,
        status="done",
        model="gpt-test",
        prompt_version=version,
        sources=[{"n": 1, "title": "Returns", "url": "https://help.example/returns"}],
    )
    turn(conversation, 3, "bot", "", status="failed", error_code="timeout")
    Note.objects.create(conversation=conversation, author=olivia_operator, text="VIP " * 80)

    client = Client()
    client.force_login(olivia_operator)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": base,
            }
        ]
    )
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
        page.goto(f"{base}/admin/conversations/conversation/{conversation.pk}/change/")
        page.wait_for_selector("#transcript .transcript__text--rendered strong")

        bot = page.locator('#transcript [data-kind="bot"]').first
        assert bot.locator("strong").inner_text() == "returns"
        assert bot.locator("table td").first.inner_text() == "1"
        assert page.locator("#transcript img").count() == 0
        assert page.locator("#transcript [data-kind=customer] .transcript__text").inner_text() == (
            f"My kettle broke. {LONG_WORD}\n{HOSTILE}"
        )
        assert page.get_by_role("link", name="Open in inbox").count() == 1
        assert page.get_by_role("link", name="Friendly v3").count() == 1

        # The chat itself (the admin around it is Django's): contrast of the badges and the note.
        assert_no_serious_violations(page, "the admin transcript", include="#transcript")

        width = page.evaluate("document.scrollingElement.scrollWidth")
        page.screenshot(path=str(tmp_path / "transcript-1280.png"), full_page=True)
        assert width <= 1280, width

        page.set_viewport_size({"width": 390, "height": 844})
        phone_width = page.evaluate("document.scrollingElement.scrollWidth")
        page.screenshot(path=str(tmp_path / "transcript-390.png"), full_page=True)
        assert phone_width <= 390, phone_width
        assert errors == []
    finally:
        context.close()
