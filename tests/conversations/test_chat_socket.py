"""The customer's websocket through the real ASGI stack and the real Redis channel layer."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from django.test import override_settings

from conversations import services
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from tests.conftest import open_chat, receive_until, reply_text

pytestmark = pytest.mark.django_db(transaction=True)


def turns_of(conversation: Conversation) -> list[Turn]:
    return list(conversation.turns.order_by("id"))


async def test_it_acknowledges_a_message_only_after_storing_it(alice_conversation):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "message", "client_id": "c-1", "text": "Where is my order?"})
    ack = (await receive_until(chat, lambda f: f["type"] == "ack"))[-1]

    turns = await database_sync_to_async(turns_of)(alice_conversation)
    customer_turn, reply = turns
    assert ack == {
        "type": "ack",
        "client_id": "c-1",
        "turn_id": customer_turn.pk,
        "reply_id": reply.pk,
        "duplicate": False,
    }
    assert customer_turn.text == "Where is my order?"
    assert (reply.author, reply.status, reply.reply_to_id) == ("bot", "queued", customer_turn.pk)
    await chat.disconnect()


async def test_it_stores_one_turn_and_one_reply_when_a_client_id_is_sent_twice(alice_conversation):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    frame = {"type": "message", "client_id": "same-id", "text": "Hello there"}
    await chat.send_json_to(frame)
    first = (await receive_until(chat, lambda f: f["type"] == "ack"))[-1]
    await chat.send_json_to(frame)
    second = (await receive_until(chat, lambda f: f["type"] == "ack"))[-1]

    assert second == {**first, "duplicate": True}
    turns = await database_sync_to_async(turns_of)(alice_conversation)
    assert [t.author for t in turns] == ["customer", "bot"]
    await chat.disconnect()


async def test_it_sends_the_history_on_connect_oldest_first(alice_conversation):
    await database_sync_to_async(services.post_customer_message)(
        alice_conversation, "h-1", "first question"
    )
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    turns = chat.snapshot["turns"]
    assert [(t["author"], t["text"], t["status"]) for t in turns] == [
        ("customer", "first question", None),
        ("bot", "", "queued"),
    ]
    assert turns[0]["client_id"] == "h-1"
    await chat.disconnect()


BAD_FRAMES = [
    pytest.param("not json at all", "bad_json", id="malformed-json"),
    pytest.param("[1, 2, 3]", "bad_json", id="json-but-not-an-object"),
    pytest.param('{"text": "no type"}', "bad_json", id="no-type"),
    pytest.param('{"type": "launch_missiles"}', "unknown_type", id="unknown-type"),
    pytest.param('{"type": "message", "client_id": "e", "text": "   "}', "empty_text", id="empty"),
    pytest.param('{"type": "message", "client_id": "e"}', "empty_text", id="no-text"),
    pytest.param('{"type": "message", "client_id": "e", "text": 42}', "empty_text", id="not-text"),
    pytest.param('{"type": "message", "text": "hi"}', "bad_client_id", id="no-client-id"),
    pytest.param(
        '{"type": "message", "client_id": "<script>", "text": "hi"}',
        "bad_client_id",
        id="client-id-with-markup",
    ),
    pytest.param(
        json.dumps({"type": "message", "client_id": "long", "text": "x" * 4001}),
        "too_long",
        id="text-over-4000-chars",
    ),
    pytest.param(
        '{"type": "message", "client_id": "' + "n" * 64 + '\\n", "text": "hi"}',
        "bad_client_id",
        id="client-id-with-a-trailing-newline",
    ),
    pytest.param("[" * 1100 + "]" * 1100, "bad_json", id="json-nested-1100-deep"),
    pytest.param(
        '{"type": "message", "client_id": "d", "text": ' + "[" * 1100 + "]" * 1100 + "}",
        "bad_json",
        id="json-nested-1100-deep-inside-an-object",
    ),
    pytest.param(
        '{"type": "message", "client_id": "s", "text": "x\\ud800y"}',
        "bad_text",
        id="text-with-a-lone-surrogate",
    ),
    pytest.param(
        '{"type": "rate", "score": 5, "comment": "x\\udfffy"}',
        "bad_comment",
        id="comment-with-a-lone-surrogate",
    ),
    pytest.param(
        '{"type": "contact", "email": "a\\ud800@example.com"}',
        "bad_email",
        id="email-with-a-lone-surrogate",
    ),
    pytest.param('{"type": "resume", "reply_id": "x"}', "bad_resume", id="bad-resume"),
    pytest.param(
        '{"type": "resume", "reply_id": 999999, "after": 0}', "unknown_reply", id="unknown-reply"
    ),
]


@pytest.mark.parametrize(("raw", "code"), BAD_FRAMES)
async def test_it_answers_bad_frames_with_a_clear_error_and_stores_nothing(
    alice_conversation, raw, code
):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_to(text_data=raw)
    error = await chat.receive_json_from(timeout=5)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"] and "Traceback" not in error["message"]
    assert await database_sync_to_async(turns_of)(alice_conversation) == []
    # The socket stays usable after a bad frame.
    await chat.send_json_to({"type": "ping"})
    assert await chat.receive_json_from(timeout=5) == {"type": "pong"}
    await chat.disconnect()


async def test_it_accepts_a_message_of_exactly_the_limit(alice_conversation):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "message", "client_id": "max", "text": "y" * 4000})
    ack = (await receive_until(chat, lambda f: f["type"] in ("ack", "error")))[-1]
    assert ack["type"] == "ack"
    await chat.disconnect()


async def test_it_closes_the_socket_on_an_oversize_frame(alice_conversation):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_to(
        text_data=json.dumps({"type": "message", "client_id": "big", "text": "z" * 40_000})
    )
    error = await chat.receive_json_from(timeout=5)
    assert error["code"] == "frame_too_large"
    assert (await chat.receive_output(timeout=5))["code"] == 1009
    assert await database_sync_to_async(turns_of)(alice_conversation) == []


async def test_it_refuses_binary_frames(alice_conversation):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_to(bytes_data=b"\x00\x01")
    assert (await chat.receive_json_from(timeout=5))["code"] == "bad_frame"
    await chat.disconnect()


async def test_it_never_lets_bob_into_alices_conversation(alice_conversation, bob):
    await database_sync_to_async(services.post_customer_message)(
        alice_conversation, "secret", "my card number is 4242"
    )
    chat = await open_chat(alice_conversation.pk, bob, expect_snapshot=False)
    error = await chat.receive_json_from(timeout=5)
    assert error == {
        "type": "error",
        "code": "forbidden",
        "message": "This conversation is not yours.",
    }
    assert (await chat.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4403}


@pytest.mark.parametrize(
    "conversation_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "1%27%20OR%201=1"]
)
async def test_it_closes_unknown_conversations_with_4404(alice, conversation_id):
    chat = await open_chat(conversation_id, alice, expect_snapshot=False)
    assert (await chat.receive_json_from(timeout=5))["code"] == "not_found"
    assert (await chat.receive_output(timeout=5))["code"] == 4404


async def test_it_closes_sockets_without_a_visitor_cookie_with_4401(alice_conversation):
    chat = await open_chat(alice_conversation.pk, None, expect_snapshot=False)
    assert (await chat.receive_json_from(timeout=5))["code"] == "unauthenticated"
    assert (await chat.receive_output(timeout=5))["code"] == 4401


async def test_it_closes_sockets_with_a_forged_visitor_cookie(alice_conversation):
    from channels.testing import WebsocketCommunicator

    from support_bot.asgi import application

    forged = f"sb_visitor={alice_conversation.customer_id}:forged-signature".encode()
    chat = WebsocketCommunicator(
        application,
        f"/ws/chat/{alice_conversation.pk}/",
        [(b"origin", b"http://127.0.0.1"), (b"cookie", forged)],
    )
    assert (await chat.connect())[0]
    assert (await chat.receive_json_from(timeout=5))["code"] == "unauthenticated"


@pytest.mark.parametrize("origin", ["http://evil.example", None])
async def test_it_rejects_sockets_from_foreign_or_missing_origins(alice_conversation, origin):
    from channels.testing import WebsocketCommunicator

    from support_bot.asgi import application
    from tests.conftest import visitor_cookie_header

    headers = [(b"cookie", visitor_cookie_header(alice_conversation.customer))]
    if origin:
        headers.append((b"origin", origin.encode()))
    chat = WebsocketCommunicator(application, f"/ws/chat/{alice_conversation.pk}/", headers)
    connected, _ = await chat.connect()
    assert not connected


# --- A new visitor: nothing stored until they write -------------------------------------------


def new_visitor() -> Customer:
    """A visitor whose page set their cookie: no row yet (only its id is used)."""
    return Customer(pk=services.new_visitor_id())


async def open_next_chat(visitor: Customer):
    conversation_id = await database_sync_to_async(services.page_conversation_id)(visitor.pk)
    return conversation_id, await open_chat(conversation_id, visitor)


async def test_a_new_visitors_socket_opens_their_next_conversation_without_storing_it():
    visitor = new_visitor()
    _conversation_id, chat = await open_next_chat(visitor)
    assert chat.snapshot["turns"] == [] and chat.snapshot["status"] == "open"
    assert not await Customer.objects.aexists() and not await Conversation.objects.aexists()
    await chat.disconnect()


async def test_a_new_visitors_first_message_stores_them_and_their_conversation():
    visitor = new_visitor()
    conversation_id, chat = await open_next_chat(visitor)
    await chat.send_json_to({"type": "message", "client_id": "n-1", "text": "Hi there"})
    ack = (await receive_until(chat, lambda f: f["type"] == "ack"))[-1]
    conversation = await Conversation.objects.aget(pk=conversation_id)
    assert conversation.customer_id == visitor.pk
    turn = await Turn.objects.aget(pk=ack["turn_id"])
    assert (turn.conversation_id, turn.text) == (conversation.pk, "Hi there")
    # The page's socket after a reload finds it stored, with the message.
    await chat.disconnect()
    again = await open_chat(conversation_id, visitor)
    assert [t["text"] for t in again.snapshot["turns"]][:1] == ["Hi there"]
    await again.disconnect()


async def test_a_visitor_cannot_open_a_made_up_conversation_or_someone_elses_next_one():
    mine, theirs = new_visitor(), new_visitor()
    their_next = await database_sync_to_async(services.page_conversation_id)(theirs.pk)
    for conversation_id in (their_next, services.new_visitor_id()):
        chat = await open_chat(conversation_id, mine, expect_snapshot=False)
        refusal = await chat.receive_json_from(timeout=5)
        assert refusal["code"] == "not_found"
        await chat.disconnect()


@override_settings(CHAT_NEW_CONVERSATIONS_PER_IP="2/60")
async def test_visitors_from_one_address_share_a_budget_for_starting_conversations():
    answers = []
    for i in range(3):
        _conversation_id, chat = await open_next_chat(new_visitor())
        await chat.send_json_to({"type": "message", "client_id": f"v-{i}", "text": "Hello"})
        answers.append((await receive_until(chat, lambda f: f["type"] in ("ack", "error")))[-1])
        await chat.disconnect()
    assert [a["type"] for a in answers] == ["ack", "ack", "error"]
    assert answers[2]["code"] == "rate_limited" and answers[2]["client_id"] == "v-2"
    assert await Conversation.objects.acount() == 2 and await Customer.objects.acount() == 2


@override_settings(CHAT_IP_RATE_LIMIT="3/60")
async def test_visitors_from_one_address_share_a_message_budget(alice_conversation, bob):
    bobs = await Conversation.objects.acreate(customer=bob)
    alices = await open_chat(alice_conversation.pk, alice_conversation.customer)
    bobs_chat = await open_chat(bobs.pk, bob)
    answers = []
    for i, chat in enumerate((alices, bobs_chat, alices, bobs_chat)):
        await chat.send_json_to({"type": "message", "client_id": f"ip-{i}", "text": f"hi {i}"})
        answers.append((await receive_until(chat, lambda f: f["type"] in ("ack", "error")))[-1])
    assert [a["type"] for a in answers] == ["ack", "ack", "ack", "error"]
    assert answers[3]["code"] == "rate_limited"
    await alices.disconnect()
    await bobs_chat.disconnect()


@override_settings(CHAT_RATE_LIMIT="3/60")
async def test_it_rate_limits_a_flood_of_messages(alice_conversation):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    for i in range(5):
        await chat.send_json_to({"type": "message", "client_id": f"f-{i}", "text": f"spam {i}"})
    answers = []
    while len(answers) < 5:
        frame = await chat.receive_json_from(timeout=5)
        if frame["type"] in ("ack", "error"):
            answers.append(frame)
    assert [a["type"] for a in answers] == ["ack", "ack", "ack", "error", "error"]
    assert answers[3]["code"] == "rate_limited" and answers[3]["client_id"] == "f-3"
    assert "wait" in answers[3]["message"]
    turns = await database_sync_to_async(turns_of)(alice_conversation)
    assert sum(t.author == "customer" for t in turns) == 3
    await chat.disconnect()


@override_settings(CHAT_RATE_LIMIT="2/60")
async def test_it_acknowledges_a_re_sent_message_as_a_duplicate_while_rate_limited(
    alice_conversation,
):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    answers = []
    for client_id in ("r-1", "r-2", "r-3", "r-1"):
        await chat.send_json_to({"type": "message", "client_id": client_id, "text": client_id})
        answers.append((await receive_until(chat, lambda f: f["type"] in ("ack", "error")))[-1])
    assert [a["type"] for a in answers] == ["ack", "ack", "error", "ack"]
    assert answers[2]["code"] == "rate_limited"
    # The page re-sends what it saw no ack for: the stored message is acknowledged again.
    assert answers[3] == {**answers[0], "duplicate": True}
    turns = await database_sync_to_async(turns_of)(alice_conversation)
    assert sum(t.author == "customer" for t in turns) == 2
    await chat.disconnect()


# --- Replies: streamed to every socket of the conversation, resumable --------------------------


def write_reply_like_a_worker(reply_id: int) -> None:
    """Stand-in for the Celery worker: the same service function, in its own thread."""
    from django.db import connection

    try:
        write_reply(reply_id)
    finally:
        connection.close()


async def post_and_write_reply(conversation: Conversation, text: str, client_id: str) -> Turn:
    posted = await database_sync_to_async(services.post_customer_message)(
        conversation, client_id, text
    )
    assert posted.reply is not None
    await asyncio.to_thread(write_reply_like_a_worker, posted.reply.pk)
    return await database_sync_to_async(Turn.objects.get)(pk=posted.reply.pk)


@pytest.fixture
def demo_kb(transactional_db):
    from django.core.management import call_command

    call_command("load_demo_kb", verbosity=0)


async def test_it_streams_a_reply_to_every_open_socket_of_the_conversation(
    alice_conversation, demo_kb
):
    first = await open_chat(alice_conversation.pk, alice_conversation.customer)
    second = await open_chat(alice_conversation.pk, alice_conversation.customer)
    reply = await post_and_write_reply(alice_conversation, "How do I return an item?", "r-1")

    for chat in (first, second):
        frames = await receive_until(chat, lambda f: f["type"] == "reply.done")
        deltas = [f for f in frames if f["type"] == "reply.delta"]
        assert len(deltas) >= 2, "the reply should arrive in pieces, not at once"
        assert [f["seq"] for f in frames if "seq" in f] == list(range(1, len(deltas) + 3))
        assert reply_text(frames, reply.pk) == reply.text
        assert "".join(d["text"] for d in deltas) == reply.text
        done = frames[-1]
        assert done["status"] == "done" and done["sources"]
        await chat.disconnect()
    assert reply.status == "done" and reply.sources


async def test_it_resumes_a_reply_after_a_dropped_socket_without_losing_or_doubling_text(
    alice_conversation, demo_kb, settings
):
    settings.OFFLINE_WORD_DELAY_MS = 15
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    posted = await database_sync_to_async(services.post_customer_message)(
        alice_conversation, "d-1", "How long does shipping take?"
    )
    writing = asyncio.create_task(asyncio.to_thread(write_reply_like_a_worker, posted.reply.pk))

    seen = await receive_until(chat, lambda f: f["type"] == "reply.delta" and f["seq"] >= 3)
    await chat.disconnect()  # the customer's train enters a tunnel
    last_seq = max(f["seq"] for f in seen if f.get("reply_id") == posted.reply.pk)
    await asyncio.sleep(0.2)

    again = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await again.send_json_to({"type": "resume", "reply_id": posted.reply.pk, "after": last_seq})
    rest = await receive_until(again, lambda f: f["type"] == "reply.done")
    await writing

    assert min(f["seq"] for f in rest if "seq" in f) == last_seq + 1
    stored = await database_sync_to_async(Turn.objects.get)(pk=posted.reply.pk)
    # A frame may come both live and from the replay: the client keeps each seq once.
    by_seq = {f["seq"]: f for f in seen + rest if f.get("reply_id") == stored.pk}
    assert sorted(by_seq) == list(range(1, max(by_seq) + 1)), "no seq may be missing"
    deltas = [by_seq[s]["text"] for s in sorted(by_seq) if by_seq[s]["type"] == "reply.delta"]
    assert "".join(deltas) == stored.text
    assert reply_text(seen + rest, stored.pk) == stored.text
    await again.disconnect()


async def test_it_answers_a_resume_with_the_stored_reply_once_the_log_has_expired(
    alice_conversation, demo_kb
):
    from support_bot.redis_clients import key, sync_client

    reply = await post_and_write_reply(alice_conversation, "How do I reset my password?", "x-1")
    sync_client().delete(key("reply", reply.pk))
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "resume", "reply_id": reply.pk, "after": 4})
    done = await chat.receive_json_from(timeout=5)
    assert done["type"] == "reply.done" and done["text"] == reply.text and done["seq"] == 5
    await chat.disconnect()


async def test_it_refuses_to_resume_another_conversations_reply(alice_conversation, bob, demo_kb):
    reply = await post_and_write_reply(alice_conversation, "How do I reset my password?", "p-1")
    bobs = await database_sync_to_async(Conversation.objects.create)(customer=bob)
    chat = await open_chat(bobs.pk, bob)
    await chat.send_json_to({"type": "resume", "reply_id": reply.pk, "after": 0})
    error = await chat.receive_json_from(timeout=5)
    assert error["code"] == "unknown_reply"
    await chat.disconnect()


async def test_it_tells_other_sockets_about_a_new_customer_message(alice_conversation):
    watcher = await open_chat(alice_conversation.pk, alice_conversation.customer)
    writer = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await writer.send_json_to({"type": "message", "client_id": "t-1", "text": "<b>hi</b>"})
    frames = await receive_until(watcher, lambda f: f["type"] == "turn")
    assert frames[-1]["turn"]["text"] == "<b>hi</b>"  # raw text: the page escapes it
    assert frames[-1]["turn"]["client_id"] == "t-1"
    await watcher.disconnect()
    await writer.disconnect()


def test_it_handles_a_message_in_the_same_number_of_queries_however_long_the_conversation(
    db, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    customer = Customer.objects.create()
    short = Conversation.objects.create(customer=customer)
    long = Conversation.objects.create(customer=customer)
    for i in range(60):
        Turn.objects.create(
            conversation=long, author="customer", text=f"q{i}", client_message_id=f"old-{i}"
        )

    def count(conversation: Conversation, client_id: str) -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            services.post_customer_message(conversation, client_id, "hello")
        return len(queries)

    count(short, "warm-up")  # the process's configuration cache loads the escalation rules
    assert count(short, "n-1") == count(long, "n-2")
    # The turn, the conversation's row (read fresh, then updated), the reply, and after commit
    # the agents' inbox row (the escalation rules come from the configuration cache).
    with django_assert_max_num_queries(9):
        services.post_customer_message(long, "n-3", "hello again")


async def test_the_cookie_the_chat_page_sets_opens_that_visitors_socket():
    from channels.testing import WebsocketCommunicator
    from django.test import AsyncClient

    from support_bot.asgi import application

    page = await AsyncClient().get("/chat/")
    cookie = page.cookies[settings.CHAT_VISITOR_COOKIE]
    conversation_id = page.context["conversation_id"]
    chat = WebsocketCommunicator(
        application,
        f"/ws/chat/{conversation_id}/",
        [(b"origin", b"http://127.0.0.1"), (b"cookie", f"{cookie.key}={cookie.value}".encode())],
    )
    assert (await chat.connect())[0]
    snapshot = await chat.receive_json_from(timeout=5)
    assert snapshot == {
        "type": "conversation",
        "id": conversation_id,
        "status": "open",
        "state": {
            "status": "open",
            "assignee_name": None,
            "escalation_reason": None,
            "needs_email": False,
            "rating_requested": False,
            "rated": False,
        },
        "turns": [],
    }
    await chat.disconnect()


async def test_it_answers_the_pages_heartbeat_as_the_page_sends_it(alice_conversation):
    """chat.js pings every 4 s (docs/protocol.md#heartbeat): its exact frame, answered before
    any parsing, and any other spelling of a ping the same way."""
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    for raw in ('{"type":"ping"}', '{"type":"ping"}', '{ "type" : "ping" }'):
        await chat.send_to(text_data=raw)
        assert await chat.receive_json_from(timeout=5) == {"type": "pong"}
    assert await chat.receive_nothing(timeout=0.3)
    await chat.disconnect()


def _borrowed_from_the_pool() -> int:
    stats = connection.pool.get_stats()
    return int(stats["pool_size"] - stats["pool_available"])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a pool is the production path's")
async def test_a_socket_test_gives_back_the_connections_its_consumer_borrowed(alice_conversation):
    borrowed = _borrowed_from_the_pool()  # the test's own
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "message", "client_id": "c-1", "text": "Where is my order?"})
    await receive_until(chat, lambda f: f["type"] == "ack")
    await chat.disconnect()

    # The consumer stored the message on threads of its own, which close their connections
    # after each call, as in production (tests/conftest.py).
    assert _borrowed_from_the_pool() == borrowed


async def test_it_forwards_reply_frames_and_answers_pings_without_a_trip_to_a_thread(
    alice_conversation, monkeypatch
):
    # Channels closes stale database connections on a thread before each handler (~0.2 ms of
    # CPU); a reply's pieces and the page's heartbeat need no database, and skip it.
    import channels.consumer
    from channels.layers import get_channel_layer

    from conversations import events

    hops: list[str] = []
    close_on_a_thread = channels.consumer.aclose_old_connections

    async def counted() -> None:
        hops.append("hop")
        await close_on_a_thread()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    before = len(hops)

    await chat.send_to(text_data='{"type":"ping"}')  # exactly as the pages send it
    assert await chat.receive_json_from(timeout=5) == {"type": "pong"}
    group = events.conversation_group(alice_conversation.pk)
    for piece in ("Deliveries ", "take ", "two days."):
        frame = {"type": "reply.delta", "reply_id": 1, "seq": 1, "text": piece}
        await get_channel_layer().group_send(group, events.group_message(frame))
    pieces = [(await chat.receive_json_from(timeout=5))["text"] for _ in range(3)]
    assert "".join(pieces) == "Deliveries take two days."
    assert len(hops) == before

    # Any other frame may reach the database, and still goes Channels' way.
    await chat.send_to(text_data='{"type": "resume", "reply_id": "x"}')
    assert (await chat.receive_json_from(timeout=5))["code"] == "bad_resume"
    assert len(hops) == before + 1
    await chat.disconnect()
