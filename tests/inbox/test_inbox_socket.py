"""The agents' websocket /ws/inbox/ through the real ASGI stack and Redis channel layer."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from conversations import services as chat_services
from conversations.models import Conversation
from conversations.replies import write_reply
from inbox import services
from inbox import tasks as inbox_tasks
from tests import personas
from tests.conftest import open_chat, receive_until, reply_text
from tests.inbox.test_permissions import open_inbox, session_cookie

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent
pending = personas.pending

pytestmark = pytest.mark.django_db(transaction=True)


async def agent_socket(user) -> WebsocketCommunicator:
    cookie = await database_sync_to_async(session_cookie)(user)
    communicator = await open_inbox(cookie)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    hello = await communicator.receive_json_from(timeout=5)
    assert hello["type"] == "hello"
    return communicator


async def watch(agent: WebsocketCommunicator, conversation: Conversation) -> dict:
    await agent.send_json_to({"type": "watch", "conversation_id": str(conversation.pk)})
    return (await receive_until(agent, lambda f: f["type"] == "conversation"))[-1]


async def nothing_more(communicator: WebsocketCommunicator) -> None:
    """Nothing at all arrives within a short while (after the frames already read)."""
    assert await communicator.receive_nothing(timeout=0.5, interval=0.05)


async def test_it_shows_a_customer_message_in_the_inbox_live(alice_conversation, alice_agent):
    agent = await agent_socket(alice_agent)
    await agent.send_json_to({"type": "list"})
    listed = (await receive_until(agent, lambda f: f["type"] == "inbox"))[-1]
    # Opening the chat made a conversation, but nothing is written yet: no row (issue 17).
    assert listed["rows"] == [] and listed["next_cursor"] is None

    customer = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await customer.send_json_to({"type": "message", "client_id": "m-1", "text": "My lamp broke"})
    frames = await receive_until(
        agent, lambda f: f["type"] == "inbox.row" and f["row"]["preview"] == "My lamp broke"
    )
    row = frames[-1]["row"]
    assert row["id"] == str(alice_conversation.pk)
    assert row["unread"] == 1 and row["customer"] == "Alice"
    # With the bot (open): nobody waits for a person, so no waiting time.
    assert row["status"] == "open" and row["waiting_since"] is None
    await customer.disconnect()
    await agent.disconnect()


async def test_it_shows_other_agents_actions_in_the_inbox_live(pending, alice_agent, bob_agent):
    bob = await agent_socket(bob_agent)
    await database_sync_to_async(services.take_over)(pending.pk, alice_agent)
    frames = await receive_until(
        bob, lambda f: f["type"] == "inbox.row" and f["row"]["assignee"] is not None
    )
    assert frames[-1]["row"]["assignee"]["name"] == "Anna"
    await bob.disconnect()


async def test_it_streams_the_bots_reply_to_a_watching_agent(alice_conversation, alice_agent):
    agent = await agent_socket(alice_agent)
    snapshot = await watch(agent, alice_conversation)
    assert snapshot["id"] == str(alice_conversation.pk) and snapshot["notes"] == []
    posted = await database_sync_to_async(chat_services.post_customer_message)(
        alice_conversation, "m-2", "What is the meaning of life?"
    )
    # The test plays the worker: the reply streams to the conversation's group.
    await database_sync_to_async(write_reply, thread_sensitive=False)(posted.reply.pk)
    frames = await receive_until(agent, lambda f: f["type"] == "reply.done")
    assert any(f["type"] == "reply.start" for f in frames)
    assert any(f["type"] == "reply.delta" for f in frames)
    done = frames[-1]
    assert reply_text(frames, posted.reply.pk) == done["text"] and done["text"]
    await agent.disconnect()


async def test_it_sends_the_agents_typing_to_the_customer(pending, alice_agent):
    customer = await open_chat(pending.pk, pending.customer)
    agent = await agent_socket(alice_agent)
    await watch(agent, pending)
    await agent.send_json_to({"type": "typing", "conversation_id": str(pending.pk), "active": True})
    frames = await receive_until(customer, lambda f: f["type"] == "typing")
    assert frames[-1] == {"type": "typing", "author": "agent", "name": "Anna", "active": True}
    await agent.send_json_to({"type": "typing", "conversation_id": str(pending.pk), "active": 1})
    error = (await receive_until(agent, lambda f: f["type"] == "error"))[-1]
    assert error["code"] == "bad_frame"
    await customer.disconnect()
    await agent.disconnect()


async def test_it_sends_notes_to_watching_agents_only(pending, alice_agent, bob_agent):
    customer = await open_chat(pending.pk, pending.customer)
    bob = await agent_socket(bob_agent)
    await watch(bob, pending)
    await database_sync_to_async(services.add_note)(pending.pk, alice_agent, "Refund approved")
    frames = await receive_until(bob, lambda f: f["type"] == "note")
    assert frames[-1]["note"]["text"] == "Refund approved"
    assert frames[-1]["note"]["author_name"] == "Anna"
    again = await watch(bob, pending)
    assert [n["text"] for n in again["notes"]] == ["Refund approved"]
    await nothing_more(customer)
    await customer.disconnect()
    await bob.disconnect()


async def test_it_sends_an_assist_result_to_the_requesting_agent_only(
    pending, alice_agent, bob_agent
):
    customer = await open_chat(pending.pk, pending.customer)
    alice = await agent_socket(alice_agent)
    bob = await agent_socket(bob_agent)
    # The task body, as a worker runs it.
    await database_sync_to_async(inbox_tasks.assist, thread_sensitive=False)(
        str(pending.pk), alice_agent.pk, "summary"
    )
    frames = await receive_until(alice, lambda f: f["type"] == "assist")
    assert frames[-1]["kind"] == "summary"
    assert frames[-1]["text"].startswith("Latest problem: Where is my parcel?")
    await nothing_more(bob)
    await nothing_more(customer)
    await customer.disconnect()
    await alice.disconnect()
    await bob.disconnect()
