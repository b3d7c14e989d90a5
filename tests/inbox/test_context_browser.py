"""The customer context panel in a real Chromium (issue 17 point 4), on two sites: a shop's page
(http://localhost:<port>, reached from its landing page) embeds the widget and identifies its
signed-in user; the customer chats; the agent opens the conversation and sees the shop's page,
its referrer, the browser, the user's attributes and their earlier conversation, and edits
their email (a bad one first)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from conversations.identity import user_hash
from conversations.models import Conversation, Customer, Turn
from tests import personas
from tests.conversations.test_widget_identify_browser import identifying_shop, widget_loader
from tests.inbox.test_inbox_browser import agent_context

alice_agent = personas.alice_agent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]

SECRET = "browser-context-secret-0123456789"
STUB = (
    "window.SupportBot = window.SupportBot || function () {"
    " (window.SupportBot.q = window.SupportBot.q || []).push(arguments); };"
)


@pytest.fixture
def shop(asgi_server, celery_worker) -> Iterator[tuple[str, str]]:
    """(app, shop): the app on 127.0.0.1, the shop on localhost with /landing (a link) and
    /products/lamp (the widget, Ada identified with her plan)."""
    ada = {
        "id": "user-ada",
        "user_hash": user_hash("user-ada", SECRET),
        "attributes": {"plan": "Pro"},
    }
    head = "<!doctype html><title>Shop</title>"

    def pages_for(app: str) -> dict[str, str]:
        identify = f"<script>{STUB} SupportBot('identify', {json.dumps(ada)});</script>"
        return {
            "/landing": f'{head}<a href="/products/lamp?color=red">The lamp</a>',
            "/products/lamp?color=red": f"{head}{identify}{widget_loader(app)}",
        }

    yield from identifying_shop(asgi_server, celery_worker, SECRET, pages_for)


def test_the_agent_sees_where_the_chat_started_and_edits_the_email(chromium, shop, alice_agent):
    app, shop_origin = shop
    ada = Customer.objects.create(external_id="user-ada", display_name="Ada Lovelace")
    earlier = Conversation.objects.create(
        customer=ada, status=Conversation.Status.RESOLVED, rating=4
    )
    Turn.objects.create(conversation=earlier, author="customer", text="Where is my invoice?")

    customer = chromium.new_context(locale="de-DE", timezone_id="Europe/Berlin")
    agent = agent_context(chromium, app, alice_agent)
    try:
        page = customer.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{shop_origin}/landing")
        page.get_by_role("link", name="The lamp").click()
        page.get_by_role("button", name="Open chat").click()
        frame = page.frame_locator("#support-bot-frame")
        frame.locator(".connection-status[data-state=connected]").wait_for()
        frame.get_by_role("textbox", name="Message").fill("My lamp flickers")
        frame.get_by_role("button", name="Send").click()
        frame.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()
        started = Conversation.objects.exclude(pk=earlier.pk).get()
        assert started.customer_id == ada.pk

        view = agent.new_page()
        view.set_default_timeout(20_000)
        view.goto(f"{app}/agent/conversations/{started.pk}/")
        panel = view.get_by_role("region", name="Customer")
        page_link = panel.get_by_role("link", name=f"{shop_origin}/products/lamp?color=red")
        page_link.wait_for()
        assert page_link.get_attribute("rel") == "noopener noreferrer"
        assert panel.get_by_role("link", name=f"{shop_origin}/landing").count() == 1
        text = panel.inner_text()
        assert "on Linux" in text  # Debian's Chromium, parsed from its User-Agent
        assert "de-DE" in text and "Europe/Berlin" in text
        assert "plan" in text and "Pro" in text
        earlier_link = panel.get_by_role("link", name="Where is my invoice?")
        assert earlier_link.get_attribute("href") == f"/agent/conversations/{earlier.pk}/"
        assert "Resolved" in text and "rated 4/5" in text

        panel.get_by_role("button", name="Edit contact details").click()
        panel.get_by_label("Email").fill("not an address")
        panel.get_by_role("button", name="Save").click()
        assert "not an email address" in panel.get_by_role("alert").inner_text()
        assert Customer.objects.get(pk=ada.pk).email == ""
        panel.get_by_label("Email").fill("ada@shop.example")
        panel.get_by_role("button", name="Save").click()
        view.get_by_text("Contact details saved.").wait_for()
        assert "ada@shop.example" in panel.inner_text()
        assert Customer.objects.get(pk=ada.pk).email == "ada@shop.example"
    finally:
        customer.close()
        agent.close()
