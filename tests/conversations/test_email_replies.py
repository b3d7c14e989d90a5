"""Agents' replies by email to customers who are away (conversations/email_replies.py), sent
to a real SMTP server on loopback (tests/smtp.py), and the link in the email that continues
the conversation (conversations/links.py). Customers: alice and bob; agent: alice_agent."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.core import signing
from django.test import Client

from conversations import customer_presence, email_replies, links
from conversations.models import Conversation, Turn
from conversations.visitors import visitor_id_from_cookie
from inbox import services
from tests import personas, smtp
from tests.conftest import ORIGIN, ROOT, open_chat, receive_until

alice_agent = personas.alice_agent
pending = personas.pending
smtp_server = smtp.smtp_server
smtp_server_down = smtp.smtp_server_down

ADDRESS = "alice@example.com"


@pytest.fixture
def away(pending: Conversation) -> Conversation:
    """Alice's conversation, waiting for the team, with the address she left."""
    Conversation.objects.filter(pk=pending.pk).update(contact_email=ADDRESS)
    pending.contact_email = ADDRESS
    return pending


@pytest.fixture
def mailbox(smtp_server: smtp.Mailbox, settings) -> smtp.Mailbox:
    """This process sends its email to the loopback SMTP server."""
    smtp.use_smtp(settings, smtp_server)
    return smtp_server


def emailed(conversation: Conversation) -> list[str]:
    return list(
        Turn.objects.filter(conversation=conversation, emailed_at__isnull=False)
        .order_by("id")
        .values_list("text", flat=True)
    )


# --- End to end: the agent replies, a real worker emails it after the delay ------------------


@pytest.mark.worker
def test_it_emails_an_agent_reply_to_a_customer_who_is_away_after_the_delay(
    away, alice_agent, celery_worker, smtp_server, settings
):
    settings.EMAIL_REPLY_DELAY_S = 2
    celery_worker(**smtp_server.app_settings(), PUBLIC_BASE_URL="http://testserver")
    replied = time.monotonic()
    services.agent_reply(away.pk, alice_agent, "Your parcel left <today> & arrives Friday.")

    [message] = smtp_server.wait_for(1)
    assert time.monotonic() - replied >= 1.9  # not before the customer had time to see it
    assert message["To"] == ADDRESS
    assert message["Subject"] == "New reply from Anna at Brightwave"
    assert "Anna wrote:\nYour parcel left <today> & arrives Friday." in smtp.text_of(message)
    html = smtp.html_of(message)
    assert "Your parcel left &lt;today&gt; &amp; arrives Friday." in html
    assert "<today>" not in html
    assert emailed(away) == ["Your parcel left <today> & arrives Friday."]

    link = smtp.link_in(message)
    assert link.startswith("http://testserver/chat/continue/")
    opened = Client().get(urlsplit(link).path, follow=True)
    assert opened.status_code == 200
    assert str(away.pk) in opened.content.decode()

    time.sleep(1.5)  # nothing more comes: the reply was emailed once
    assert len(smtp_server.messages) == 1


@pytest.mark.worker
def test_it_retries_while_the_smtp_server_is_down_and_sends_once_it_is_back(
    away, alice_agent, celery_worker, smtp_server_down, settings
):
    settings.EMAIL_REPLY_DELAY_S = 0.5
    worker = celery_worker(
        **smtp_server_down.app_settings(), EMAIL_RETRY_S="1", PUBLIC_BASE_URL="http://testserver"
    )
    services.agent_reply(away.pk, alice_agent, "We found your order.")
    worker.wait_for_output("not sent")
    assert emailed(away) == []  # nothing marked sent, so nothing is lost

    smtp_server_down.start()
    [message] = smtp_server_down.wait_for(1, timeout=20)
    assert "We found your order." in smtp.text_of(message)
    assert emailed(away) == ["We found your order."]
    time.sleep(2.5)  # later retries, had any been queued, find nothing left to send
    assert len(smtp_server_down.messages) == 1


# --- Who gets what (the task's service, called as the task does after the delay) -------------


@pytest.mark.django_db(transaction=True)
async def test_it_does_not_email_a_reply_the_customer_saw_live(away, alice_agent, mailbox):
    chat = await open_chat(away.pk, away.customer)
    await database_sync_to_async(services.agent_reply)(away.pk, alice_agent, "Hi, Anna here")
    await receive_until(chat, lambda f: f["type"] == "turn" and f["turn"]["author"] == "agent")
    send = database_sync_to_async(email_replies.email_unseen_replies)
    assert await send(away.pk) == 0
    await chat.disconnect()  # seen, then gone before the delay ended: still seen
    assert await send(away.pk) == 0
    assert mailbox.messages == []


@pytest.mark.django_db(transaction=True)
async def test_an_open_page_stays_present_through_its_pings(
    away, alice_agent, mailbox, monkeypatch
):
    monkeypatch.setattr(customer_presence, "LAPSE_S", 0.3)
    chat = await open_chat(away.pk, away.customer)
    await asyncio.sleep(0.5)  # lapsed, as a page without pings would
    await chat.send_json_to({"type": "ping"})
    assert (await chat.receive_json_from(timeout=5))["type"] == "pong"
    await database_sync_to_async(services.agent_reply)(away.pk, alice_agent, "Still there?")
    assert await database_sync_to_async(email_replies.email_unseen_replies)(away.pk) == 0
    await chat.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_it_emails_a_reply_sent_after_the_customer_left(away, alice_agent, mailbox):
    chat = await open_chat(away.pk, away.customer)
    await chat.disconnect()
    await database_sync_to_async(services.agent_reply)(away.pk, alice_agent, "Back to you now")
    assert await database_sync_to_async(email_replies.email_unseen_replies)(away.pk) == 1
    assert "Back to you now" in smtp.text_of(mailbox.wait_for(1)[0])


@pytest.mark.django_db
def test_it_sends_two_replies_in_one_email_and_never_again(away, alice_agent, mailbox):
    services.agent_reply(away.pk, alice_agent, "First: I checked your order.")
    services.agent_reply(away.pk, alice_agent, "Second: it ships tomorrow.")
    assert email_replies.email_unseen_replies(away.pk) == 2
    assert email_replies.email_unseen_replies(away.pk) == 0  # the second task finds them sent
    [message] = mailbox.messages
    text = smtp.text_of(message)
    assert text.index("First: I checked") < text.index("Second: it ships")
    assert message["Subject"] == "New replies from Anna at Brightwave"


@pytest.mark.django_db
def test_it_never_emails_notes_or_bot_replies(away, alice_agent, mailbox):
    services.add_note(away.pk, alice_agent, "VIP customer, internal only")
    Turn.objects.create(
        conversation=away, author=Turn.Author.BOT, status=Turn.Status.DONE, text="Bot answer"
    )
    assert email_replies.email_unseen_replies(away.pk) == 0
    assert mailbox.messages == []
    services.agent_reply(away.pk, alice_agent, "A person's answer")
    assert email_replies.email_unseen_replies(away.pk) == 1
    text = smtp.text_of(mailbox.messages[0])
    assert "A person's answer" in text
    assert "VIP" not in text and "Bot answer" not in text


@pytest.mark.django_db
def test_it_sends_nothing_without_an_address_and_else_uses_the_customers(
    pending, alice_agent, mailbox
):
    services.agent_reply(pending.pk, alice_agent, "Are you there?")
    assert email_replies.email_unseen_replies(pending.pk) == 0
    assert mailbox.messages == [] and emailed(pending) == []

    pending.customer.email = "alice.account@example.com"
    pending.customer.save()
    assert email_replies.email_unseen_replies(pending.pk) == 1
    assert mailbox.messages[0]["To"] == "alice.account@example.com"


@pytest.mark.django_db
def test_it_keeps_the_replies_unsent_when_the_smtp_server_is_down(
    away, alice_agent, smtp_server_down, settings
):
    smtp.use_smtp(settings, smtp_server_down)
    services.agent_reply(away.pk, alice_agent, "Your refund is on its way.")
    with pytest.raises(email_replies.EmailNotSent):
        email_replies.email_unseen_replies(away.pk)
    assert emailed(away) == []

    smtp_server_down.start()
    assert email_replies.email_unseen_replies(away.pk) == 1
    assert email_replies.email_unseen_replies(away.pk) == 0
    assert len(smtp_server_down.messages) == 1


# --- The link ----------------------------------------------------------------------------------


def link_path(conversation: Conversation) -> str:
    return urlsplit(links.continue_url(conversation.pk)).path


@pytest.mark.django_db(transaction=True)
async def test_the_link_gives_a_fresh_browser_the_customer_and_continues_the_same_conversation(
    away, async_client
):
    response = await async_client.get(link_path(away))
    assert response.status_code == 302
    assert response["Location"] == f"/chat/?conversation={away.pk}"
    assert response["Referrer-Policy"] == "no-referrer"
    cookie = response.cookies[django_settings.CHAT_VISITOR_COOKIE].value
    assert visitor_id_from_cookie(cookie) == away.customer_id

    from support_bot.asgi import application

    headers = [
        (b"origin", ORIGIN.encode()),
        (b"cookie", f"{django_settings.CHAT_VISITOR_COOKIE}={cookie}".encode()),
    ]
    chat = WebsocketCommunicator(application, f"/ws/chat/{away.pk}/", headers)
    assert (await chat.connect(timeout=5))[0]
    assert (await chat.receive_json_from(timeout=5))["type"] == "conversation"
    await chat.send_json_to({"type": "message", "client_id": "mail-1", "text": "Thanks!"})
    ack = (await receive_until(chat, lambda f: f["type"] == "ack"))[-1]
    turn = await database_sync_to_async(Turn.objects.get)(pk=ack["turn_id"])
    assert turn.conversation_id == away.pk and turn.author == "customer"
    await chat.disconnect()


@pytest.mark.django_db
def test_the_link_opens_only_its_customers_conversations(away, bob, client):
    bobs = Conversation.objects.create(customer=bob)
    assert client.get(link_path(away)).status_code == 302
    assert client.get(f"/chat/?conversation={away.pk}").status_code == 200
    assert client.get(f"/chat/?conversation={bobs.pk}").status_code == 404


@pytest.mark.django_db
def test_a_tampered_or_expired_link_is_refused_with_a_page_and_not_logged(
    away, client, monkeypatch, caplog
):
    path = link_path(away)
    token = path.split("/")[-2]
    tampered = path.replace(token, token[:-1] + ("A" if token[-1] != "A" else "B"))
    caplog.set_level(logging.DEBUG)
    for bad in (tampered, "/chat/continue/not-a-token/", f"/chat/continue/{away.pk}/"):
        response = client.get(bad)
        assert response.status_code == 400
        assert "This link is not valid" in response.content.decode()
        assert django_settings.CHAT_VISITOR_COOKIE not in response.cookies

    real_time = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() - 31 * 24 * 3600)
    old = link_path(away)
    monkeypatch.undo()
    response = client.get(old)
    assert response.status_code == 410
    assert "This link has expired" in response.content.decode()
    assert django_settings.CHAT_VISITOR_COOKIE not in response.cookies
    assert token not in caplog.text and old.split("/")[-2] not in caplog.text


@pytest.mark.django_db
def test_a_link_to_a_deleted_conversation_says_so(away, client):
    path = link_path(away)
    away.delete()
    response = client.get(path)
    assert response.status_code == 404
    assert "This conversation no longer exists" in response.content.decode()


# --- Planning the email, and where it goes ---------------------------------------------------


@pytest.fixture
def planned(monkeypatch) -> list[dict]:
    sent: list[dict] = []
    monkeypatch.setattr(
        email_replies.current_app, "send_task", lambda name, **kw: sent.append({"name": name, **kw})
    )
    return sent


@pytest.mark.django_db
def test_an_agent_reply_plans_one_email_task_after_the_delay_and_a_note_none(
    away, alice_agent, planned, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "smtp.example.com"
    with django_capture_on_commit_callbacks(execute=True):
        services.add_note(away.pk, alice_agent, "internal")
        services.agent_reply(away.pk, alice_agent, "Hello")
    assert planned == [{"name": email_replies.EMAIL_TASK, "args": [str(away.pk)], "countdown": 60}]


@pytest.mark.django_db
def test_no_email_is_planned_without_an_smtp_server_or_with_no_delay(
    away, alice_agent, planned, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = ""
    with django_capture_on_commit_callbacks(execute=True):
        services.agent_reply(away.pk, alice_agent, "Hello")
    settings.EMAIL_HOST = "smtp.example.com"
    settings.EMAIL_REPLY_DELAY_S = 0
    with django_capture_on_commit_callbacks(execute=True):
        services.agent_reply(away.pk, alice_agent, "Hello again")
    assert planned == []


@pytest.mark.django_db
def test_make_run_prints_the_email_on_the_console(away, alice_agent, settings, capsys):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    services.agent_reply(away.pk, alice_agent, "Printed, not sent")
    assert email_replies.email_unseen_replies(away.pk) == 1
    printed = capsys.readouterr().out
    assert "Subject: New reply from Anna at Brightwave" in printed
    assert "Printed, not sent" in printed


def settings_printed(tmp_path, **env: str) -> list[str]:
    from tests.support_bot.test_settings import plain_env

    names = ("EMAIL_BACKEND", "PUBLIC_BASE_URL")
    code = f"from support_bot import settings as s; print(*[getattr(s, n) for n in {names}])"
    environment = {**plain_env(tmp_path / "var"), **env}
    for name in {"EMAIL_HOST", "EMAIL_BACKEND", "PUBLIC_BASE_URL", "PORT"} - env.keys():
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


@pytest.mark.default_pass_only(reason="reads the settings alone, in a child process")
def test_the_settings_print_emails_in_development_and_send_them_in_production(tmp_path):
    assert settings_printed(tmp_path) == [
        "django.core.mail.backends.console.EmailBackend",
        "http://127.0.0.1:8000",
    ]
    assert settings_printed(tmp_path, EMAIL_HOST="smtp.example.com")[0] == (
        "django.core.mail.backends.smtp.EmailBackend"
    )
    production = {"DEBUG": "0", "ALLOWED_HOSTS": "support.example.com", "SECRET_KEY": "x" * 50}
    assert settings_printed(tmp_path, **production) == [
        "django.core.mail.backends.smtp.EmailBackend",
        "https://support.example.com",
    ]
