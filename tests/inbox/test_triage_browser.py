"""Chromium against the real stack (uvicorn, Redis, the database): an agent searches, switches
views, filters by a label, loads more, and sees live rows come and go as they match or stop
matching; then labels a conversation from its page."""

from __future__ import annotations

import pytest

from conversations import services as chat_services
from conversations.models import Conversation, Customer
from inbox import services
from inbox.models import Label
from tests import personas
from tests.conversations.test_chat_browser import in_thread

from .test_inbox_browser import agent_context

alice_agent = personas.alice_agent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.default_pass_only(reason="what the page draws; the database engine changes none"),
]


def waiting_conversation(name: str, text: str, n: int) -> Conversation:
    """A conversation a person is expected in (pending: no bot reply is queued)."""
    customer = Customer.objects.create(display_name=name, email=f"{name.lower()}@example.com")
    conversation = Conversation.objects.create(customer=customer, status="pending")
    chat_services.post_customer_message(conversation, f"c-{n}", text)
    return conversation


def test_an_agent_searches_filters_loads_more_and_sees_matching_rows_live(
    chromium, asgi_server, alice_agent
):
    billing = Label.objects.create(name="Billing", colour="#2563eb")
    Label.objects.create(name="Bug", colour="#dc2626")
    made: list[Conversation] = []

    def seed() -> None:
        made.extend(
            waiting_conversation(f"Cust{n}" if n else "Ines", text, n)
            for n, text in enumerate(
                ["My invoice is wrong"] + [f"Question {n}" for n in range(1, 55)]
            )
        )
        services.add_label(made[0].pk, alice_agent, "Billing")

    in_thread(seed)  # server-side work beside Playwright's event loop
    invoice, others = made[0], made[1:]
    app = asgi_server()

    context = agent_context(chromium, app, alice_agent)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{app}/agent/")
        page.locator(".connection-status[data-state=connected]").wait_for()
        rows = page.locator(".inbox-row")
        page.wait_for_function("document.querySelectorAll('.inbox-row').length === 50")
        # Ines wrote first: she has waited longest.
        assert "Ines" in rows.first.inner_text() and "Billing" in rows.first.inner_text()

        page.get_by_role("button", name="Load more").click()
        page.wait_for_function("document.querySelectorAll('.inbox-row').length === 55")
        assert page.get_by_role("button", name="Load more").is_hidden()

        page.get_by_role("searchbox", name="Search").fill("invoice")
        page.wait_for_function("document.querySelectorAll('.inbox-row').length === 1")
        assert "My invoice is wrong" in rows.first.inner_text()
        page.get_by_role("searchbox", name="Search").fill("cust7@example.com")
        page.wait_for_function(
            "document.querySelectorAll('.inbox-row').length === 1"
            " && document.querySelector('.inbox-row').textContent.includes('Cust7')"
        )
        page.get_by_role("searchbox", name="Search").fill("")

        page.get_by_role("button", name="Unassigned").click()
        page.get_by_label("Label", exact=True).select_option(label="Billing")
        page.wait_for_function(
            "id => [...document.querySelectorAll('.inbox-row')]"
            ".map(r => r.dataset.conversationId).join() === id",
            arg=str(invoice.pk),
        )

        # Live: a message on a conversation outside the filter doesn't show it; labelling it
        # Billing does; taking it (no longer unassigned) removes it.
        in_thread(lambda: chat_services.post_customer_message(others[0], "c-live-1", "Any news?"))
        in_thread(lambda: services.add_label(others[1].pk, alice_agent, "Billing"))
        new_row = page.locator(f'.inbox-row[data-conversation-id="{others[1].pk}"]')
        new_row.wait_for()
        assert rows.count() == 2
        assert page.locator(f'.inbox-row[data-conversation-id="{others[0].pk}"]').count() == 0
        in_thread(lambda: services.take_over(others[1].pk, alice_agent))
        new_row.wait_for(state="detached")
        assert rows.count() == 1

        # Labels on the conversation page: add one from the picker, remove one.
        page.goto(f"{app}/agent/conversations/{invoice.pk}/")
        labels = page.get_by_role("list", name="Labels on this conversation")
        labels.get_by_text("Billing").wait_for()
        page.get_by_label("Label to add").select_option(label="Bug")
        page.get_by_role("button", name="Add label").click()
        labels.get_by_text("Bug").wait_for()
        page.get_by_role("button", name="Remove label Billing").click()
        labels.get_by_text("Billing").wait_for(state="detached")
        assert [label["name"] for label in services.conversation_labels(invoice.pk)] == ["Bug"]
        assert Label.objects.filter(pk=billing.pk).exists()  # only its link went
    finally:
        context.close()
