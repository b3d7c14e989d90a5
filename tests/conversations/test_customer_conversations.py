"""A returning customer's conversations: the list, a new one, opening an older one.

Personas: alice and bob are customers, an outsider has no visitor cookie. Bob and the outsider
must see nothing of alice's conversations."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, Customer, Turn
from conversations.ratings import rate
from conversations.selectors import previous_conversations
from conversations.visitors import signed_visitor_cookie

pytestmark = pytest.mark.django_db


def client_of(customer: Customer | None, *, enforce_csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf)
    if customer is not None:
        client.cookies[settings.CHAT_VISITOR_COOKIE] = signed_visitor_cookie(customer.pk)
    return client


def conversation_with(
    customer: Customer, *texts: str, ago: timedelta = timedelta()
) -> Conversation:
    conversation = Conversation.objects.create(customer=customer)
    for i, text in enumerate(texts):
        services.post_customer_message(conversation, f"{conversation.pk}-{i}", text)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message_at=timezone.now() - ago, created_at=timezone.now() - ago
    )
    return conversation


def csrf_token(client: Client) -> str:
    page = client.get("/chat/").content.decode()
    match = re.search(r'data-csrf-token="([^"]+)"', page)
    assert match, "the chat page carries the CSRF token for chat.js"
    return match.group(1)


def test_it_lists_the_customers_own_conversations_most_recent_first(alice, bob):
    old = conversation_with(alice, "My lamp flickers", ago=timedelta(days=3))
    recent = conversation_with(alice, "Where is my parcel?", ago=timedelta(hours=1))
    Conversation.objects.filter(pk=old.pk).update(status="resolved")
    conversation_with(bob, "Bob's secret question")
    Conversation.objects.create(customer=alice)  # empty: nothing to show

    response = client_of(alice).get("/chat/conversations/")

    assert response.status_code == 200
    listed = response.json()["conversations"]
    assert [c["id"] for c in listed] == [str(recent.pk), str(old.pk)]
    assert listed[0]["last_message"]["text"] == "Where is my parcel?"
    assert listed[0]["last_message"]["author"] == "customer"
    assert (listed[0]["status"], listed[1]["status"]) == ("open", "resolved")
    assert listed[1]["url"] == f"/chat/?conversation={old.pk}"
    assert "Bob" not in response.content.decode()


def test_it_never_shows_bob_alices_conversations(alice, bob):
    alices = conversation_with(alice, "Alice's question")
    listed = client_of(bob).get("/chat/conversations/").json()["conversations"]
    assert listed == []
    assert str(alices.pk) not in client_of(bob).get("/chat/").content.decode()


def test_it_gives_an_outsider_a_clear_error_and_no_conversations(alice):
    conversation_with(alice, "Alice's question")
    response = client_of(None).get("/chat/conversations/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert not Customer.objects.exclude(pk=alice.pk).exists()  # no visitor was made up


def test_it_treats_a_forged_cookie_as_an_outsider(alice):
    conversation_with(alice, "Alice's question")
    client = Client()
    client.cookies[settings.CHAT_VISITOR_COOKIE] = f"{alice.pk}:forged:signature"
    assert client.get("/chat/conversations/").status_code == 401


def test_it_opens_an_older_conversation_for_its_customer_only(alice, bob):
    old = conversation_with(alice, "My lamp flickers", ago=timedelta(days=3))
    Conversation.objects.filter(pk=old.pk).update(status="resolved")
    conversation_with(alice, "Newer question")

    page = client_of(alice).get(f"/chat/?conversation={old.pk}")
    assert page.status_code == 200 and page.context["conversation_id"] == str(old.pk)

    assert client_of(bob).get(f"/chat/?conversation={old.pk}").status_code == 404
    assert client_of(None).get(f"/chat/?conversation={old.pk}").status_code == 404
    assert client_of(alice).get("/chat/?conversation=not-a-uuid").status_code == 404


def test_it_starts_a_new_conversation(alice):
    first = conversation_with(alice, "First question")
    client = client_of(alice, enforce_csrf=True)
    token = csrf_token(client)

    response = client.post("/chat/conversations/new/", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 201
    new_id = response.json()["conversation"]["id"]
    assert new_id != str(first.pk)
    assert response.json()["url"] == f"/chat/?conversation={new_id}"
    # Stored with its first message: pressing the button again piles up nothing.
    again = client.post("/chat/conversations/new/", HTTP_X_CSRFTOKEN=token)
    assert again.json()["conversation"]["id"] == new_id
    assert alice.conversations.count() == 1
    # Its page opens it; another visitor's page does not.
    assert client.get(response.json()["url"]).context["conversation_id"] == new_id
    assert client_of(Customer.objects.create()).get(response.json()["url"]).status_code == 404


def test_it_needs_the_csrf_token_to_start_a_conversation(alice):
    client = client_of(alice, enforce_csrf=True)
    csrf_token(client)
    response = client.post("/chat/conversations/new/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert not alice.conversations.exists()  # opening the page stores nothing


def test_it_lets_no_outsider_start_a_conversation():
    response = client_of(None).post("/chat/conversations/new/")
    assert response.status_code == 401
    assert not Conversation.objects.exists()


def test_it_accepts_only_get_for_the_list_and_post_for_new(alice):
    assert client_of(alice).post("/chat/conversations/").status_code == 405
    assert client_of(alice).get("/chat/conversations/new/").status_code == 405


def test_it_shows_how_an_old_conversation_ended(alice):
    conversation = conversation_with(alice, "Help")
    Turn.objects.create(conversation=conversation, author="system", text="A person will join")
    Conversation.objects.filter(pk=conversation.pk).update(status="resolved")
    rate(conversation, 5)
    (listed,) = previous_conversations(alice.pk)
    # System notices are not "the last message"; the customer's is.
    assert listed["last_message"] == {"author": "customer", "text": "Help"}
    assert listed["rated"] is True
