"""The customer context panel on the agent's conversation page (issue 17 point 4): the
context endpoint (who, where the chat started, other conversations with their outcome), who may
read it, editing the contact details (checked, nothing partial stored, the inbox row updated
live) and the nameless customer's row label."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from conversations.models import Conversation, Customer, Turn
from inbox.events import customer_label, row_for
from inbox.selectors_context import OTHER_CONVERSATIONS_SHOWN, conversation_context
from tests import personas
from tests.conftest import receive_until
from tests.inbox.test_inbox_socket import agent_socket
from tests.inbox.test_permissions import customer_client, logged_in

alice_agent = personas.alice_agent
oscar_outsider = personas.oscar_outsider


def context_url(conversation: Conversation) -> str:
    return f"/agent/api/conversations/{conversation.pk}/context/"


def contact_url(conversation: Conversation) -> str:
    return f"/agent/api/conversations/{conversation.pk}/contact/"


def post_contact(client, conversation: Conversation, body: object):
    return client.post(contact_url(conversation), json.dumps(body), content_type="application/json")


def conversation_of(customer: Customer, *turns: tuple[str, str], **fields) -> Conversation:
    conversation = Conversation.objects.create(customer=customer, **fields)
    for author, text in turns:
        Turn.objects.create(
            conversation=conversation,
            author=author,
            text=text,
            status=Turn.Status.DONE if author == Turn.Author.BOT else "",
        )
    if "created_at" in fields:  # auto_now_add ignores it on create
        Conversation.objects.filter(pk=conversation.pk).update(created_at=fields["created_at"])
    return conversation


@pytest.fixture
def started(alice: Customer) -> Conversation:
    return conversation_of(
        alice,
        ("customer", "My parcel is late"),
        started_page_url="https://shop.example.com/orders/42",
        started_referrer="https://mail.example.com/",
        user_agent="Mozilla/5.0 …",
        browser="Chrome 131 on Windows",
        browser_language="de-DE",
        time_zone="Europe/Berlin",
    )


# --- Who may read it ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_shows_an_agent_the_customers_context(started, alice, alice_agent):
    Customer.objects.filter(pk=alice.pk).update(
        email="alice@example.com", attributes={"plan": "Pro", "seats": 3}
    )
    data = logged_in(alice_agent).get(context_url(started)).json()
    assert data["customer"] == {
        "id": str(alice.pk),
        "label": "Alice",
        "name": "Alice",
        "email": "alice@example.com",
        "contact_email": "",
        "external_id": None,
        "attributes": {"plan": "Pro", "seats": 3},
        "since": alice.created_at.isoformat(),
    }
    assert data["started"] == {
        "page_url": "https://shop.example.com/orders/42",
        "page_host": "shop.example.com",
        "referrer": "https://mail.example.com/",
        "browser": "Chrome 131 on Windows",
        "user_agent": "Mozilla/5.0 …",
        "language": "de-DE",
        "time_zone": "Europe/Berlin",
        "at": started.created_at.isoformat(),
    }
    assert data["other_conversations"] == [] and data["more_conversations"] is False


@pytest.mark.django_db
def test_a_customer_anonymous_or_outsider_never_reaches_the_context(started, oscar_outsider):
    customer = customer_client(started.customer)
    assert customer.get(context_url(started)).status_code == 401
    assert post_contact(customer, started, {"name": "Mallory"}).status_code == 401
    from django.test import Client

    anonymous = Client()
    response = anonymous.get(context_url(started))
    assert response.status_code == 401 and response.json() == {"error": "Please log in as staff."}
    outsider = logged_in(oscar_outsider)
    assert outsider.get(context_url(started)).status_code == 403
    assert post_contact(outsider, started, {"name": "Mallory"}).status_code == 403
    assert Customer.objects.get(pk=started.customer_id).display_name == "Alice"


@pytest.mark.django_db
def test_an_unknown_conversation_is_a_json_404(alice_agent):
    client = logged_in(alice_agent)
    response = client.get("/agent/api/conversations/00000000-0000-0000-0000-000000000000/context/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


# --- Other conversations -----------------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_the_customers_other_conversations_with_outcome_rating_and_link(
    started, alice, bob, alice_agent
):
    now = timezone.now()
    handed = conversation_of(
        alice,
        ("customer", "I want a refund"),
        ("bot", "Here is how refunds work."),
        status=Conversation.Status.RESOLVED,
        escalated_at=now,
        rating=2,
        created_at=now - timedelta(days=3),
    )
    resolved = conversation_of(
        alice,
        ("customer", "Opening hours?"),
        ("bot", "9 to 5."),
        status=Conversation.Status.RESOLVED,
        rating=5,
        created_at=now - timedelta(days=2),
    )
    answered = conversation_of(
        alice,
        ("customer", "Do you ship to Spain?"),
        ("bot", "Yes."),
        created_at=now - timedelta(days=1),
    )
    conversation_of(alice)  # opened, never written in: not listed
    conversation_of(bob, ("customer", "Bob's own question"))  # someone else's: never listed

    items = logged_in(alice_agent).get(context_url(started)).json()["other_conversations"]
    assert [(i["id"], i["topic"], i["outcome"], i["rating"]) for i in items] == [
        (str(answered.pk), "Do you ship to Spain?", "bot_answered", None),
        (str(resolved.pk), "Opening hours?", "resolved", 5),
        (str(handed.pk), "I want a refund", "handed_over", 2),
    ]
    assert items[0]["url"] == f"/agent/conversations/{answered.pk}/"
    assert all(i["earlier"] for i in items)


@pytest.mark.django_db
def test_the_context_costs_the_same_queries_however_many_conversations(
    started, alice, alice_agent, django_assert_max_num_queries
):
    for n in range(OTHER_CONVERSATIONS_SHOWN + 5):
        conversation_of(alice, ("customer", f"Question {n}"), ("bot", "Answer"))
    # The conversation with its customer, then the others.
    with django_assert_max_num_queries(2):
        conversation_context(started.pk)
    # The endpoint adds the session, the user and their permissions (2) only.
    client = logged_in(alice_agent)
    with django_assert_max_num_queries(6):
        data = client.get(context_url(started)).json()
    assert len(data["other_conversations"]) == OTHER_CONVERSATIONS_SHOWN
    assert data["more_conversations"] is True


# --- Editing contact details -------------------------------------------------------------------


@pytest.mark.django_db
def test_an_agent_edits_the_customers_name_and_email(started, alice_agent):
    response = post_contact(
        logged_in(alice_agent), started, {"name": "  Alice   Martin ", "email": "am@example.com "}
    )
    assert response.status_code == 200
    assert response.json()["customer"]["name"] == "Alice Martin"
    customer = Customer.objects.get(pk=started.customer_id)
    assert (customer.display_name, customer.email) == ("Alice Martin", "am@example.com")
    assert row_for(started.pk)["customer"] == "Alice Martin"

    # The email alone, then cleared.
    post_contact(logged_in(alice_agent), started, {"email": ""})
    assert Customer.objects.get(pk=started.customer_id).email == ""
    assert Customer.objects.get(pk=started.customer_id).display_name == "Alice Martin"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "Alice B", "email": "not an address"}, "bad_email"),
        ({"name": "Alice B", "email": 42}, "bad_email"),
        ({"name": "Alice B", "email": "a" * 250 + "@example.com"}, "too_long"),
        ({"name": "n" * 201, "email": "ok@example.com"}, "too_long"),
        ({"name": ["Alice"], "email": "ok@example.com"}, "invalid"),
        ({}, "invalid"),
        ({"name": "broken \ud800"}, "invalid"),
    ],
    ids=[
        "bad-email",
        "email-not-text",
        "email-too-long",
        "name-too-long",
        "name-not-text",
        "empty",
        "surrogate",
    ],
)
def test_bad_contact_details_get_a_clear_400_and_nothing_is_stored(
    started, alice_agent, body, code
):
    response = post_contact(logged_in(alice_agent), started, body)
    assert response.status_code == 400
    assert response.json()["code"] == code and response.json()["error"]
    customer = Customer.objects.get(pk=started.customer_id)
    assert (customer.display_name, customer.email) == ("Alice", "")


@pytest.mark.django_db
def test_a_body_that_is_no_json_object_is_a_400(started, alice_agent):
    client = logged_in(alice_agent)
    for raw in ("not json", "[1, 2]"):
        response = client.post(contact_url(started), raw, content_type="application/json")
        assert response.status_code == 400 and response.json()["code"] == "invalid"


@pytest.mark.django_db(transaction=True)
async def test_the_edited_name_reaches_the_inbox_row_live(started, alice_agent):
    agent = await agent_socket(alice_agent)
    client = await database_sync_to_async(logged_in)(alice_agent)
    response = await database_sync_to_async(post_contact)(client, started, {"name": "Alice Martin"})
    assert response.status_code == 200
    frames = await receive_until(
        agent, lambda f: f["type"] == "inbox.row" and f["row"]["id"] == str(started.pk)
    )
    assert frames[-1]["row"]["customer"] == "Alice Martin"
    await agent.disconnect()


# --- The nameless customer's row label ---------------------------------------------------------


@pytest.mark.django_db
def test_a_nameless_customer_is_named_by_where_and_in_what_they_chat():
    visitor = Customer.objects.create()
    conversation = conversation_of(
        visitor,
        ("customer", "Hi"),
        started_page_url="https://shop.example.com/cart",
        browser="Chrome 131 on Windows",
    )
    assert customer_label(conversation) == "Visitor from shop.example.com · Chrome on Windows"
    browser_only = conversation_of(visitor, ("customer", "Hi"), browser="Firefox 133 on Linux")
    assert customer_label(browser_only) == "Visitor · Firefox on Linux"
    unknown = conversation_of(visitor, ("customer", "Hi"))
    assert customer_label(unknown) == f"Visitor {str(visitor.pk)[:8]}"
    named = conversation_of(Customer.objects.create(email="x@example.com"), browser="Chrome 1 on X")
    assert customer_label(named) == "x@example.com"
