"""The link in an agent's email, in Chromium against the real stack (uvicorn, a Celery worker,
Redis, the database, a real SMTP server on loopback): alice chats, leaves, an agent answers,
the email comes, and the link opened in a fresh browser continues that same conversation.

Personas: alice is the customer (her browser is the page's), alice_agent the agent."""

from __future__ import annotations

import time

import pytest

from conversations import customer_presence
from conversations.contact import save_contact_email
from conversations.models import Conversation, Turn
from inbox import services
from tests import personas, smtp
from tests.conftest import free_port
from tests.conversations.test_handoff import on_the_server

alice_agent = personas.alice_agent
smtp_server = smtp.smtp_server


@pytest.fixture
def stack(asgi_server, celery_worker, smtp_server):
    """The app on a port known in advance: the worker writes links to it."""
    port = free_port()
    env = {
        "LLM_PROVIDER": "offline",
        "OFFLINE_WORD_DELAY_MS": "0",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        **smtp_server.app_settings(),
    }
    celery_worker(**env)
    return asgi_server(port=port, **env)


def send(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


@pytest.mark.browser
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_emailed_link_opens_the_conversation_in_a_fresh_browser_and_continues_it(
    chromium, stack, smtp_server, alice_agent, settings
):
    settings.EMAIL_REPLY_DELAY_S = 1
    first = chromium.new_context()
    page = first.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{stack}/chat/")
    page.wait_for_selector(".connection-status[data-state=connected]")
    send(page, "My thermostat shows error E42.")
    page.locator('[role=log] [data-author=bot][data-status="done"]').last.wait_for()
    conversation = Conversation.objects.get()
    on_the_server(lambda: save_contact_email(conversation, "alice@example.com"))
    first.close()  # alice leaves
    deadline = time.monotonic() + 10
    while customer_presence.seen_until(conversation.pk) > time.time():  # her socket's close arrived
        assert time.monotonic() < deadline, "the closed page still counts as present"
        time.sleep(0.05)

    answer = "E42 means the sensor is loose: reseat it."
    on_the_server(lambda: services.agent_reply(conversation.pk, alice_agent, answer))
    [message] = smtp_server.wait_for(1, timeout=20)
    link = smtp.link_in(message)
    assert link.startswith(f"{stack}/chat/continue/")

    fresh = chromium.new_context()  # another device: no cookie, nothing stored
    page = fresh.new_page()
    page.set_default_timeout(20_000)
    page.goto(link)
    page.wait_for_selector(".connection-status[data-state=connected]")
    assert "/chat/continue/" not in page.url  # the token leaves the address bar
    reply = page.locator("[role=log] [data-author=agent]").last
    reply.wait_for()
    assert "E42 means the sensor is loose" in reply.inner_text()
    send(page, "Reseated it, works now. Thanks!")
    deadline = time.monotonic() + 10
    while not (turns := Turn.objects.filter(text="Reseated it, works now. Thanks!")):
        assert time.monotonic() < deadline, "the customer's answer was not stored"
        time.sleep(0.05)
    fresh.close()

    [turn] = turns
    assert turn.conversation_id == conversation.pk
    assert Conversation.objects.count() == 1
