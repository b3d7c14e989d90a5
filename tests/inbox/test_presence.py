"""Who has the inbox open (inbox/presence.py): inbox rows are built and sent only when some agent
could receive them, so a customer message costs no inbox work while nobody works the inbox."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import services as chat_services
from inbox import presence
from support_bot.redis_clients import sync_client
from tests import personas
from tests.inbox.test_inbox_socket import agent_socket

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_cached_presence():
    presence.forget_cached_presence()
    yield
    presence.forget_cached_presence()


def inbox_row_queries(conversation, client_id: str) -> int:
    """Queries of the inbox row among those a customer message makes."""
    with CaptureQueriesContext(connection) as captured:
        chat_services.post_customer_message(conversation, client_id, "Is anyone there?")
    return sum('"preview"' in q["sql"] for q in captured.captured_queries)


async def test_it_builds_no_inbox_row_while_nobody_has_the_inbox_open(alice_conversation):
    count = database_sync_to_async(inbox_row_queries)

    assert await count(alice_conversation, "p-1") == 0


async def test_it_builds_the_row_once_an_agent_opens_the_inbox_and_stops_when_they_leave(
    alice_conversation, alice_agent
):
    count = database_sync_to_async(inbox_row_queries)
    agent = await agent_socket(alice_agent)

    assert await count(alice_conversation, "p-2") == 1

    await agent.disconnect()
    presence.forget_cached_presence()
    assert await count(alice_conversation, "p-3") == 0


async def test_it_counts_agents_not_sockets(alice_agent, bob_agent):
    tabs = [await agent_socket(alice_agent), await agent_socket(alice_agent)]
    bob = await agent_socket(bob_agent)

    assert await database_sync_to_async(presence.agents_online)() == 2

    await bob.disconnect()
    assert await database_sync_to_async(presence.agents_online)() == 1
    for tab in tabs:
        await tab.disconnect()
    assert await database_sync_to_async(presence.agents_online)() == 0


def test_a_socket_whose_process_died_lapses():
    # What a killed web process leaves: a membership nobody renews or removes.
    redis = sync_client()
    redis.zadd(presence._key(), {"7:gone-channel": time.time() - 1})

    assert presence.agents_online() == 0
    assert presence.anyone_present() is False


async def test_an_open_inbox_renews_its_presence(alice_agent, monkeypatch):
    monkeypatch.setattr(presence, "RENEW_S", 0.05)
    monkeypatch.setattr(presence, "LAPSE_S", 0.3)
    agent = await agent_socket(alice_agent)

    await asyncio.sleep(0.5)  # past the first lapse: only renewals keep it

    assert await database_sync_to_async(presence.agents_online)() == 1
    await agent.disconnect()
