"""The widget's launcher on another site (issue 16, point 9), in a real Chromium: the host page
on http://localhost:<port>, the app on http://127.0.0.1:<port>. Esc closes the widget from
inside the chat frame (the frame asks the host page by postMessage) and from the launcher,
and gives focus back to the launcher; replies that arrive while the widget is closed (an
agent's, sent through the real inbox service) show as an unread count on the launcher."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, Turn
from inbox import services as inbox_services
from tests.a11y import assert_no_serious_violations
from tests.conversations.test_chat_browser import in_thread
from tests.conversations.test_widget_browser import (
    module_app_options,
    module_sites,
    open_widget,
    shared_two_sites,
)
from tests.personas import make_user

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.default_pass_only(
        reason="messages between the frame and the host page, whatever stores the replies"
    ),
]

__all__ = ["module_app_options", "module_sites", "shared_two_sites"]  # fixtures used here


def launcher(page):
    """The launcher button in the widget's shadow root, whatever its name says."""
    return page.locator("[data-support-bot-widget] button")


def focused_label(page) -> str | None:
    return page.evaluate(
        """() => {
            const host = document.querySelector('[data-support-bot-widget]');
            const focused = host && host.shadowRoot.activeElement;
            return focused ? focused.getAttribute('aria-label') : null;
        }"""
    )


def start_chatting(page, shop: str):
    frame = open_widget(page, shop)
    frame.get_by_role("textbox", name="Message").fill("How do I return an item?")
    frame.get_by_role("button", name="Send").click()
    frame.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()
    return frame


def test_it_closes_the_widget_on_esc_and_gives_focus_back_to_the_launcher(
    chromium, shared_two_sites
):
    _, shop, _ = shared_two_sites
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        frame = open_widget(page, shop)
        frame.locator(".connection-status[data-state=connected]").wait_for()

        # Esc while typing in the chat frame: the frame asks the host page to close it.
        frame.get_by_role("textbox", name="Message").focus()
        page.keyboard.press("Escape")
        page.locator("#support-bot-frame").wait_for(state="hidden")
        assert launcher(page).get_attribute("aria-expanded") == "false"
        assert focused_label(page) == "Open chat"

        # Esc on the launcher itself, with the widget open.
        launcher(page).press("Enter")
        page.locator("#support-bot-frame").wait_for(state="visible")
        assert launcher(page).get_attribute("aria-expanded") == "true"
        launcher(page).focus()
        page.keyboard.press("Escape")
        page.locator("#support-bot-frame").wait_for(state="hidden")
        assert focused_label(page) == "Open chat"
        # The conversation and its connection survive closing.
        launcher(page).click()
        frame.locator(".connection-status[data-state=connected]").wait_for()
    finally:
        context.close()


def test_the_launcher_counts_replies_that_arrive_while_the_widget_is_closed(
    chromium, shared_two_sites
):
    _, shop, _ = shared_two_sites
    agent = make_user("anna", "Anna", None)
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        frame = start_chatting(page, shop)
        # Seen while open: nothing unread.
        assert launcher(page).get_attribute("aria-label") == "Close chat"
        launcher(page).click()
        page.locator("#support-bot-frame").wait_for(state="hidden")
        conversation = Conversation.objects.get()

        in_thread(lambda: inbox_services.agent_reply(conversation.pk, agent, "Hi, Anna here."))
        page.get_by_role("button", name="Open chat, 1 unread message").wait_for()
        in_thread(lambda: inbox_services.agent_reply(conversation.pk, agent, "Still there?"))
        page.get_by_role("button", name="Open chat, 2 unread messages").wait_for()
        badge = page.locator("[data-support-bot-widget] [data-unread]")
        assert badge.inner_text() == "2" and badge.get_attribute("aria-hidden") == "true"
        assert_no_serious_violations(
            page, "the launcher with unread messages", include="[data-support-bot-widget]"
        )

        # Opening shows them and clears the count.
        page.get_by_role("button", name="Open chat, 2 unread messages").click()
        assert frame.get_by_role("log").locator("[data-author=agent]").count() == 2
        assert launcher(page).get_attribute("aria-label") == "Close chat"
        assert badge.is_hidden()

        # A reply that arrives while the widget is open is read, not counted.
        in_thread(lambda: inbox_services.agent_reply(conversation.pk, agent, "Anything else?"))
        frame.get_by_role("log").locator("[data-author=agent]").nth(2).wait_for()
        launcher(page).click()
        page.wait_for_timeout(500)
        assert launcher(page).get_attribute("aria-label") == "Open chat"
        assert Turn.objects.filter(author="agent").count() == 3
    finally:
        context.close()


def test_a_page_that_is_not_the_chat_frame_cannot_close_the_widget_or_add_unread(
    chromium, shared_two_sites
):
    _, shop, _ = shared_two_sites
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        open_widget(page, shop).locator(".connection-status[data-state=connected]").wait_for()
        # The host page itself (or any other frame) posting the frame's messages: ignored.
        page.evaluate(
            """() => {
                window.postMessage({type: 'support-bot:close'}, '*');
                window.postMessage({type: 'support-bot:new-message', author: 'agent'}, '*');
            }"""
        )
        page.wait_for_timeout(500)
        assert launcher(page).get_attribute("aria-expanded") == "true"
        launcher(page).click()
        page.evaluate("() => window.postMessage({type: 'support-bot:new-message'}, '*')")
        page.wait_for_timeout(500)
        assert launcher(page).get_attribute("aria-label") == "Open chat"
    finally:
        context.close()


def test_a_closed_widget_pings_at_the_relaxed_pace_and_checks_at_once_when_opened(
    chromium, shared_two_sites
):
    """Nobody watches a closed widget: it does not ping every 4 s (docs/protocol.md#heartbeat),
    and opening it checks the connection at once."""
    _, shop, _ = shared_two_sites
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        open_widget(page, shop).locator(".connection-status[data-state=connected]").wait_for()
        chat = page.locator("#support-bot-frame").element_handle().content_frame()
        chat.evaluate(
            """() => { window.__pings = 0; const send = WebSocket.prototype.send;
                       WebSocket.prototype.send = function (data) {
                         if (JSON.parse(data).type === "ping") window.__pings += 1;
                         return send.call(this, data); }; }"""
        )
        page.wait_for_timeout(4_500)
        assert chat.evaluate("window.__pings") >= 1  # open: every 4 s

        launcher(page).click()
        chat.evaluate("() => { window.__pings = 0; }")
        page.wait_for_timeout(6_000)
        assert chat.evaluate("window.__pings") == 0

        launcher(page).click()
        page.wait_for_timeout(1_000)
        assert chat.evaluate("window.__pings") == 1
    finally:
        context.close()
