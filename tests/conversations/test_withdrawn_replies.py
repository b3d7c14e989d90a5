"""A reply queued for the bot, when the conversation goes to a person (asked for, taken over,
assigned) before a worker claims it: withdrawn, never written, never shown, never fed to a
model, and the customer's page stops waiting for it."""

from __future__ import annotations

import asyncio
import json

import pytest

from conversations import services
from conversations.escalation import escalate
from conversations.events import ReplyPublisher
from conversations.models import Conversation, Turn
from conversations.replies import write_reply
from conversations.selectors import conversation_snapshot
from conversations.transcript import transcript_turns
from inbox import assist
from inbox import services as inbox_services
from inbox.exports import csv_lines, jsonl_lines
from support_bot.redis_clients import key, sync_client
from tests import personas
from tests.conftest import open_chat, receive_until

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent


def ask(conversation: Conversation, text: str = "Where is my parcel?") -> Turn:
    posted = services.post_customer_message(conversation, f"c-{Turn.objects.count()}", text)
    assert posted.reply is not None and posted.reply.status == "queued"
    return posted.reply


def frames_of(reply: Turn) -> list[dict]:
    return [json.loads(f["f"]) for _id, f in sync_client().xrange(key("reply", reply.pk))]


def assert_withdrawn(reply: Turn, model) -> None:
    reply.refresh_from_db()
    assert (reply.status, reply.text) == ("withdrawn", "")
    assert reply.finished_at is not None and reply.attempt == 1
    assert model.requests() == [], "no provider may be asked"
    frames = frames_of(reply)
    assert [(f["type"], f["seq"], f["status"]) for f in frames] == [("reply.done", 1, "withdrawn")]
    assert frames[0]["reply_id"] == reply.pk and frames[0]["text"] == ""


@pytest.mark.django_db
def test_it_withdraws_a_queued_reply_when_the_customer_asked_for_a_person_before_a_worker_claimed_it(  # noqa: E501
    model, alice_conversation, caplog
):
    reply = ask(alice_conversation)
    assert escalate(alice_conversation, "customer_request")

    with caplog.at_level("INFO", logger="conversations.services"):
        write_reply(reply.pk)

    assert_withdrawn(reply, model)
    assert any("withdrawn" in r.getMessage() for r in caplog.records)
    write_reply(reply.pk)  # a redelivered task changes nothing
    assert len(frames_of(reply)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["take_over", "assign"])
def test_it_withdraws_a_queued_reply_when_an_agent_took_the_conversation_before_a_worker_claimed_it(  # noqa: E501
    model, alice_conversation, alice_agent, bob_agent, action
):
    reply = ask(alice_conversation)
    if action == "take_over":
        inbox_services.take_over(alice_conversation.pk, alice_agent)
    else:
        inbox_services.assign(alice_conversation.pk, alice_agent, bob_agent.pk)

    write_reply(reply.pk)

    assert_withdrawn(reply, model)


@pytest.mark.django_db
def test_it_leaves_a_withdrawn_reply_out_of_the_next_prompt_the_exports_and_the_assist_transcript(  # noqa: E501
    model, alice_conversation, alice_agent
):
    withdrawn = ask(alice_conversation, "Where is my parcel?")
    inbox_services.take_over(alice_conversation.pk, alice_agent)
    write_reply(withdrawn.pk)
    assert Turn.objects.get(pk=withdrawn.pk).status == "withdrawn"
    inbox_services.hand_back_to_bot(alice_conversation.pk, alice_agent)
    conversation = Conversation.objects.get(pk=alice_conversation.pk)
    assert conversation.bot_answers

    answered = ask(conversation, "Do you ship to Norway?")
    write_reply(answered.pk)
    assert Turn.objects.get(pk=answered.pk).status == "done"

    # The next prompt: both questions, and no (empty) assistant turn for the withdrawn reply.
    messages = model.requests()[-1]["body"]["messages"]
    assert [m["role"] for m in messages[1:]] == ["user", "user"]
    assert [m["content"] for m in messages[1:]] == [
        "Where is my parcel?",
        "Do you ship to Norway?",
    ]

    selected = Conversation.objects.filter(pk=conversation.pk)
    rows = "".join(csv_lines(selected)).splitlines()[1:]
    exported_ids = {int(line.split(",")[7]) for line in rows}
    assert answered.pk in exported_ids and withdrawn.pk not in exported_ids
    record = json.loads("".join(jsonl_lines(selected)))
    message_ids = [m["id"] for m in record["messages"]]
    assert answered.pk in message_ids and withdrawn.pk not in message_ids
    assert "withdrawn" not in {m["status"] for m in record["messages"]}

    assist_ids = assist.read_conversation(conversation).ids
    assert answered.pk in assist_ids and withdrawn.pk not in assist_ids

    # The agent's view leaves it out; the customer's snapshot keeps it, marked withdrawn, so a
    # page that missed the frame hides its placeholder on reconnect.
    agent_view = inbox_services.conversation_for_agent(conversation.pk)
    assert withdrawn.pk not in [t["id"] for t in agent_view["turns"]]
    customer_view = conversation_snapshot(conversation)
    assert {t["id"]: t["status"] for t in customer_view["turns"]}[withdrawn.pk] == "withdrawn"

    admin_ids = [turn.pk for turn in transcript_turns(conversation)]
    assert answered.pk in admin_ids and withdrawn.pk not in admin_ids


def _write_reply_like_a_worker(reply_id: int) -> None:
    from django.db import connection

    try:
        write_reply(reply_id)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
async def test_it_tells_the_customers_page_a_withdrawn_reply_is_done_without_starting_it(
    model, alice_conversation
):
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "message", "client_id": "w-1", "text": "Where is my parcel?"})
    ack = (await receive_until(chat, lambda f: f["type"] == "ack"))[-1]
    reply_id = ack["reply_id"]
    assert reply_id is not None
    await chat.send_json_to({"type": "handoff"})
    await receive_until(
        chat, lambda f: f["type"] == "conversation.state" and f["status"] == "pending"
    )

    await asyncio.to_thread(_write_reply_like_a_worker, reply_id)
    frames = await receive_until(chat, lambda f: f["type"] == "reply.done")
    mine = [f for f in frames if f.get("reply_id") == reply_id]
    assert [(f["type"], f["status"]) for f in mine] == [("reply.done", "withdrawn")]
    assert model.requests() == []
    await chat.disconnect()

    # A page that missed the frame: the snapshot marks it withdrawn, and a resume finishes it,
    # from the replay log or, once that has expired, from the stored turn.
    again = await open_chat(alice_conversation.pk, alice_conversation.customer)
    snapshot_turns = {t["id"]: t for t in again.snapshot["turns"]}  # type: ignore[attr-defined]
    assert snapshot_turns[reply_id]["status"] == "withdrawn"
    assert snapshot_turns[reply_id]["text"] == ""
    await again.send_json_to({"type": "resume", "reply_id": reply_id, "after": 0})
    replayed = (await receive_until(again, lambda f: f["type"] == "reply.done"))[-1]
    assert (replayed["seq"], replayed["status"]) == (1, "withdrawn")
    sync_client().delete(key("reply", reply_id))
    await again.send_json_to({"type": "resume", "reply_id": reply_id, "after": 0})
    stored = (await receive_until(again, lambda f: f["type"] == "reply.done"))[-1]
    assert (stored["seq"], stored["status"], stored["text"]) == (1, "withdrawn", "")
    await again.disconnect()


@pytest.mark.django_db
def test_a_streaming_reply_learns_with_its_next_frame_that_a_person_has_the_conversation(
    alice_conversation, alice_agent, django_capture_on_commit_callbacks
):
    reply = ask(alice_conversation)
    publisher = ReplyPublisher(reply)
    assert publisher.delta("Let me")

    with django_capture_on_commit_callbacks(execute=True):
        inbox_services.take_over(alice_conversation.pk, alice_agent)
    assert not publisher.delta(" check")  # read in the frame's own round trip

    with django_capture_on_commit_callbacks(execute=True):
        inbox_services.hand_back_to_bot(alice_conversation.pk, alice_agent)
    assert publisher.delta(" that")

    with django_capture_on_commit_callbacks(execute=True):
        escalate(alice_conversation, "customer_request")
    assert not publisher.delta(" for you")


@pytest.mark.django_db
def test_a_status_set_in_the_admin_reaches_a_streaming_reply_too(
    alice_conversation, admin_client, django_capture_on_commit_callbacks
):
    reply = ask(alice_conversation)
    publisher = ReplyPublisher(reply)
    url = f"/admin/conversations/conversation/{alice_conversation.pk}/change/"
    form = admin_client.get(url).context["adminform"].form
    data = {name: form.initial.get(name) or "" for name in ("status", "assignee")}
    data.update({"status": "resolved", "turns-TOTAL_FORMS": "0", "turns-INITIAL_FORMS": "0"})
    data.update({"notes-TOTAL_FORMS": "0", "notes-INITIAL_FORMS": "0"})

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert not publisher.delta("Let me check")
