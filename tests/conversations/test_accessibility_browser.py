"""Accessible and mobile-first (issue 16, point 9), in a real Chromium against the real stack
(uvicorn, a Celery worker, Redis, the database, the offline answerer): axe-core finds no serious
or critical WCAG 2.1 AA violation on the chat page (desktop and phone: fresh, with bot replies,
the email form outside business hours, the rating form after resolve) nor in the widget on
another site; the focus ring has 3:1 contrast; the rating is five labelled stars a keyboard can
choose; on a 390×844 phone the header and handover bar are compact, "Your conversations"
stays usable beside a long transcript, nothing scrolls sideways and the widget is full-screen.

Screenshots go to /tmp/shots-a11y/ for a person to look at (A11Y_SHOTS=0 turns them off)."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from conversations.models import BusinessHours, Conversation, Customer, Turn
from conversations.visitors import signed_visitor_cookie
from tests.a11y import DESKTOP, PHONE, axe_violations, blocking, describe, focus_ring_contrast, shot

from .test_widget_browser import host_pages, open_widget, two_sites  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.default_pass_only(
        reason="the pages' markup and styles, which the database engine does not change"
    ),
]


@pytest.fixture
def app(offline_app: str) -> str:
    return offline_app


def customer_with(status: str, turns: int = 2, *, name: str = "Cleo") -> Customer:
    """A customer whose latest conversation has `turns` turns (customer and bot in turn)."""
    customer = Customer.objects.create(display_name=name)
    conversation = Conversation.objects.create(customer=customer, status=status)
    for n in range(turns):
        author = "customer" if n % 2 == 0 else "bot"
        text = f"Question {n}: where is my parcel?" if author == "customer" else f"Answer {n}."
        Turn.objects.create(conversation=conversation, author=author, status="done", text=text)
    return customer


def customer_page(chromium: Any, app: str, viewport: dict[str, int], customer: Customer | None):
    """A new browser context as this customer (None: a new visitor), on the chat page of their
    latest conversation (which is resolved or not)."""
    context = chromium.new_context(viewport=viewport)
    if customer is not None:
        cookie = {"name": settings.CHAT_VISITOR_COOKIE, "value": signed_visitor_cookie(customer.pk)}
        context.add_cookies([{**cookie, "url": app}])
    page = context.new_page()
    page.set_default_timeout(20_000)
    latest = customer and customer.conversations.order_by("-created_at").first()
    page.goto(f"{app}/chat/" + (f"?conversation={latest.pk}" if latest else ""))
    page.locator(".connection-status[data-state=connected]").wait_for()
    return context, page


def test_the_chat_page_has_no_serious_axe_violations_on_desktop_and_phone(chromium, app):
    closed_now = (timezone.localtime() + timedelta(days=2)).weekday()
    BusinessHours.objects.create(weekday=closed_now, opens=time(9), closes=time(17))
    waiting = customer_with("pending")
    resolved = customer_with("resolved", name="Rhea")
    found: dict[str, list[dict[str, Any]]] = {}
    for device, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context, page = customer_page(chromium, app, viewport, None)
        try:
            found[f"{device} fresh"] = axe_violations(page)
            page.get_by_role("textbox", name="Message").fill("How do I return an item?")
            page.get_by_role("button", name="Send").click()
            page.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()
            found[f"{device} with replies"] = axe_violations(page)
            shot(page, f"chat-{device}")
            page.get_by_role("button", name="Your conversations").click()
            page.locator(".history__link").first.wait_for()
            found[f"{device} history open"] = axe_violations(page)
        finally:
            context.close()

        context, page = customer_page(chromium, app, viewport, waiting)
        try:
            page.get_by_role("textbox", name="Your email address").wait_for()
            found[f"{device} email form"] = axe_violations(page)
        finally:
            context.close()

        context, page = customer_page(chromium, app, viewport, resolved)
        try:
            page.get_by_role("radiogroup").wait_for()
            found[f"{device} rating form"] = axe_violations(page)
            shot(page, f"chat-{device}-rating")
        finally:
            context.close()

    serious = {where: blocking(violations) for where, violations in found.items()}
    report = "\n".join(f"{where}: {describe(v)}" for where, v in serious.items() if v)
    assert not report, report


def test_the_focus_ring_has_at_least_3_to_1_contrast(chromium, app):
    context, page = customer_page(chromium, app, DESKTOP, customer_with("resolved"))
    try:
        page.keyboard.press("Tab")  # keyboard modality: :focus-visible applies
        for control in (
            page.get_by_role("button", name="Your conversations"),
            page.get_by_role("textbox", name="Message"),
            page.get_by_role("radio", name="4 stars — Good"),
            page.get_by_role("button", name="Send"),
            page.get_by_role("log"),
        ):
            assert focus_ring_contrast(control) >= 3, control
    finally:
        context.close()


def test_the_rating_is_five_labelled_stars_a_keyboard_can_choose(chromium, app):
    customer = customer_with("resolved")
    context, page = customer_page(chromium, app, PHONE, customer)
    try:
        stars = page.get_by_role("radiogroup", name="How did we do? Please rate this conversation.")
        labels = [
            "1 star — Very poor",
            "2 stars — Poor",
            "3 stars — OK",
            "4 stars — Good",
            "5 stars — Excellent",
        ]
        for label in labels:
            assert stars.get_by_role("radio", name=label).is_visible()
        assert page.get_by_text("Excellent", exact=True).is_visible()  # words, not bare numbers
        assert stars.get_by_role("radio").nth(0).is_checked() is False

        stars.get_by_role("radio", name=labels[0]).focus()
        page.keyboard.press("Space")
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        assert stars.get_by_role("radio", name=labels[3]).is_checked()
        page.get_by_role("textbox", name="Comment (optional)").fill("Quick and kind.")
        page.get_by_role("button", name="Submit rating").focus()
        page.keyboard.press("Enter")
        page.get_by_text("Thank you for your feedback!").wait_for()
        conversation = Conversation.objects.get(customer=customer)
        assert (conversation.rating, conversation.rating_comment) == (4, "Quick and kind.")
    finally:
        context.close()


def test_on_a_phone_the_chrome_is_compact_and_the_history_stays_usable(chromium, app):
    customer = customer_with("open", turns=80)
    for n in range(5):  # earlier conversations to list
        earlier = Conversation.objects.create(customer=customer, status="resolved")
        Turn.objects.create(conversation=earlier, author="customer", text=f"Order {n}?")
        when = timezone.now() - timedelta(days=n + 1)
        Conversation.objects.filter(pk=earlier.pk).update(created_at=when, updated_at=when)
    context, page = customer_page(chromium, app, PHONE, customer)
    try:
        page.locator("[role=log] [data-author=bot]").nth(39).wait_for()
        header = page.locator(".chat-header").bounding_box()
        bar = page.locator(".handoff-bar").bounding_box()
        assert header and bar
        assert header["height"] + bar["height"] <= 100, (header, bar)
        overflow = "document.scrollingElement.scrollWidth - window.innerWidth"
        assert page.evaluate(overflow) <= 0

        page.get_by_role("button", name="Your conversations").click()
        page.locator(".history__link").nth(5).wait_for()
        history = page.get_by_role("region", name="Your conversations").bounding_box()
        assert history and history["height"] >= 200, history
        log = page.get_by_role("log").bounding_box()
        assert log and log["height"] >= 120, log  # the transcript is still there below it
        assert page.evaluate(overflow) <= 0
        shot(page, "chat-phone-history")
    finally:
        context.close()


def test_the_widget_on_another_site_is_accessible_and_full_screen_on_a_phone(
    chromium,
    two_sites,  # noqa: F811 - the fixture
):
    _, shop, _ = two_sites
    found: dict[str, list[dict[str, Any]]] = {}
    for device, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = chromium.new_context(viewport=viewport)
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            frame_locator = open_widget(page, shop)
            frame_locator.locator(".connection-status[data-state=connected]").wait_for()
            chat = next(f for f in page.frames if "/chat/" in f.url)
            # On the host page only the widget's own button is ours to check.
            found[f"{device} launcher"] = axe_violations(page, include="[data-support-bot-widget]")
            found[f"{device} widget fresh"] = axe_violations(chat)
            frame_locator.get_by_role("textbox", name="Message").fill("How do I return an item?")
            frame_locator.get_by_role("button", name="Send").click()
            frame_locator.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()
            found[f"{device} widget with replies"] = axe_violations(chat)

            box = page.locator("#support-bot-frame").bounding_box()
            close = page.get_by_role("button", name="Close chat")
            assert close.is_visible()
            if device == "phone":
                # Full screen: the frame covers the viewport, the close button stays on top.
                assert box and (box["x"], box["y"]) == (0, 0), box
                assert (box["width"], box["height"]) == (390, 844), box
                shown = close.bounding_box()
                assert shown and shown["y"] >= 0 and shown["y"] + shown["height"] <= 844
                on_top = page.evaluate(
                    """([x, y]) => {
                         const host = document.querySelector('[data-support-bot-widget]');
                         const hit = host.shadowRoot.elementFromPoint(x, y);
                         return hit && hit.closest('button') !== null; }""",
                    [shown["x"] + shown["width"] / 2, shown["y"] + shown["height"] / 2],
                )
                assert on_top
                assert chat.evaluate("document.scrollingElement.scrollWidth - innerWidth") <= 0
                shot(page, "widget-phone")
                close.click()
                assert page.locator("#support-bot-frame").is_hidden()
                assert page.get_by_role("button", name="Open chat").is_visible()
            else:
                assert box and box["width"] < 500, box
                shot(page, "widget-desktop")
        finally:
            context.close()

    serious = {where: blocking(violations) for where, violations in found.items()}
    report = "\n".join(f"{where}: {describe(v)}" for where, v in serious.items() if v)
    assert not report, report
