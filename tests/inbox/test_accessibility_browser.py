"""The agent inbox is accessible (issue 16, point 9): axe-core finds no serious or critical WCAG
2.1 AA violation on the inbox list nor on a conversation (with customer, bot and agent messages,
a note and a system line), on a desktop and a phone, and the keyboard focus ring has 3:1
contrast. Real Chromium against the real stack; the agent is personas.alice_agent."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from conversations.models import Conversation, Customer, Turn
from inbox.models import Note
from tests import personas
from tests.a11y import DESKTOP, PHONE, axe_violations, blocking, describe, focus_ring_contrast, shot
from tests.conftest import start_offline_app

from .test_inbox_browser import agent_context

alice_agent = personas.alice_agent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.default_pass_only(
        reason="the pages' markup and styles, which the database engine does not change"
    ),
]


def test_the_inbox_list_and_a_conversation_have_no_serious_axe_violations(
    chromium, asgi_server, celery_worker, alice_agent
):
    app = start_offline_app(asgi_server, celery_worker, word_delay_ms=5)
    waiting = Conversation.objects.create(
        customer=Customer.objects.create(display_name="Cleo"), status="pending"
    )
    Turn.objects.create(conversation=waiting, author="customer", text="Where is my parcel?")
    Turn.objects.create(conversation=waiting, author="bot", status="done", text="**Today**.")
    dina = Customer.objects.create(display_name="Dina")
    mine = Conversation.objects.create(customer=dina, status="pending", assignee=alice_agent)
    Turn.objects.create(conversation=mine, author="customer", text="Can I talk to a person?")
    Turn.objects.create(conversation=mine, author="agent", agent=alice_agent, text="I'm Anna.")
    Note.objects.create(conversation=mine, author=alice_agent, text="VIP customer")
    Conversation.objects.create(
        customer=Customer.objects.create(display_name="Enzo"), status="resolved"
    )
    # Listed once the customer wrote (the services set these; the turns above were made
    # directly).
    Conversation.objects.filter(pk__in=[waiting.pk, mine.pk]).update(
        last_customer_message_at=timezone.now(), last_message_at=timezone.now()
    )

    found: dict[str, list[dict[str, Any]]] = {}
    for device, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = agent_context(chromium, app, alice_agent, viewport=viewport)
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{app}/agent/")
            page.locator(".connection-status[data-state=connected]").wait_for()
            page.locator(".inbox-row").nth(1).wait_for()
            found[f"{device} inbox list"] = axe_violations(page)
            if device == "desktop":
                page.keyboard.press("Tab")
                link = page.locator(".inbox-row__link").first
                assert focus_ring_contrast(link) >= 3
                shot(page, "inbox-desktop")

            page.goto(f"{app}/agent/conversations/{mine.pk}/")
            page.locator(".connection-status[data-state=connected]").wait_for()
            page.get_by_role("log", name="Transcript").locator('[data-author="note"]').wait_for()
            found[f"{device} conversation"] = axe_violations(page)
            if device == "desktop":
                page.keyboard.press("Tab")
                assert focus_ring_contrast(page.get_by_role("button", name="Resolve")) >= 3
                assert focus_ring_contrast(page.get_by_role("textbox", name="Reply")) >= 3
                shot(page, "inbox-conversation-desktop")
            else:
                overflow = "document.scrollingElement.scrollWidth - window.innerWidth"
                assert page.evaluate(overflow) <= 0
                shot(page, "inbox-conversation-phone")
        finally:
            context.close()

    serious = {where: blocking(violations) for where, violations in found.items()}
    report = "\n".join(f"{where}: {describe(v)}" for where, v in serious.items() if v)
    assert not report, report
