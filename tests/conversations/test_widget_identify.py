"""Identifying the host site's signed-in users in the widget (issue 16, point 2): the claim
signed with WIDGET_IDENTITY_SECRET (user_hash), refused clearly and storing nothing when it is
wrong, missing, malformed or not configured; the anonymous visitor's conversations merged into
the user once; the user's conversations on every browser; nobody else's, ever."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from conversations import embedding, identity, selectors
from conversations.identity import identify, user_hash
from conversations.models import Conversation, Customer, Turn
from conversations.protocol import is_utf8
from inbox.events import customer_label
from tests.conftest import receive_until
from tests.conversations.test_widget_embedding import SHOP, auth, refused_with, widget_socket

SECRET = "test-identify-secret-0123456789"
pytestmark = [
    pytest.mark.usefixtures("identity_secret"),
]


@pytest.fixture
def identity_secret():
    with override_settings(WIDGET_IDENTITY_SECRET=SECRET):
        yield


def claim(user_id: object = "user-42", **fields: object) -> dict[str, object]:
    valid = isinstance(user_id, str) and is_utf8(user_id)
    signed = user_hash(user_id, SECRET) if valid else "0" * 64
    return {"id": user_id, "name": "Ada Lovelace", "email": "ada@example.com"} | {
        "user_hash": signed,
        **fields,
    }


def conversation_with_turn(customer: Customer, text: str) -> Conversation:
    conversation = Conversation.objects.create(customer=customer)
    Turn.objects.create(conversation=conversation, author=Turn.Author.CUSTOMER, text=text)
    return conversation


def visible_to(customer_id: uuid.UUID) -> set[str]:
    return {item["id"] for item in selectors.previous_conversations(customer_id)}


# --- The claim ---------------------------------------------------------------------------------


def test_it_computes_the_user_hash_as_the_docs_say():
    # docs/widget.md: hex HMAC-SHA256 of the user id, keyed with the secret.
    expected = hmac.new(SECRET.encode(), b"user-42", hashlib.sha256).hexdigest()
    assert user_hash("user-42", SECRET) == expected and len(expected) == 64


@pytest.mark.django_db
def test_it_identifies_nobody_without_a_secret(alice):
    with override_settings(WIDGET_IDENTITY_SECRET=""):
        result = identify(alice.pk, claim())
    assert result.error is not None and result.error.code == "identity_not_configured"
    assert result.customer_id == alice.pk  # still the anonymous visitor
    assert Customer.objects.filter(external_id__isnull=False).count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "given_hash",
    [user_hash("user-42", "another install's secret"), user_hash("user-43", SECRET), "", None],
)
def test_it_refuses_a_wrong_or_missing_hash_and_the_visitor_stays_anonymous(alice, given_hash):
    conversation = conversation_with_turn(alice, "Where is my order?")
    raw = claim(user_hash=given_hash)
    if given_hash is None:
        del raw["user_hash"]
    result = identify(alice.pk, raw)
    assert result.error is not None and result.error.code == "bad_user_hash"
    assert result.session_fields() == {
        "identified": False,
        "identity_error": {"code": "bad_user_hash", "message": result.error.message},
    }
    assert result.customer_id == alice.pk and result.merged == ()
    assert Customer.objects.filter(external_id__isnull=False).count() == 0
    assert Conversation.objects.get().pk == conversation.pk
    assert Conversation.objects.get().customer_id == alice.pk


@pytest.mark.django_db
def test_it_accepts_the_hash_in_capitals_too():
    result = identify(None, claim(user_hash=user_hash("user-42", SECRET).upper()))
    assert result.error is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (claim("u" * 256), "id"),
        (claim(""), "id"),
        (claim(42), "id"),
        (claim(None), "id"),
        (claim(["user-42"]), "id"),
        (claim(name=7), "name"),
        (claim(name="n" * 201), "name"),
        (claim(email="not an address"), "email"),
        (claim(email={"a": 1}), "email"),
        (claim("user-\ud800"), "id"),
        ("user-42", "object"),
        (None, "object"),
    ],
)
def test_it_refuses_bad_input_clearly_and_stores_nothing(alice, raw, field):
    result = identify(alice.pk, raw)
    assert result.error is not None and result.error.code == "bad_identity"
    assert field in result.error.message
    assert result.customer_id == alice.pk
    assert list(Customer.objects.all()) == [alice]


# --- Merging the anonymous visitor -------------------------------------------------------------


@pytest.mark.django_db
def test_it_merges_the_anonymous_visitors_conversations_into_the_user_once(alice):
    first = conversation_with_turn(alice, "First question")
    second = conversation_with_turn(alice, "Second question")
    turns_before = Turn.objects.count()

    result = identify(alice.pk, claim())
    user = Customer.objects.get(external_id="user-42")
    assert result.error is None and result.customer_id == user.pk
    assert set(result.merged) == {first.pk, second.pk}
    assert (user.display_name, user.email) == ("Ada Lovelace", "ada@example.com")
    assert not Customer.objects.filter(pk=alice.pk).exists()  # the anonymous row is gone
    assert visible_to(user.pk) == {str(first.pk), str(second.pk)}
    assert Turn.objects.count() == turns_before  # nothing lost, nothing doubled

    # Again, from the old anonymous token (another tab) or the new one: nothing changes.
    assert identify(alice.pk, claim()).customer_id == user.pk
    again = identify(user.pk, claim())
    assert again.customer_id == user.pk and again.merged == ()
    assert Customer.objects.count() == 1 and Conversation.objects.count() == 2
    assert Turn.objects.count() == turns_before


@pytest.mark.django_db
def test_a_merge_that_fails_halfway_changes_nothing(alice, monkeypatch):
    conversation_with_turn(alice, "First question")
    conversation_with_turn(alice, "Second question")

    def broken(conversation_id: object) -> None:
        raise RuntimeError("the inbox is down")

    monkeypatch.setattr(identity.state, "notify_team", broken)
    with pytest.raises(RuntimeError):
        identify(alice.pk, claim())
    assert list(Customer.objects.all()) == [alice]
    assert set(Conversation.objects.values_list("customer_id", flat=True)) == {alice.pk}


@pytest.mark.django_db
def test_a_visitor_with_nothing_stored_is_identified_without_a_merge():
    result = identify(uuid.uuid4(), claim())
    assert result.error is None and result.merged == ()
    assert Customer.objects.get().external_id == "user-42"


@pytest.mark.django_db
def test_the_users_conversations_follow_them_to_another_browser(alice):
    earlier = conversation_with_turn(alice, "Asked on my laptop")
    on_laptop = identify(alice.pk, claim())
    on_phone = identify(None, claim())  # fresh storage: no token at all
    assert on_phone.customer_id == on_laptop.customer_id
    assert visible_to(on_phone.customer_id) == {str(earlier.pk)}
    # The token the phone gets names the same customer.
    token = embedding.visitor_token(on_phone.customer_id)
    assert embedding.visitor_from_token(token) == on_laptop.customer_id


@pytest.mark.django_db
def test_identifying_as_another_user_carries_nothing_over(alice):
    as_ada = identify(alice.pk, claim("user-ada"))
    ada_conversation = conversation_with_turn(
        Customer.objects.get(pk=as_ada.customer_id), "Ada's question"
    )
    # The same browser, now signed in as Bob (the token still names Ada).
    as_bob = identify(as_ada.customer_id, claim("user-bob", name="Bob", email="bob@example.com"))
    assert as_bob.error is None and as_bob.merged == ()
    assert as_bob.customer_id != as_ada.customer_id
    assert visible_to(as_bob.customer_id) == set()
    assert visible_to(as_ada.customer_id) == {str(ada_conversation.pk)}
    assert Conversation.objects.get().customer_id == as_ada.customer_id


@pytest.mark.django_db
def test_a_refused_claim_from_an_identified_visitor_starts_a_fresh_anonymous_one(alice):
    as_ada = identify(alice.pk, claim("user-ada"))
    conversation_with_turn(Customer.objects.get(pk=as_ada.customer_id), "Ada's question")
    # Someone else signs in on this browser, but the page's hash is wrong: not Ada any more.
    refused = identify(as_ada.customer_id, claim("user-bob", user_hash="f" * 64))
    assert refused.error is not None and refused.error.code == "bad_user_hash"
    assert refused.customer_id not in (as_ada.customer_id, alice.pk)
    assert visible_to(refused.customer_id) == set()


@pytest.mark.django_db
def test_a_new_name_or_email_is_kept_and_agents_see_it(alice):
    conversation = conversation_with_turn(alice, "Hello")
    identify(alice.pk, claim())
    identify(None, claim(name="Ada King", email="ada.king@example.com"))
    user = Customer.objects.get(external_id="user-42")
    assert (user.display_name, user.email) == ("Ada King", "ada.king@example.com")
    conversation.refresh_from_db()
    assert customer_label(conversation) == "Ada King"
    # Leaving name and email out keeps them.
    identify(None, {"id": "user-42", "user_hash": user_hash("user-42", SECRET)})
    assert Customer.objects.get(external_id="user-42").display_name == "Ada King"


@pytest.mark.django_db
def test_personas_identified_never_see_each_others_conversations(alice, bob):
    alices = conversation_with_turn(alice, "Alice's question")
    bobs = conversation_with_turn(bob, "Bob's question")
    as_alice = identify(alice.pk, claim("user-alice", name="Alice", email="alice@example.com"))
    as_bob = identify(bob.pk, claim("user-bob", name="Bob", email="bob@example.com"))
    assert visible_to(as_alice.customer_id) == {str(alices.pk)}
    assert visible_to(as_bob.customer_id) == {str(bobs.pk)}
    with pytest.raises(selectors.NotYourConversation):
        selectors.conversation_for_customer(as_bob.customer_id, str(alices.pk))
    # Bob claiming Alice's id without her hash gets nothing of hers.
    forged = identify(as_bob.customer_id, claim("user-alice", user_hash=user_hash("user-bob")))
    assert forged.error is not None
    assert visible_to(forged.customer_id) == set()


# --- Over the widget's socket ------------------------------------------------------------------


def identify_auth(token: str, raw: object, conversation: str = "") -> dict[str, object]:
    return {**auth(token, conversation), "identity": raw}


async def session_and_snapshot(socket) -> tuple[dict, dict]:
    session = await socket.receive_json_from(timeout=5)
    assert session["type"] == "session", session
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == "conversation", snapshot
    return session, snapshot


@pytest.mark.django_db(transaction=True)
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP])
async def test_it_identifies_over_the_widget_socket_and_keeps_the_open_conversation():
    anonymous = await widget_socket(auth())
    first, _ = await session_and_snapshot(anonymous)
    await anonymous.send_json_to({"type": "message", "client_id": "m1", "text": "Hello there"})
    await receive_until(anonymous, lambda f: f["type"] == "ack")
    await anonymous.disconnect()

    # The user signs in: the same conversation, now theirs, under a token for them.
    signed_in = await widget_socket(
        identify_auth(first["token"], claim(), first["conversation_id"])
    )
    session, snapshot = await session_and_snapshot(signed_in)
    assert session["identified"] is True and session["token"] != first["token"]
    assert session["conversation_id"] == first["conversation_id"]
    assert [turn["text"] for turn in snapshot["turns"]][:1] == ["Hello there"]
    await signed_in.disconnect()

    # Another browser: no token, the same user, the same conversation.
    elsewhere = await widget_socket(identify_auth("", claim()))
    other, snapshot = await session_and_snapshot(elsewhere)
    assert other["identified"] is True
    assert other["conversation_id"] == first["conversation_id"]
    assert snapshot["turns"][0]["text"] == "Hello there"
    await elsewhere.disconnect()
    user = await database_sync_to_async(Customer.objects.get)(external_id="user-42")
    assert await database_sync_to_async(Customer.objects.count)() == 1
    assert embedding.visitor_from_token(other["token"]) == user.pk

    # That browser, now signed in as someone else, asks for the same conversation: not theirs.
    as_bob = await widget_socket(
        identify_auth(other["token"], claim("user-bob"), first["conversation_id"])
    )
    bobs, snapshot = await session_and_snapshot(as_bob)
    assert bobs["identified"] is True and bobs["conversation_id"] != first["conversation_id"]
    assert snapshot["turns"] == []
    await as_bob.disconnect()


@pytest.mark.django_db(transaction=True)
@override_settings(WIDGET_ANY_SITE=False, WIDGET_ALLOWED_ORIGINS=[SHOP])
async def test_a_wrong_hash_over_the_socket_stays_anonymous_with_an_error_code():
    user = await database_sync_to_async(Customer.objects.create)(external_id="user-42")
    theirs = await database_sync_to_async(conversation_with_turn)(user, "The user's question")

    socket = await widget_socket(identify_auth("", claim(user_hash="0" * 64)))
    session, snapshot = await session_and_snapshot(socket)
    assert session["identified"] is False
    assert session["identity_error"]["code"] == "bad_user_hash"
    assert embedding.visitor_from_token(session["token"]) != user.pk
    assert session["conversation_id"] != str(theirs.pk)
    assert snapshot["turns"] == []
    await socket.disconnect()

    # Asking for the user's conversation with the anonymous token is refused as before.
    again = await widget_socket(auth(session["token"], str(theirs.pk)))
    await again.receive_json_from(timeout=5)
    await refused_with(again, 4403, "forbidden")
