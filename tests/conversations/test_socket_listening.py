"""A web process whose sockets have all closed still reads its channel layer: the next
socket's frames are read as they come (conversations/sockets.py, keep_listening).

channels_redis's pubsub layer looks at its Redis connection only while it is subscribed to
something, and with nothing subscribed it looks again every 0.1 s; the bench's one customer at
a time saw `reply.start` 60-90 ms late on every fresh socket until each event loop's layer kept
one channel subscribed (docs/performance.md, stop 34). Against the tests' real Redis."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from conversations import events, sockets
from support_bot import redis_clients
from tests.conftest import receive_until
from tests.conversations.test_chat_context import chat_socket, next_conversation_id

next_conversation = database_sync_to_async(next_conversation_id)


def listening_channels() -> set[str]:
    pattern = get_channel_layer().prefix + "listening.*"
    return set(redis_clients.sync_client().pubsub_channels(pattern))


def subscribers(channel: str) -> int:
    [(_, count)] = redis_clients.sync_client().pubsub_numsub(channel)
    return int(count)


@pytest.mark.django_db(transaction=True)
async def test_it_keeps_listening_after_its_last_socket_closes(alice, bob):
    before = listening_channels()
    first = await chat_socket(alice, await next_conversation(alice))
    await first.disconnect()

    # The socket's join subscribed this event loop's layer to a channel of its own, and it
    # stays subscribed with no socket open.
    [listening] = listening_channels() - before
    assert subscribers(listening) == 1
    assert await sockets.keep_listening(get_channel_layer()) == listening

    conversation_id = await next_conversation(bob)
    second = await chat_socket(bob, conversation_id)
    try:
        # Published from a worker's side (a thread, the sync client), as reply frames are.
        frame = {"type": "reply.start", "reply_id": 1, "seq": 1}
        await asyncio.to_thread(events.publish, events.conversation_group(conversation_id), frame)
        [received] = await receive_until(second, lambda f: f["type"] == "reply.start", timeout=5)
        assert received == frame
    finally:
        await second.disconnect()
    assert await sockets.keep_listening(get_channel_layer()) == listening  # one per event loop


@pytest.mark.django_db(transaction=True)
async def test_sockets_connecting_together_share_one_listening_channel(alice, bob):
    layer = get_channel_layer()
    names = await asyncio.gather(*(sockets.keep_listening(layer) for _ in range(5)))
    assert len(set(names)) == 1 and subscribers(names[0]) == 1
