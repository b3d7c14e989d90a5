"""The chat's first screen in a real Chromium against the real stack (uvicorn, a Celery worker,
Redis, the database, the offline answerer): a fresh page greets and suggests questions, a
suggestion is sent and answered like a typed message, and the team's availability follows a
real agent opening the inbox in another browser, without a reload."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from bot.wording import ENGLISH, GERMAN
from conversations.business_hours import support_zone
from conversations.models import BusinessHours, Conversation, Customer, SuggestedQuestion, Turn
from tests import personas
from tests.conversations.test_widget_browser import host_pages, open_widget, two_sites
from tests.inbox.test_inbox_browser import agent_context

alice_agent = personas.alice_agent
# The widget on another site (test_widget_browser.py).
host_pages = host_pages
two_sites = two_sites

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.default_pass_only(
        reason=(
            "what the first screen draws and sends; its data rules run on both paths "
            "(test_first_screen.py)"
        )
    ),
]

SUGGESTIONS = (
    "Where is my order?",
    "How do I return an item?",
    "My thermostat won't connect to Wi-Fi",
    "How do I reset my password?",
)


OFFLINE_APP = {"word_delay_ms": 40}


@pytest.fixture
def stack(offline_app):
    for position, text in enumerate(SUGGESTIONS):
        SuggestedQuestion.objects.create(text=text, position=position)
    return offline_app


def new_page(context):
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


def first_screen(page):
    return page.locator(".first-screen")


def test_a_fresh_page_greets_and_a_suggestion_is_sent_and_answered(chromium, stack):
    context = chromium.new_context()
    try:
        page = new_page(context)
        page.goto(f"{stack}/chat/")
        first_screen(page).wait_for(state="visible")

        greeting = ENGLISH.greeting.format(company=settings.COMPANY_NAME)
        assert page.locator(".first-screen__greeting").inner_text() == greeting
        suggestions = page.get_by_role("list", name="Suggested questions").get_by_role("button")
        assert suggestions.all_inner_texts() == list(SUGGESTIONS)
        assert not Customer.objects.exists()  # viewing stores nothing

        page.get_by_role("button", name="How do I return an item?").click()

        customer = page.get_by_role("log").locator('[data-author="customer"]')
        customer.last.wait_for()
        assert customer.last.locator(".text").inner_text() == "How do I return an item?"
        assert first_screen(page).is_hidden()
        page.wait_for_function(
            """() => { const m = document.querySelector('[role=log] [data-author=bot]');
                       return m && m.dataset.status === 'streaming'
                              && m.querySelector('.text').textContent.trim().length > 0; }"""
        )
        page.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
        sent = Turn.objects.get(author=Turn.Author.CUSTOMER)
        assert sent.text == "How do I return an item?" and sent.client_message_id
        assert Turn.objects.get(author=Turn.Author.BOT).sources  # answered from the articles

        # The conversation has messages now: no first screen on a reload.
        page.reload()
        page.get_by_role("log").locator('[data-author="bot"]').first.wait_for()
        page.wait_for_selector(".connection-status[data-state=connected]")
        assert first_screen(page).is_hidden()
        assert Conversation.objects.count() == 1
    finally:
        context.close()


def test_the_page_says_the_team_is_online_once_an_agent_opens_the_inbox(
    chromium, stack, alice_agent
):
    # Closed until the day after tomorrow, 09:00.
    day = (timezone.now().astimezone(support_zone()) + timedelta(days=2)).weekday()
    BusinessHours.objects.create(weekday=day, opens=time(9), closes=time(17))
    customer_context = chromium.new_context()
    staff_context = agent_context(chromium, stack, alice_agent)
    try:
        customer = new_page(customer_context)
        customer.goto(f"{stack}/chat/")
        # The header says it on a wide page; the first screen, in the widget and on phones.
        line = customer.locator("[data-team-availability]:visible")
        line.wait_for()
        assert line.inner_text() == (
            f"Our team is away · back on {ENGLISH.weekdays[day]} at 09:00 "
            f"({settings.SUPPORT_TIME_ZONE} time)"
        )
        assert line.get_attribute("data-away") == "true"

        agent = new_page(staff_context)
        agent.goto(f"{stack}/agent/")
        agent.wait_for_selector(".connection-status[data-state=connected]")

        # No reload: the page asks again every 20 s.
        customer.wait_for_function(
            """() => [...document.querySelectorAll('[data-team-availability]')]
                       .every((line) => line.textContent.startsWith('Our team is online'))""",
            timeout=30_000,
        )
        assert line.inner_text() == "Our team is online · typically replies in 5 minutes"
        assert line.get_attribute("data-online") == "true"

        # A fresh page says so at once.
        fresh = new_page(customer_context)
        fresh.goto(f"{stack}/chat/")
        fresh_line = fresh.locator("[data-team-availability]:visible")
        assert fresh_line.inner_text().startswith("Our team is online")

        # Asking for a person now gets no "away" notice and no email form.
        customer.get_by_role("button", name="Talk to a person").click()
        notice = customer.get_by_role("log").locator('[data-author="system"]').first
        notice.wait_for()
        assert notice.inner_text() == ENGLISH.person_will_join
        assert customer.locator(".handoff-status").inner_text() == "Waiting for a person…"
        assert customer.locator(".contact-form").is_hidden()
    finally:
        customer_context.close()
        staff_context.close()


def test_the_first_screen_fits_a_phone(chromium, stack):
    SuggestedQuestion.objects.create(
        text="My Brightwave thermostat keeps disconnecting from the 5 GHz Wi-Fi network "
        "overnight, what can I do?",
        position=99,
        language="en",
    )
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = new_page(context)
        page.goto(f"{stack}/chat/")
        first_screen(page).wait_for(state="visible")

        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        for box in [
            page.locator(selector).bounding_box()
            for selector in (
                ".first-screen__greeting",
                ".first-screen__availability",
                ".first-screen__suggestion",
                ".composer__send",
            )
        ]:
            assert box is not None
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390
            assert box["y"] + box["height"] <= 844  # all on the first screen, composer too
        assert page.locator(".first-screen__availability").is_visible()
    finally:
        context.close()


def test_the_widget_opens_on_the_first_screen_and_a_suggestion_starts_the_conversation(
    chromium, two_sites
):
    _, shop, _ = two_sites
    for position, text in enumerate(SUGGESTIONS):
        SuggestedQuestion.objects.create(text=text, position=position)
    context = chromium.new_context(locale="de-DE")
    try:
        page = new_page(context)
        frame = open_widget(page, shop)
        frame.locator(".first-screen").wait_for(state="visible")
        # A German browser: the bot's German greeting; these suggestions are for any language.
        greeting = frame.locator(".first-screen__greeting").inner_text()
        assert greeting == GERMAN.greeting.format(company=settings.COMPANY_NAME)
        assert frame.locator(".first-screen__availability").inner_text() == (
            "Unser Team antwortet meist in 5 Minuten"  # no business hours: always open
        )
        assert Customer.objects.count() == 0 and Conversation.objects.count() == 0

        frame.get_by_role("button", name="Where is my order?").click()
        frame.locator('[role=log] [data-author=bot][data-status="done"]').wait_for()
        assert frame.locator(".first-screen").is_hidden()
        assert Customer.objects.count() == 1
        assert Turn.objects.get(author=Turn.Author.CUSTOMER).text == "Where is my order?"
    finally:
        context.close()
