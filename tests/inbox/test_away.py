"""An agent's away setting (issue 17.9) and the notifications' starting point (17.3): away
agents keep the inbox but don't count as the team being online for customers."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync

from conversations import availability
from conversations.models import Conversation, Turn
from inbox import presence
from tests import personas
from tests.conftest import receive_until
from tests.conversations.test_first_screen import after_hours, within_hours  # noqa: F401
from tests.inbox.test_inbox_socket import agent_socket
from tests.inbox.test_permissions import customer_client, logged_in

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent
oscar_outsider = personas.oscar_outsider
pending = personas.pending

CHANNEL = "away-test-channel"


@pytest.fixture(autouse=True)
def measured_afresh():
    availability.forget_cached_reply_time()
    yield
    availability.forget_cached_reply_time()


@pytest.fixture
def anna_online(alice_agent):
    """Anna has the inbox open (the only agent who has)."""
    async_to_sync(presence.arrive)(alice_agent.pk, CHANNEL)
    yield alice_agent
    async_to_sync(presence.leave)(alice_agent.pk, CHANNEL)


def set_away(client, away):
    return client.post("/agent/api/away/", json.dumps({"away": away}), "application/json")


@pytest.mark.django_db
def test_it_says_typically_replies_when_the_only_online_agent_is_away(anna_online, within_hours):  # noqa: F811
    client = logged_in(anna_online)
    assert availability.customer_availability()["text"].startswith("Our team is online")

    assert set_away(client, True).json() == {"ok": True, "away": True}

    shown = availability.customer_availability()
    assert shown["online"] is False and shown["away"] is False
    assert shown["text"] == "Our team typically replies in 5 minutes"

    assert set_away(client, False).json() == {"ok": True, "away": False}
    shown = availability.customer_availability()
    assert shown["online"] is True and shown["text"].startswith("Our team is online")


@pytest.mark.django_db
def test_it_says_away_after_hours_when_the_only_online_agent_is_away(anna_online, after_hours):  # noqa: F811
    set_away(logged_in(anna_online), True)

    shown = availability.customer_availability()
    assert shown["away"] is True and shown["text"].startswith("Our team is away · back")


@pytest.mark.django_db
def test_another_agent_online_keeps_the_team_online(anna_online, bob_agent, after_hours):  # noqa: F811
    async_to_sync(presence.arrive)(bob_agent.pk, "bob-channel")
    set_away(logged_in(anna_online), True)

    assert availability.customer_availability()["online"] is True
    async_to_sync(presence.leave)(bob_agent.pk, "bob-channel")
    assert availability.customer_availability()["online"] is False


@pytest.mark.django_db
def test_the_away_setting_holds_per_agent_and_shows_on_the_inbox_page(alice_agent, bob_agent):
    set_away(logged_in(alice_agent), True)

    assert presence.is_away(alice_agent.pk) and not presence.is_away(bob_agent.pk)
    page = logged_in(alice_agent).get("/agent/").content.decode()
    assert 'data-away="true"' in page
    assert 'data-away="false"' in logged_in(bob_agent).get("/agent/").content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("body", ['{"away": "yes"}', '{"away": 1}', "{}", "[true]", "not json"])
def test_it_refuses_an_away_setting_that_is_not_true_or_false(alice_agent, body):
    response = logged_in(alice_agent).post("/agent/api/away/", body, "application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and response.json()["error"]
    assert not presence.is_away(alice_agent.pk)


@pytest.mark.django_db
def test_only_inbox_staff_may_set_away(alice, oscar_outsider):
    from django.test import Client

    assert set_away(Client(), True).status_code == 401
    assert set_away(customer_client(alice), True).status_code == 401
    refused = set_away(logged_in(oscar_outsider), True)
    assert refused.status_code == 403 and "error" in refused.json()
    assert not presence.is_away(oscar_outsider.pk)
    assert logged_in(oscar_outsider).get("/agent/api/notifications/").status_code == 403


@pytest.mark.django_db(transaction=True)
async def test_it_tells_the_agents_other_tabs(alice_agent, bob_agent):
    from channels.db import database_sync_to_async

    tab = await agent_socket(alice_agent)
    bob = await agent_socket(bob_agent)
    response = await database_sync_to_async(lambda: set_away(logged_in(alice_agent), True))()
    assert response.status_code == 200

    frames = await receive_until(tab, lambda f: f["type"] == "away")
    assert frames[-1] == {"type": "away", "away": True}
    assert await bob.receive_nothing(timeout=0.5)
    await tab.disconnect()
    await bob.disconnect()


@pytest.mark.django_db
def test_notifications_start_from_my_and_unassigned_handovers_unread_by_me(
    alice, bob, alice_agent, bob_agent, django_assert_max_num_queries
):
    from django.utils import timezone

    from inbox.models import ReadMarker

    def conversation(customer, status, assignee=None, read_by=None):
        made = Conversation.objects.create(customer=customer, status=status, assignee=assignee)
        Turn.objects.create(conversation=made, author="customer", text="Hello?")
        now = timezone.now()
        # The team's shared marker says read: only each agent's own counts.
        Conversation.objects.filter(pk=made.pk).update(
            last_customer_message_at=now, agent_read_at=now
        )
        if read_by:
            ReadMarker.objects.create(conversation=made, user=read_by, read_at=now)
        return str(made.pk)

    unassigned = conversation(alice, "pending", read_by=bob_agent)  # Bob read it, Anna not
    mine = conversation(bob, "pending", assignee=alice_agent)
    conversation(alice, "pending", assignee=bob_agent)  # Bob's
    conversation(bob, "pending", assignee=alice_agent, read_by=alice_agent)  # read already
    conversation(alice, "open")  # with the bot

    client = logged_in(alice_agent)
    with django_assert_max_num_queries(5):  # session, user, 2 × permissions, the ids
        answer = client.get("/agent/api/notifications/").json()

    assert sorted(answer["unread"]) == sorted([unassigned, mine])
    assert answer["away"] is False


@pytest.mark.django_db
def test_it_answers_503_when_the_away_setting_cannot_be_stored(alice_agent, monkeypatch):
    from redis.exceptions import ConnectionError as RedisDown

    import inbox.away

    def down(user_id, away):
        raise RedisDown("Redis is away")

    monkeypatch.setattr(inbox.away.presence, "set_away", down)
    response = set_away(logged_in(alice_agent), True)

    assert response.status_code == 503
    assert response.json()["code"] == "unavailable" and response.json()["error"]
