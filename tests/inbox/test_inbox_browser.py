"""Two Chromium contexts against the real stack (uvicorn, a Celery worker, Redis, the
database, the offline answerer): a customer asks for a person, the conversation appears live
in the agent's inbox, the agent takes it and replies, the customer sees the reply live, the
agent resolves, the customer rates."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client

from conversations.models import Conversation, EscalationRule
from tests import personas

alice_agent = personas.alice_agent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]


@pytest.fixture
def stack(offline_app):
    # Transactional tests empty the tables, the default rules' data migration included.
    EscalationRule.objects.get_or_create(kind="handoff_phrase", pattern="talk to a person")
    return offline_app


OFFLINE_APP = {"word_delay_ms": 20}


def agent_context(chromium, base: str, user, **options):
    """A browser context (new_context's `options`) logged in as this staff user (the session
    cookie of force_login)."""
    client = Client()
    client.force_login(user)
    context = chromium.new_context(**options)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": base,
            }
        ]
    )
    return context


def test_it_hands_a_customer_to_an_agent_and_back_to_a_rating(chromium, stack, alice_agent):
    customer_context = chromium.new_context()
    staff_context = agent_context(chromium, stack, alice_agent)
    try:
        customer = customer_context.new_page()
        agent = staff_context.new_page()
        for page in (customer, agent):
            page.set_default_timeout(20_000)

        agent.goto(f"{stack}/agent/")
        agent.wait_for_selector(".connection-status[data-state=connected]")
        pending_rows = agent.locator('.inbox-row[data-status="pending"]')
        assert pending_rows.count() == 0

        # The customer asks the bot, then for a person.
        customer.goto(f"{stack}/chat/")
        customer.get_by_role("textbox", name="Message").fill("How do I return an item?")
        customer.get_by_role("button", name="Send").click()
        customer.wait_for_selector('[role=log] [data-author=bot][data-status="done"]')
        customer.get_by_role("textbox", name="Message").fill("Can I talk to a person please?")
        customer.get_by_role("button", name="Send").click()

        # It appears in the agent's inbox live, no reload.
        pending_rows.first.wait_for()
        assert "talk to a person" in pending_rows.first.inner_text()
        conversation = Conversation.objects.get()
        assert conversation.status == "pending"

        pending_rows.first.get_by_role("link").click()
        agent.wait_for_url(re.compile(rf"/agent/conversations/{conversation.pk}/$"))
        transcript = agent.get_by_role("log", name="Transcript")
        transcript.locator('[data-author="customer"]').nth(1).wait_for()
        assert transcript.locator('[data-author="bot"]').count() == 1

        agent.get_by_role("button", name="Take over").click()
        agent.wait_for_function(
            "() => document.querySelector('.conversation-state').textContent"
            ".includes('You have this conversation')"
        )
        reply = agent.get_by_role("textbox", name="Reply")
        reply.fill("Hi, I'm Anna. I'll sort out your return. <b>promise</b>")
        agent.get_by_role("button", name="Send").click()

        # The customer sees the agent's reply live, by name, as text.
        from_agent = customer.get_by_role("log").locator('[data-author="agent"]').last
        from_agent.wait_for()
        assert "I'll sort out your return. <b>promise</b>" in from_agent.inner_text()
        assert "Anna" in from_agent.inner_text()
        assert customer.get_by_role("log").locator("b").count() == 0

        agent.get_by_role("button", name="Resolve").click()
        agent.wait_for_function(
            "() => document.querySelector('#agent-conversation').dataset.status === 'resolved'"
        )
        conversation.refresh_from_db()
        assert conversation.status == "resolved" and conversation.assignee == alice_agent

        # The customer rates (the customer side's rating form: five stars, then submit).
        rating = customer.get_by_role("radiogroup", name=re.compile("rate", re.IGNORECASE))
        rating.get_by_role("radio", name="5 stars — Excellent").check()
        customer.get_by_role("button", name=re.compile("send rating|submit", re.I)).click()
        agent.wait_for_function(
            "() => document.querySelector('.conversation-state').textContent.includes('5/5')"
        )
        conversation.refresh_from_db()
        assert conversation.rating == 5
    finally:
        customer_context.close()
        staff_context.close()


def test_the_inbox_renders_replies_and_notes_as_markdown_and_never_runs_their_html(
    chromium, stack, alice_agent
):
    """Bot and agent replies and notes are Markdown, rendered safely; the customer's words are
    plain text. An agent's Markdown reply reaches the customer rendered the same way."""
    from conversations.models import Customer, Turn
    from conversations.visitors import signed_visitor_cookie
    from inbox.models import Note
    from tests.markdown_replies import (
        MARKDOWN_REPLY,
        RUNNABLE,
        XSS_REPLY,
        XSS_REPLY_SHOWN,
        assert_rendered_as_markdown,
    )

    customer_words = '<img src=x onerror="window.__pwned=1"> **my order**'
    customer = Customer.objects.create(display_name="Cleo")
    conversation = Conversation.objects.create(customer=customer, status="pending")
    for author, text in [("customer", customer_words), ("bot", MARKDOWN_REPLY), ("bot", XSS_REPLY)]:
        Turn.objects.create(conversation=conversation, author=author, status="done", text=text)
    Turn.objects.create(
        conversation=conversation, author="agent", agent=alice_agent, text=XSS_REPLY
    )
    Note.objects.create(
        conversation=conversation, author=alice_agent, text="**Call** back\n\n" + XSS_REPLY
    )

    staff_context = agent_context(chromium, stack, alice_agent)
    customer_context = chromium.new_context()
    dialogs: list[str] = []
    try:
        agent = staff_context.new_page()
        agent.set_default_timeout(20_000)
        agent.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        agent.goto(f"{stack}/agent/conversations/{conversation.pk}/")
        transcript = agent.get_by_role("log", name="Transcript")
        transcript.locator('[data-author="note"]').wait_for()

        assert transcript.locator('[data-author="customer"] .text').inner_text() == customer_words
        bots = transcript.locator('[data-author="bot"] .text')
        assert_rendered_as_markdown(bots.nth(0))
        assert bots.nth(1).inner_text() == XSS_REPLY_SHOWN
        assert transcript.locator('[data-author="agent"] .text').inner_text() == XSS_REPLY_SHOWN
        note = transcript.locator('[data-author="note"] .text')
        assert note.locator("strong").inner_text() == "Call"
        assert XSS_REPLY_SHOWN in note.inner_text()
        for label in ("this link", "that link"):
            transcript.get_by_text(label).first.click()

        # The agent answers in Markdown; the agent and the customer both see it rendered.
        agent.get_by_role("button", name="Take over").click()
        agent.get_by_role("textbox", name="Reply").fill(MARKDOWN_REPLY)
        agent.get_by_role("button", name="Send").click()
        transcript.locator('[data-author="agent"]').nth(1).wait_for()
        assert_rendered_as_markdown(transcript.locator('[data-author="agent"] .text').nth(1))

        customer_context.add_cookies(
            [
                {
                    "name": settings.CHAT_VISITOR_COOKIE,
                    "value": signed_visitor_cookie(customer.pk),
                    "url": stack,
                }
            ]
        )
        chat = customer_context.new_page()
        chat.set_default_timeout(20_000)
        chat.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        chat.goto(f"{stack}/chat/")
        log = chat.get_by_role("log")
        log.locator('[data-author="agent"]').nth(1).wait_for()
        assert log.locator('[data-author="customer"] .text').inner_text() == customer_words
        assert_rendered_as_markdown(log.locator('[data-author="agent"] .text').nth(1))
        assert log.locator('[data-author="agent"] .text').nth(0).inner_text() == XSS_REPLY_SHOWN
        assert "Call" not in log.inner_text()  # notes never reach the customer

        agent.wait_for_timeout(300)
        for page, messages in ((agent, transcript), (chat, log)):
            assert messages.locator(RUNNABLE).count() == 0
            assert page.evaluate("window.__pwned") is None
        assert dialogs == []
    finally:
        staff_context.close()
        customer_context.close()
