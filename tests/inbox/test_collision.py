"""Collision detection over /ws/inbox/ (issue 17.3): agents watching a conversation see who
else views it and types in it; a customer's socket never does; a viewer who leaves or whose
socket closes disappears at once, and one whose process died lapses."""

from __future__ import annotations

import asyncio

import pytest

from inbox import presence, viewers
from tests import personas
from tests.conftest import open_chat, receive_until
from tests.inbox.test_inbox_socket import agent_socket, nothing_more, watch

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent
pending = personas.pending

pytestmark = pytest.mark.django_db(transaction=True)


def viewers_frame(conversation):
    return lambda f: f["type"] == "viewers" and f["conversation_id"] == str(conversation.pk)


async def test_it_shows_each_agent_who_else_is_viewing_and_drops_one_who_disconnects(
    pending, alice_agent, bob_agent
):
    customer = await open_chat(pending.pk, pending.customer)
    bob = await agent_socket(bob_agent)
    await watch(bob, pending)
    seen = await receive_until(bob, viewers_frame(pending))
    assert seen[-1]["viewers"] == [{"id": bob_agent.pk, "name": "Bob"}]

    anna = await agent_socket(alice_agent)
    await watch(anna, pending)
    both = [{"id": alice_agent.pk, "name": "Anna"}, {"id": bob_agent.pk, "name": "Bob"}]
    assert (await receive_until(bob, viewers_frame(pending)))[-1]["viewers"] == both
    assert (await receive_until(anna, viewers_frame(pending)))[-1]["viewers"] == both

    await anna.disconnect()
    left = await receive_until(bob, viewers_frame(pending))
    assert left[-1]["viewers"] == [{"id": bob_agent.pk, "name": "Bob"}]
    await nothing_more(customer)
    await customer.disconnect()
    await bob.disconnect()


async def test_it_drops_a_viewer_who_opens_another_conversation(pending, alice_agent, bob_agent):
    from conversations.models import Conversation

    other = await Conversation.objects.acreate(customer=pending.customer, status="pending")
    bob = await agent_socket(bob_agent)
    await watch(bob, pending)
    anna = await agent_socket(alice_agent)
    await watch(anna, pending)
    await receive_until(bob, lambda f: f["type"] == "viewers" and len(f["viewers"]) == 2)

    await watch(anna, other)

    left = await receive_until(bob, viewers_frame(pending))
    assert left[-1]["viewers"] == [{"id": bob_agent.pk, "name": "Bob"}]
    await anna.disconnect()
    await bob.disconnect()


async def test_it_tells_the_other_agents_who_types_a_reply_or_a_note_never_the_customer(
    pending, alice_agent, bob_agent
):
    customer = await open_chat(pending.pk, pending.customer)
    bob = await agent_socket(bob_agent)
    await watch(bob, pending)
    anna = await agent_socket(alice_agent)
    await watch(anna, pending)
    typing = {"type": "typing", "conversation_id": str(pending.pk), "active": True}

    await anna.send_json_to({**typing, "where": "note"})
    frames = await receive_until(bob, lambda f: f["type"] == "agent.typing")
    assert frames[-1] == {
        "type": "agent.typing",
        "conversation_id": str(pending.pk),
        "agent": {"id": alice_agent.pk, "name": "Anna"},
        "where": "note",
        "active": True,
    }
    await nothing_more(customer)  # a note being written is the team's business

    await anna.send_json_to(typing)  # a reply: the customer sees it coming too
    frames = await receive_until(bob, lambda f: f["type"] == "agent.typing")
    assert frames[-1]["where"] == "reply" and frames[-1]["active"] is True
    to_customer = await receive_until(customer, lambda f: f["type"] == "typing")
    assert to_customer[-1] == {"type": "typing", "author": "agent", "name": "Anna", "active": True}
    assert all(f["type"] not in ("agent.typing", "viewers") for f in to_customer)

    await anna.send_json_to({**typing, "where": "subject"})
    error = (await receive_until(anna, lambda f: f["type"] == "error"))[-1]
    assert error["code"] == "bad_frame"
    await customer.disconnect()
    await anna.disconnect()
    await bob.disconnect()


async def test_a_viewer_whose_socket_died_lapses_and_a_watching_socket_stays(
    pending, alice_agent, bob_agent, monkeypatch
):
    monkeypatch.setattr(presence, "RENEW_S", 0.05)
    monkeypatch.setattr(presence, "LAPSE_S", 0.3)
    # What a killed web process leaves behind: a watch nobody renews or removes.
    await viewers.arrive(pending.pk, bob_agent.pk, "Bob", "gone-channel")
    anna = await agent_socket(alice_agent)
    await watch(anna, pending)

    await asyncio.sleep(0.6)  # past the lapse: only the open socket's renewals keep it

    assert await viewers.viewers(pending.pk) == [{"id": alice_agent.pk, "name": "Anna"}]
    await anna.disconnect()
    assert await viewers.viewers(pending.pk) == []


async def test_watching_a_conversation_that_does_not_exist_leaves_no_viewer(alice_agent):
    import uuid

    anna = await agent_socket(alice_agent)
    missing = uuid.uuid4()
    await anna.send_json_to({"type": "watch", "conversation_id": str(missing)})
    error = (await receive_until(anna, lambda f: f["type"] == "error"))[-1]

    assert error["code"] == "not_found"
    assert await viewers.viewers(missing) == []
    await anna.disconnect()
