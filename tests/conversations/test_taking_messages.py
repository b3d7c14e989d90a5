"""Taking a customer's message (services.post_customer_message): one transaction, no read
first; a re-send of a stored message is acknowledged again and stores nothing."""

from __future__ import annotations

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from redis.backoff import NoBackoff
from redis.retry import Retry

from conversations import events, services
from conversations.models import Conversation, Customer, Turn
from conversations.tasks import generate_reply
from inbox import presence as inbox_presence
from tests.conftest import free_port

pytestmark = pytest.mark.django_db


def test_a_new_message_is_stored_with_its_reply_without_reading_first(alice_conversation):
    services.post_customer_message(alice_conversation, "m-1", "Hello")  # the row exists now

    with CaptureQueriesContext(connection) as queries:
        posted = services.post_customer_message(alice_conversation, "m-2", "Where is my parcel?")

    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # The message, the conversation row (locked, read, updated), the reply: nothing before.
    assert statements == ["SAVEPOINT", "INSERT", "SELECT", "UPDATE", "INSERT", "RELEASE"]
    assert not posted.duplicate and posted.reply is not None


def test_a_re_sent_message_is_acknowledged_again_and_stores_nothing(alice_conversation):
    first = services.post_customer_message(alice_conversation, "m-1", "Where is my parcel?")

    again = services.post_customer_message(alice_conversation, "m-1", "Where is my parcel?")

    assert again.duplicate
    assert again.ack_frame() == {**first.ack_frame(), "duplicate": True}
    assert Turn.objects.filter(conversation=alice_conversation).count() == 2  # message, reply


def test_a_message_its_rate_limit_refuses_is_not_stored(alice_conversation):
    class Refused(Exception):
        pass

    def refuse() -> None:
        raise Refused

    with pytest.raises(Refused):
        services.post_customer_message(alice_conversation, "m-1", "Hello", admit=refuse)

    assert not Turn.objects.filter(conversation=alice_conversation).exists()
    assert Conversation.objects.get(pk=alice_conversation.pk).last_customer_message_at is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "inbox_open", [False, True], ids=["nobody-watching", "an-agents-inbox-open"]
)
def test_a_message_is_stored_and_its_reply_queued_while_redis_cannot_take_its_events(
    monkeypatch: pytest.MonkeyPatch, inbox_open: bool
) -> None:
    # A Redis nobody listens on: every event PUBLISH is refused, at once (with an agent's
    # inbox open, the row's too). The service still returns, so the page gets its ack.
    unreachable = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(events, "sync_client", lambda: unreachable)
    monkeypatch.setattr(inbox_presence, "anyone_present", lambda: inbox_open)
    queued: list[int] = []
    monkeypatch.setattr(generate_reply, "delay", queued.append)
    conversation = Conversation.objects.create(customer=Customer.objects.create())

    posted = services.post_customer_message(conversation, "m-1", "Where is my parcel?")

    assert posted.reply is not None and queued == [posted.reply.pk]
    assert Turn.objects.filter(conversation=conversation).count() == 2
