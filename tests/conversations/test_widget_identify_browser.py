"""Identifying signed-in users in the widget on another site, in a real Chromium (issue 16,
point 2): the shop's pages (http://localhost:<port>) call SupportBot('identify', …) with the
user_hash their server computed, before or after widget.js (http://127.0.0.1:<port>) loads.
Each browser context is another browser with fresh storage."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from conversations.identity import user_hash
from conversations.models import Conversation, Customer
from tests.conftest import free_port
from tests.conversations.test_widget_browser import serve_host_page

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]

SECRET = "browser-identify-secret-0123456789"
STUB = (
    "window.SupportBot = window.SupportBot || function () {"
    " (window.SupportBot.q = window.SupportBot.q || []).push(arguments); };"
)
QUESTION = "How do I return an item?"


def identify_call(user_id: str, *, signed_with: str = SECRET) -> str:
    user = {
        "id": user_id,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "user_hash": user_hash(user_id, signed_with),
    }
    return f"SupportBot('identify', {json.dumps(user)});"


def identifying_shop(
    asgi_server, celery_worker, secret: str, pages_for: Callable[[str], dict[str, str]]
) -> Iterator[tuple[str, str]]:
    """(app, shop) for a shop fixture: the app on 127.0.0.1 with the offline answerer and the
    demo articles, allowing only the shop and signing identities with `secret`; the shop on
    localhost serves pages_for(app) by path (its pages load widget.js from the app)."""
    from django.core.management import call_command

    call_command("load_demo_kb", verbosity=0)
    port = free_port()
    app = f"http://127.0.0.1:{port}"
    server, shop_origin = serve_host_page(pages_for(app))
    env = {"LLM_PROVIDER": "offline", "OFFLINE_WORD_DELAY_MS": "5"}
    celery_worker(**env)
    asgi_server(
        port=port,
        WIDGET_ANY_SITE="0",
        WIDGET_ALLOWED_ORIGINS=shop_origin,
        WIDGET_IDENTITY_SECRET=secret,
        **env,
    )
    yield app, shop_origin
    server.shutdown()
    server.server_close()


def widget_loader(app: str) -> str:
    return f'<script src="{app}/static/chat/widget.js" data-support-bot async></script>'


@pytest.fixture
def shop(asgi_server, celery_worker) -> Iterator[tuple[str, str]]:
    """(app, shop): the app on 127.0.0.1 and the shop on localhost, whose pages are
    /signed-in (Ada, signed by the shop's server), /forged (Ada, a wrong hash) and /anonymous
    (nobody signed in; the test signs in later)."""
    calls = {
        "/signed-in": identify_call("user-ada"),
        "/forged": identify_call("user-ada", signed_with="not the shop's secret"),
        "/anonymous": "",
    }

    def pages_for(app: str) -> dict[str, str]:
        return {
            path: f"<!doctype html><title>Shop</title><h1>Our shop</h1>"
            f"<script>{STUB} {call}</script>{widget_loader(app)}"
            for path, call in calls.items()
        }

    yield from identifying_shop(asgi_server, celery_worker, SECRET, pages_for)


def open_widget(page, url: str):
    page.goto(url)
    page.get_by_role("button", name="Open chat").click()
    frame = page.frame_locator("#support-bot-frame")
    frame.locator(".connection-status[data-state=connected]").wait_for()
    return frame


def ask(frame, text: str) -> None:
    frame.get_by_role("textbox", name="Message").fill(text)
    frame.get_by_role("button", name="Send").click()
    frame.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()


def history_links(frame) -> list[str]:
    frame.get_by_role("button", name="Your conversations").click()
    frame.locator(".history__link, .history__empty").first.wait_for()
    return frame.locator(".history__link").all_inner_texts()


def test_a_signed_in_users_conversation_follows_them_to_another_browser(chromium, shop):
    _, shop_origin = shop
    laptop = chromium.new_context()
    phone = chromium.new_context()
    stranger = chromium.new_context()
    try:
        page = laptop.new_page()
        page.set_default_timeout(20_000)
        frame = open_widget(page, f"{shop_origin}/signed-in")
        ask(frame, QUESTION)
        ada = Customer.objects.get(external_id="user-ada")
        assert (ada.display_name, ada.email) == ("Ada Lovelace", "ada@example.com")
        assert Conversation.objects.get().customer_id == ada.pk

        # Another browser, fresh storage: the same user sees the same conversation.
        page = phone.new_page()
        page.set_default_timeout(20_000)
        frame = open_widget(page, f"{shop_origin}/signed-in")
        log = frame.get_by_role("log")
        log.locator('[data-author="bot"][data-status="done"]').wait_for()
        assert QUESTION in log.locator('[data-author="customer"]').inner_text()
        assert len(history_links(frame)) == 1  # "Your conversations" lists it too
        assert Customer.objects.count() == 1

        # A page with a forged hash stays anonymous and sees nothing of Ada's.
        page = stranger.new_page()
        page.set_default_timeout(20_000)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        frame = open_widget(page, f"{shop_origin}/forged")
        assert frame.get_by_role("log").locator('[data-author="customer"]').count() == 0
        assert history_links(frame) == []
        assert any("identify refused" in line and "bad_user_hash" in line for line in console)
        # The refusal is for the site's developer: the customer reads no error.
        assert "user_hash" not in frame.locator("#chat").inner_text()
        assert Customer.objects.count() == 1
    finally:
        for context in (laptop, phone, stranger):
            context.close()


def test_signing_in_brings_the_anonymous_conversation_and_signing_out_forgets_it(chromium, shop):
    _, shop_origin = shop
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        frame = open_widget(page, f"{shop_origin}/anonymous")
        ask(frame, QUESTION)
        anonymous = Customer.objects.get()
        assert anonymous.external_id is None

        # The shop signs Ada in without a reload: the chat starts over as Ada, with her question.
        page.evaluate(identify_call("user-ada"))
        frame = page.frame_locator("#support-bot-frame")
        frame.locator(".connection-status[data-state=connected]").wait_for()
        log = frame.get_by_role("log")
        log.locator('[data-author="customer"]').first.wait_for()
        assert QUESTION in log.inner_text()
        ada = Customer.objects.get()  # merged: the anonymous row is gone
        assert ada.external_id == "user-ada" and ada.pk != anonymous.pk
        assert Conversation.objects.get().customer_id == ada.pk

        # Logout: the next person on this browser starts as a new anonymous visitor.
        page.evaluate("SupportBot('shutdown')")
        assert page.evaluate("localStorage.getItem('support-bot.visitor')") is None
        page.goto(f"{shop_origin}/anonymous")
        frame = open_widget(page, f"{shop_origin}/anonymous")
        assert frame.get_by_role("log").locator('[data-author="customer"]').count() == 0
        assert history_links(frame) == []
        assert Conversation.objects.get().customer_id == ada.pk
    finally:
        context.close()
