"""Issue 17.3 in Chromium, against the real stack: the unread count in the tab title and
desktop notifications (a handover, then a new message on my conversation), keyboard
shortcuts (j/k/Enter/?/r), and collision detection between two agents ("Anna is typing a
reply…")."""

from __future__ import annotations

import json
import re

import pytest

from conversations.models import Conversation, Customer, EscalationRule, Turn
from tests import personas
from tests.conftest import start_offline_app
from tests.inbox.test_inbox_browser import agent_context

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

# Records every desktop notification the page creates (the real one still shows).
CAPTURE_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__notifications = [];
  class Recorded extends Real {
    constructor(title, options) {
      super(title, options);
      const { body = "", tag = "" } = options || {};
      window.__notifications.push({ title, body, tag });
      window.__lastNotification = this;
    }
  }
  window.Notification = Recorded;
})();
"""


def notifications(page) -> list[dict]:
    return page.evaluate("window.__notifications")


@pytest.mark.worker
@pytest.mark.default_pass_only(reason="what the pages draw; the database engine changes none of it")
def test_it_counts_unread_in_the_title_and_notifies_handovers_and_my_new_messages(
    chromium, asgi_server, celery_worker, alice_agent, bob_agent
):
    base = start_offline_app(asgi_server, celery_worker, word_delay_ms=20)
    EscalationRule.objects.get_or_create(kind="handoff_phrase", pattern="talk to a person")
    anna_context = agent_context(chromium, base, alice_agent, permissions=["notifications"])
    anna_context.add_init_script(CAPTURE_NOTIFICATIONS)
    bob_context = agent_context(chromium, base, bob_agent)
    customer_context = chromium.new_context()
    try:
        anna, bob, customer = (c.new_page() for c in (anna_context, bob_context, customer_context))
        for page in (anna, bob, customer):
            page.set_default_timeout(20_000)
        for page in (anna, bob):
            page.goto(f"{base}/agent/")
            page.wait_for_selector(".connection-status[data-state=connected]")
        assert anna.title().startswith("Inbox ·")
        # Permission is granted already: no button to ask, the on/off switch instead.
        assert anna.get_by_role("button", name="Enable desktop notifications").is_hidden()
        assert anna.get_by_role("checkbox", name="Desktop notifications").is_checked()

        customer.goto(f"{base}/chat/")
        customer.get_by_role("textbox", name="Message").fill("Can I talk to a person please?")
        customer.get_by_role("button", name="Send").click()

        # Both agents' tabs count it; Anna's browser shows a desktop notification.
        for page in (anna, bob):
            page.wait_for_function("() => document.title.startsWith('(1) Inbox ·')")
        anna.wait_for_function("() => window.__notifications.length > 0")
        handover = notifications(anna)[0]
        assert handover["title"].endswith("is waiting for a person")
        assert "talk to a person" in handover["body"]
        conversation = Conversation.objects.get()

        # Shortcuts: ? opens the help, Esc closes it; j selects the row, Enter opens it.
        anna.keyboard.press("?")
        help_dialog = anna.get_by_role("dialog", name="Keyboard shortcuts")
        help_dialog.wait_for()
        assert "Next conversation" in help_dialog.inner_text()
        anna.keyboard.press("Escape")
        help_dialog.wait_for(state="hidden")
        # The list re-reads a live row with its view and filters (inbox.js), just after the
        # title counted it: wait for the row before moving to it.
        row = anna.locator(f'.inbox-row[data-conversation-id="{conversation.pk}"]')
        row.wait_for()
        anna.keyboard.press("j")
        assert row.get_attribute("aria-current") == "true"
        anna.keyboard.press("k")  # the first row stays selected
        assert row.get_attribute("aria-current") == "true"
        anna.keyboard.press("Enter")
        anna.wait_for_url(re.compile(rf"/agent/conversations/{conversation.pk}/$"))
        # Reading it marks it read for Anna: her count goes; Bob has not read it, his stays.
        anna.wait_for_function("() => document.title.startsWith('Conversation ·')")
        bob.wait_for_timeout(1000)
        assert bob.title().startswith("(1) Inbox ·")
        anna.keyboard.press("r")
        assert anna.evaluate("document.activeElement.getAttribute('aria-label')") == "Reply"
        anna.get_by_role("button", name="Take over").click()
        anna.wait_for_function(
            "() => document.querySelector('.conversation-state').textContent"
            ".includes('You have this conversation')"
        )

        # Back in the inbox, a new message on her conversation: counted and notified.
        anna.goto(f"{base}/agent/")
        anna.wait_for_selector(".connection-status[data-state=connected]")
        customer.get_by_role("textbox", name="Message").fill("It's order 1234")
        customer.get_by_role("button", name="Send").click()
        anna.wait_for_function("() => document.title.startsWith('(1) Inbox ·')")
        anna.wait_for_function(
            "() => window.__notifications.some((n) => n.title.startsWith('New message from'))"
        )
        message = next(n for n in notifications(anna) if n["title"].startswith("New message"))
        assert message["body"] == "It's order 1234"
        # Bob is not told about Anna's conversation, and it is not in his count.
        bob.wait_for_timeout(500)
        assert bob.title().startswith("Inbox ·")

        # Clicking the notification opens the conversation.
        anna.evaluate("window.__lastNotification.dispatchEvent(new Event('click'))")
        anna.wait_for_url(re.compile(rf"/agent/conversations/{conversation.pk}/$"))
    finally:
        for context in (anna_context, bob_context, customer_context):
            context.close()


@pytest.mark.default_pass_only(reason="what the pages draw; the database engine changes none of it")
def test_it_shows_an_agent_who_else_is_viewing_and_typing(
    chromium, asgi_server, alice_agent, bob_agent
):
    base = asgi_server()
    customer = Customer.objects.create(display_name="Cleo")
    conversation = Conversation.objects.create(customer=customer, status="pending")
    Turn.objects.create(conversation=conversation, author="customer", text="My parcel is late")
    url = f"{base}/agent/conversations/{conversation.pk}/"
    anna_context = agent_context(chromium, base, alice_agent)
    bob_context = agent_context(chromium, base, bob_agent)
    try:
        anna, bob = anna_context.new_page(), bob_context.new_page()
        for page in (anna, bob):
            page.set_default_timeout(20_000)
        bob.goto(url)
        bob.wait_for_selector(".connection-status[data-state=connected]")
        collision = bob.locator(".collision")
        assert collision.is_hidden()

        anna.goto(url)
        bob.wait_for_function(
            "() => document.querySelector('.collision').textContent === 'Anna is viewing'"
        )
        anna.wait_for_function(
            "() => document.querySelector('.collision').textContent === 'Bob is viewing'"
        )

        anna.get_by_role("textbox", name="Reply").press_sequentially("Hello Cleo")
        bob.wait_for_function(
            "() => document.querySelector('.collision').textContent === 'Anna is typing a reply…'"
        )
        anna.get_by_role("textbox", name="Internal note").press_sequentially("Refund?")
        bob.wait_for_function(
            "() => document.querySelector('.collision').textContent === 'Anna is typing a note…'"
        )

        # Shortcut keys typed into a field are text, not shortcuts.
        assert anna.get_by_role("textbox", name="Internal note").input_value() == "Refund?"

        anna.close()
        collision.wait_for(state="hidden")

        # Bob's shortcuts on the conversation page: n, a, e, then ] to the next one listed.
        log = bob.get_by_role("log", name="Transcript")
        log.focus()
        bob.keyboard.press("n")
        assert bob.evaluate("document.activeElement.getAttribute('aria-label')") == "Internal note"
        bob.keyboard.type("e")  # typed into the note: text, not "resolve"
        assert bob.get_by_role("textbox", name="Internal note").input_value() == "e"
        log.focus()
        bob.keyboard.press("a")
        assert bob.evaluate("document.activeElement.id") == "assign-to-agent"
        bob.keyboard.press("Escape")
        log.focus()
        bob.keyboard.press("e")
        bob.wait_for_function(
            "() => document.querySelector('#agent-conversation').dataset.status === 'resolved'"
        )
        bob.keyboard.press("]")  # no inbox order known in this tab: it says so
        bob.get_by_text("No next conversation in your inbox list.").wait_for()
        other = Conversation.objects.create(customer=customer, status="pending")
        order = [str(conversation.pk), str(other.pk)]
        bob.evaluate(
            "(ids) => sessionStorage.setItem('supportbot.agent.order', ids)", json.dumps(order)
        )
        bob.keyboard.press("]")
        bob.wait_for_url(re.compile(rf"/agent/conversations/{other.pk}/$"))
    finally:
        anna_context.close()
        bob_context.close()
