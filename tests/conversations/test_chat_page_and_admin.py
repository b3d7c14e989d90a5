"""The chat page's visitor identity, the admin transcripts, and production settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from conversations import services
from conversations.models import Conversation, Customer, Turn
from conversations.services import pending_conversation_id
from conversations.visitors import signed_visitor_cookie, visitor_id_from_cookie
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


def test_it_gives_a_new_visitor_a_signed_cookie_and_a_conversation_id_storing_nothing(client):
    response = client.get("/chat/")
    assert response.status_code == 200
    cookie = response.cookies[settings.CHAT_VISITOR_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    visitor = visitor_id_from_cookie(cookie.value)
    expected = str(pending_conversation_id(visitor, 0))
    assert response.context["conversation_id"] == expected
    assert response.context["ws_path"] == f"/ws/chat/{expected}/"
    # A crawler or a script that opens the page leaves no rows behind (stored when they write).
    assert not Customer.objects.exists() and not Conversation.objects.exists()


def test_it_brings_a_returning_visitor_back_to_the_same_conversation(client):
    first = client.get("/chat/").context["conversation_id"]
    again = client.get("/chat/")
    assert again.context["conversation_id"] == first
    assert settings.CHAT_VISITOR_COOKIE not in again.cookies  # no new identity


def test_it_opens_a_visitors_stored_conversation_when_they_come_back(client, alice):
    conversation = Conversation.objects.create(customer=alice)
    client.cookies[settings.CHAT_VISITOR_COOKIE] = signed_visitor_cookie(alice.pk)
    assert client.get("/chat/").context["conversation_id"] == str(conversation.pk)


def test_a_second_browser_is_a_different_customer(client):
    mine = client.get("/chat/").context["conversation_id"]
    theirs = Client().get("/chat/").context["conversation_id"]
    assert mine != theirs


def test_it_ignores_a_tampered_visitor_cookie(client, alice):
    alice_conversation = Conversation.objects.create(customer=alice)
    client.cookies[settings.CHAT_VISITOR_COOKIE] = f"{alice.pk}:tampered"
    response = client.get("/chat/")
    assert response.context["conversation_id"] != str(alice_conversation.pk)


def test_it_can_be_framed_only_as_the_embedded_widget(client):
    assert client.get("/chat/")["X-Frame-Options"] == "DENY"
    assert "X-Frame-Options" not in client.get("/chat/?embed=1")


def test_it_reports_health(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.fixture
def staff_client(client):
    staff = User.objects.create_user(
        "agent", password="pw-agent-123", is_staff=True, is_superuser=True
    )
    client.force_login(staff)
    return client


@pytest.fixture
def transcripts(alice, bob):
    alices = Conversation.objects.create(customer=alice)
    services.post_customer_message(alices, "a1", "My kettle <script>alert('x')</script> broke")
    bobs = Conversation.objects.create(customer=bob, status="resolved")
    services.post_customer_message(bobs, "b1", "Thanks, all sorted")
    Conversation.objects.filter(pk=bobs.pk).update(status="resolved")
    return alices, bobs


def test_staff_read_every_transcript_newest_first(staff_client, transcripts):
    alices, bobs = transcripts
    page = staff_client.get("/admin/conversations/conversation/")
    assert page.status_code == 200
    listed = [c.pk for c in page.context["cl"].result_list]
    assert listed == [bobs.pk, alices.pk]


def test_staff_filter_transcripts_by_status(staff_client, transcripts):
    _, bobs = transcripts
    page = staff_client.get("/admin/conversations/conversation/?status__exact=resolved")
    assert [c.pk for c in page.context["cl"].result_list] == [bobs.pk]


@pytest.mark.parametrize("term", ["kettle", "ALICE"])
def test_staff_search_transcripts_by_text_and_customer(staff_client, transcripts, term):
    alices, _ = transcripts
    page = staff_client.get("/admin/conversations/conversation/", {"q": term})
    assert [c.pk for c in page.context["cl"].result_list] == [alices.pk]


def test_staff_find_a_visitor_by_the_start_of_their_id(staff_client, transcripts):
    alices, _ = transcripts
    page = staff_client.get(
        "/admin/conversations/conversation/", {"q": str(alices.customer_id)[:8]}
    )
    assert [c.pk for c in page.context["cl"].result_list] == [alices.pk]


def test_the_transcript_shows_turns_read_only_with_markup_inert(staff_client, transcripts):
    alices, _ = transcripts
    page = staff_client.get(f"/admin/conversations/conversation/{alices.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<script>alert('x')</script>" not in html
    # The turns are the chat, not a form: nothing in it can be edited, added or deleted.
    assert page.context["inline_admin_formsets"] == []
    assert 'name="turns-TOTAL_FORMS"' not in html


def test_customers_and_outsiders_cannot_read_transcripts(client, transcripts):
    client.get("/chat/")  # a visitor cookie is no staff login
    page = client.get("/admin/conversations/conversation/")
    assert page.status_code == 302 and "/admin/login/" in page["Location"]
    User.objects.create_user("charlie", password="pw-charlie-123")  # not staff
    client.login(username="charlie", password="pw-charlie-123")
    assert client.get("/admin/conversations/conversation/").status_code == 302


def test_it_passes_the_deploy_checklist_with_production_settings():
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DEBUG",
            "SECURE_SSL_REDIRECT",
            "SECURE_COOKIES",
            "STATIC_FROM_FINDERS",
            "DJANGO_ALLOW_ASYNC_UNSAFE",
        }
    }
    env.update(
        SECRET_KEY="k" * 20 + "Production-Secret-Key-With-Enough-Entropy-9f8e7d6c",
        ALLOWED_HOSTS="support.example.com",
        DEBUG="0",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_it_refuses_to_start_in_production_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


def test_turns_keep_html_as_plain_text(transcripts):
    alices, _ = transcripts
    assert (
        Turn.objects.filter(conversation=alices, author="customer")
        .get()
        .text.startswith("My kettle <script>")
    )
