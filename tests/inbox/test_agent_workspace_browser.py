"""Issue 17's walk-through in two Chromium browsers against the real stack (uvicorn, a Celery
worker with the offline answerer, Redis, the database): a customer chats and asks for a
person; the agent is notified, searches, filters, opens the conversation by keyboard, reads
the customer's context, labels it, and finds it again by its label."""

from __future__ import annotations

import re

import pytest

from conversations import services as chat_services
from conversations.models import Conversation, Customer, EscalationRule
from inbox.models import Label
from tests import personas
from tests.conversations.test_chat_browser import in_thread
from tests.inbox.test_inbox_browser import agent_context
from tests.inbox.test_notify_browser import CAPTURE_NOTIFICATIONS, notifications

alice_agent = personas.alice_agent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.default_pass_only(
        reason="what the pages draw and do; each step's data rules have tests on both paths"
    ),
]

OFFLINE_APP = {"word_delay_ms": 5}


def rows_shown(page) -> list[str]:
    return page.eval_on_selector_all(
        ".inbox-row", "rows => rows.map(r => r.dataset.conversationId)"
    )


def test_an_agent_is_notified_searches_filters_opens_by_keyboard_reads_context_and_labels(
    chromium, offline_app, alice_agent
):
    app = offline_app
    EscalationRule.objects.get_or_create(kind="handoff_phrase", pattern="talk to a person")
    Label.objects.create(name="VIP", colour="#7c3aed")

    made: list[Conversation] = []

    def seed() -> None:
        dina = Customer.objects.create(display_name="Dina", email="dina@example.com")
        made.append(Conversation.objects.create(customer=dina, status="pending"))
        chat_services.post_customer_message(made[0], "dina-1", "My invoice is wrong")

    in_thread(seed)  # server-side work beside Playwright's event loop
    dina_conversation = made[0]
    agent = agent_context(chromium, app, alice_agent, permissions=["notifications"])
    agent.add_init_script(CAPTURE_NOTIFICATIONS)
    customer = chromium.new_context(locale="de-DE")
    try:
        anna = agent.new_page()
        anna.set_default_timeout(20_000)
        anna.goto(f"{app}/agent/")
        anna.locator(".connection-status[data-state=connected]").wait_for()
        # Dina waits for a person already: one unread in the title.
        anna.wait_for_function("() => document.title.startsWith('(1) Inbox ·')")

        # The customer asks the bot, then for a person.
        chat = customer.new_page()
        chat.set_default_timeout(20_000)
        chat.goto(f"{app}/chat/")
        chat.get_by_role("textbox", name="Message").fill("My parcel 4411 never arrived")
        chat.get_by_role("button", name="Send").click()
        chat.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()
        chat.get_by_role("textbox", name="Message").fill("Can I talk to a person please?")
        chat.get_by_role("button", name="Send").click()

        # Notification: the title counts two, a desktop notification names the handover.
        anna.wait_for_function("() => document.title.startsWith('(2) Inbox ·')")
        anna.wait_for_function("() => window.__notifications.length > 0")
        assert notifications(anna)[0]["title"].endswith("is waiting for a person")
        parcel = Conversation.objects.exclude(pk=dina_conversation.pk).get()
        assert parcel.status == "pending"

        # Search and filter: the view, the status, the words of the message.
        anna.get_by_role("button", name="Unassigned").click()
        anna.get_by_label("Status", exact=True).select_option(label="Pending")
        anna.wait_for_function("() => document.querySelectorAll('.inbox-row').length === 2")
        anna.get_by_role("searchbox", name="Search").fill("parcel")
        anna.wait_for_function("() => document.querySelectorAll('.inbox-row').length === 1")
        assert rows_shown(anna) == [str(parcel.pk)]

        # Shortcut: out of the search box, j selects the row, Enter opens it.
        anna.evaluate("document.activeElement.blur()")
        anna.keyboard.press("j")
        row = anna.locator(f'.inbox-row[data-conversation-id="{parcel.pk}"]')
        assert row.get_attribute("aria-current") == "true"
        anna.keyboard.press("Enter")
        anna.wait_for_url(re.compile(rf"/agent/conversations/{parcel.pk}/$"))

        # The context panel: where the chat started, in what browser and language.
        panel = anna.get_by_role("region", name="Customer")
        panel.get_by_role("link", name=f"{app}/chat/").wait_for()
        text = panel.inner_text()
        assert "on Linux" in text and "de-DE" in text
        assert "My invoice" not in text  # Dina's conversation is not this customer's

        # A label from the picker, then r takes the agent to the reply box.
        anna.get_by_label("Label to add").select_option(label="VIP")
        anna.get_by_role("button", name="Add label").click()
        anna.get_by_role("list", name="Labels on this conversation").get_by_text("VIP").wait_for()
        anna.keyboard.press("r")
        assert anna.evaluate("document.activeElement.getAttribute('aria-label')") == "Reply"

        # Back in the inbox, the label filter finds it and only it.
        anna.goto(f"{app}/agent/")
        anna.locator(".connection-status[data-state=connected]").wait_for()
        anna.get_by_label("Label", exact=True).select_option(label="VIP")
        anna.wait_for_function(
            "id => [...document.querySelectorAll('.inbox-row')]"
            ".map(r => r.dataset.conversationId).join() === id",
            arg=str(parcel.pk),
        )
        assert "VIP" in row.inner_text()
    finally:
        customer.close()
        agent.close()
