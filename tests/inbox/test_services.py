"""The agent workspace's transitions (inbox/services.py), with personas:
alice_agent (Agents), bob_agent (Agents), olivia_operator (Operators), oscar_outsider (staff,
no group). Customers: alice and bob (tests/conftest.py)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from conversations import services as chat_services
from conversations.models import Conversation, Turn
from conversations.selectors import conversation_snapshot
from inbox import services
from inbox.events import notify_inbox_on_commit, row_for
from inbox.models import Note
from tests import personas
from tests.conftest import open_chat, receive_until

alice_agent = personas.alice_agent
bob_agent = personas.bob_agent
oscar_outsider = personas.oscar_outsider
pending = personas.pending


def fresh(conversation: Conversation) -> Conversation:
    return Conversation.objects.select_related("assignee").get(pk=conversation.pk)


@pytest.mark.django_db
def test_it_takes_over_a_pending_conversation_and_the_bot_stops_answering(pending, alice_agent):
    services.take_over(pending.pk, alice_agent)
    conversation = fresh(pending)
    assert (conversation.status, conversation.assignee) == ("pending", alice_agent)
    assert not conversation.bot_answers
    assert conversation.escalation_reason == "customer_request"  # why a person was asked for
    posted = chat_services.post_customer_message(conversation, "c-2", "Hello?")
    assert posted.reply is None  # no bot reply queued while a person has it
    system = Turn.objects.filter(conversation=pending, author="system").last()
    assert system.text == "Anna from our team has joined the conversation."


@pytest.mark.django_db
def test_it_takes_over_from_the_bot_as_an_agent_escalation(alice_conversation, alice_agent):
    services.take_over(alice_conversation.pk, alice_agent)
    conversation = fresh(alice_conversation)
    assert conversation.status == "pending" and conversation.assignee == alice_agent
    assert conversation.escalation_reason == "agent" and conversation.escalated_at


@pytest.mark.django_db
def test_it_tells_the_second_agent_who_has_the_conversation(pending, alice_agent, bob_agent):
    services.take_over(pending.pk, alice_agent)
    with pytest.raises(services.TakenBy) as lost:
        services.take_over(pending.pk, bob_agent)
    assert lost.value.agent_name == "Anna"
    assert str(lost.value) == "Already taken by Anna"
    assert fresh(pending).assignee == alice_agent
    # Taking it again yourself is fine and adds no second "joined" notice.
    services.take_over(pending.pk, alice_agent)
    assert Turn.objects.filter(conversation=pending, author="system").count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_one_of_two_racing_agents_take_over(pending, alice_agent, bob_agent):
    start = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def take(agent: User) -> None:
        try:
            start.wait(timeout=5)
            services.take_over(pending.pk, agent)
            outcomes[agent.username] = "won"
        except services.TakenBy as taken:
            outcomes[agent.username] = taken.agent_name
        finally:
            connection.close()

    threads = [threading.Thread(target=take, args=(a,)) for a in (alice_agent, bob_agent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    winner = [name for name, outcome in outcomes.items() if outcome == "won"]
    assert len(winner) == 1, outcomes
    loser = "bob_agent" if winner == ["alice_agent"] else "alice_agent"
    winner_name = "Anna" if winner == ["alice_agent"] else "Bob"
    assert outcomes[loser] == winner_name
    assert fresh(pending).assignee.username == winner[0]
    assert Turn.objects.filter(conversation=pending, author="system").count() == 1


@pytest.mark.django_db
def test_it_assigns_to_another_agent_but_never_to_an_outsider(
    pending, alice_agent, bob_agent, oscar_outsider
):
    with pytest.raises(services.Invalid):
        services.assign(pending.pk, alice_agent, oscar_outsider.pk)
    services.assign(pending.pk, alice_agent, bob_agent.pk)
    assert fresh(pending).assignee == bob_agent
    with pytest.raises(services.TakenBy, match="Already taken by Bob"):
        services.assign(pending.pk, alice_agent, alice_agent.pk)


@pytest.mark.django_db
def test_it_hands_the_conversation_back_to_the_bot(pending, alice_agent, bob_agent):
    services.take_over(pending.pk, alice_agent)
    with pytest.raises(services.TakenBy):
        services.hand_back_to_bot(pending.pk, bob_agent)
    services.hand_back_to_bot(pending.pk, alice_agent)
    conversation = fresh(pending)
    assert (conversation.status, conversation.assignee) == ("open", None)
    assert conversation.bot_answers
    last = Turn.objects.filter(conversation=pending).last()
    assert (last.author, last.text) == ("system", "You're chatting with our assistant again.")
    assert chat_services.post_customer_message(conversation, "c-3", "Hi bot").reply is not None


@pytest.mark.django_db
def test_it_resolves_and_reopens(pending, alice_agent):
    services.take_over(pending.pk, alice_agent)
    services.resolve(pending.pk, alice_agent)
    conversation = fresh(pending)
    assert conversation.status == "resolved" and conversation.resolved_at
    assert (
        Turn.objects.filter(conversation=pending)
        .last()
        .text.startswith("This conversation was resolved")
    )
    with pytest.raises(services.WrongState):
        services.resolve(pending.pk, alice_agent)
    with pytest.raises(services.WrongState):
        services.agent_reply(pending.pk, alice_agent, "still there?")
    services.reopen(pending.pk, alice_agent)
    conversation = fresh(pending)
    assert (conversation.status, conversation.resolved_at) == ("pending", None)
    assert conversation.assignee == alice_agent
    with pytest.raises(services.WrongState):
        services.reopen(pending.pk, alice_agent)


@pytest.mark.django_db
def test_it_snoozes_and_wakes_when_the_time_has_come(pending, alice_agent):
    services.take_over(pending.pk, alice_agent)
    with pytest.raises(services.Invalid):
        services.snooze(pending.pk, alice_agent, timezone.now() - timedelta(minutes=1))
    until = timezone.now() + timedelta(hours=1)
    services.snooze(pending.pk, alice_agent, until)
    conversation = fresh(pending)
    assert (conversation.status, conversation.snoozed_until) == ("snoozed", until)
    assert not conversation.bot_answers
    assert services.wake_snoozed() == 0
    assert services.wake_snoozed(now=until + timedelta(seconds=1)) == 1
    conversation = fresh(pending)
    assert (conversation.status, conversation.snoozed_until) == ("pending", None)
    assert conversation.assignee == alice_agent


@pytest.mark.django_db
def test_it_wakes_snoozed_conversations_when_listing_and_by_command(pending, alice_agent):
    services.snooze(pending.pk, alice_agent, timezone.now() + timedelta(minutes=5))
    Conversation.objects.filter(pk=pending.pk).update(
        snoozed_until=timezone.now() - timedelta(seconds=1)
    )
    rows = services.inbox_rows(alice_agent)["rows"]
    assert [r["status"] for r in rows if r["id"] == str(pending.pk)] == ["pending"]
    services.snooze(pending.pk, alice_agent, timezone.now() + timedelta(minutes=5))
    Conversation.objects.filter(pk=pending.pk).update(
        snoozed_until=timezone.now() - timedelta(seconds=1)
    )
    call_command("wake_snoozed", verbosity=0)
    assert fresh(pending).status == "pending"


@pytest.mark.django_db
def test_it_wakes_a_snoozed_conversation_when_the_customer_writes(pending, alice_agent):
    services.take_over(pending.pk, alice_agent)
    services.snooze(pending.pk, alice_agent, timezone.now() + timedelta(hours=1))
    posted = chat_services.post_customer_message(fresh(pending), "c-9", "Any news?")
    conversation = fresh(pending)
    assert (conversation.status, conversation.snoozed_until) == ("pending", None)
    assert conversation.assignee == alice_agent and posted.reply is None


@pytest.mark.django_db
def test_it_lists_pending_first_with_unread_and_waiting(
    alice_conversation, bob, alice_agent, pending
):
    from conversations.models import Conversation as C

    open_one = C.objects.create(customer=bob)
    chat_services.post_customer_message(open_one, "b-1", "Hi")
    resolved = C.objects.create(customer=bob, status="resolved", resolved_at=timezone.now())
    chat_services.post_customer_message(resolved, "b-2", "Thanks")
    C.objects.filter(pk=resolved.pk).update(status="resolved")
    rows = services.inbox_rows(alice_agent, {"status": "all"})["rows"]
    # Waiting (pending) first, then the latest activity first.
    assert [r["id"] for r in rows] == [str(pending.pk), str(resolved.pk), str(open_one.pk)]
    row = rows[0]
    assert row["customer"] == "Alice" and row["preview"] == "Where is my parcel?"
    assert row["unread"] == 1 and row["waiting_since"]
    services.mark_read(pending.pk, alice_agent)
    assert row_for(pending.pk, alice_agent)["unread"] == 0
    services.agent_reply(pending.pk, alice_agent, "Let me check.")
    row = row_for(pending.pk)
    assert row["waiting_since"] is None and row["assignee"] == {
        "id": alice_agent.pk,
        "name": "Anna",
    }


@pytest.mark.django_db
def test_it_keeps_agent_replies_within_limits_and_html_inert(pending, alice_agent, bob_agent):
    with pytest.raises(services.Invalid):
        services.agent_reply(pending.pk, alice_agent, "x" * 4001)
    with pytest.raises(services.Invalid):
        services.agent_reply(pending.pk, alice_agent, "   ")
    turn = services.agent_reply(pending.pk, alice_agent, "<b>hi</b>")
    assert (turn.author, turn.agent, turn.text) == ("agent", alice_agent, "<b>hi</b>")
    assert fresh(pending).assignee == alice_agent  # replying took it over
    with pytest.raises(services.TakenBy):
        services.agent_reply(pending.pk, bob_agent, "me too")


@pytest.mark.django_db(transaction=True)
def test_it_saves_a_note_while_redis_cannot_tell_the_watching_agents(
    pending, alice_agent, monkeypatch
):
    # The note's PUBLISH is refused: the note is stored and returned (the agent's page shows
    # it from the answer); the agents watching get it when their page reads the notes again.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from conversations import events
    from tests.conftest import free_port

    unreachable = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(events, "sync_client", lambda: unreachable)

    note = services.add_note(pending.pk, alice_agent, "Refund approved")

    assert list(Note.objects.values_list("pk", "text")) == [(note.pk, "Refund approved")]


@pytest.mark.django_db(transaction=True)
async def test_it_never_shows_notes_to_the_customer(pending, alice_agent):
    chat = await open_chat(pending.pk, pending.customer)
    await database_sync_to_async(services.add_note)(pending.pk, alice_agent, "VIP, be nice")
    await database_sync_to_async(services.agent_reply)(pending.pk, alice_agent, "Hello!")
    frames = await receive_until(
        chat, lambda f: f["type"] == "turn" and f["turn"]["author"] == "agent"
    )
    assert "VIP" not in str(frames)
    snapshot = await database_sync_to_async(conversation_snapshot)(pending)
    assert "VIP" not in str(snapshot)
    assert await database_sync_to_async(Note.objects.count)() == 1
    await chat.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_it_sends_the_agent_reply_to_the_customer_socket_live(pending, alice_agent):
    chat = await open_chat(pending.pk, pending.customer)
    await database_sync_to_async(services.agent_reply)(
        pending.pk, alice_agent, "<i>Hi</i>, Anna here"
    )
    frames = await receive_until(
        chat, lambda f: f["type"] == "turn" and f["turn"]["author"] == "agent"
    )
    turn = frames[-1]["turn"]
    assert (turn["text"], turn["author_name"]) == ("<i>Hi</i>, Anna here", "Anna")
    joined = [f for f in frames if f["type"] == "turn" and f["turn"]["author"] == "system"]
    assert joined[0]["turn"]["text"] == "Anna from our team has joined the conversation."
    await chat.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_it_tells_the_customer_socket_when_the_conversation_is_resolved(pending, alice_agent):
    chat = await open_chat(pending.pk, pending.customer)
    await database_sync_to_async(services.resolve)(pending.pk, alice_agent)
    frames = await receive_until(
        chat, lambda f: f["type"] == "conversation.state" and f["status"] == "resolved"
    )
    assert frames[-1]["rating_requested"] is True
    resolved = [f for f in frames if f["type"] == "turn"][-1]["turn"]
    assert resolved["author"] == "system" and resolved["text"].startswith("This conversation")
    await chat.disconnect()


@pytest.mark.django_db
def test_it_publishes_the_row_only_after_commit(pending, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        notify_inbox_on_commit(pending.pk)
    assert len(callbacks) == 1


@pytest.mark.django_db
def test_it_summarises_and_suggests_offline(pending, alice_agent):
    from inbox import assist

    call_command("load_demo_kb", verbosity=0)
    chat_services.post_customer_message(pending, "c-2", "How do I return an item?")
    summary = assist.run_assist(pending.pk, "summary")
    # The latest problem leads; the first one follows as an earlier topic.
    assert summary.text.startswith("Latest problem: How do I return an item?")
    assert "- Where is my parcel?" in summary.text
    suggestion = assist.run_assist(pending.pk, "suggest")
    assert suggestion.text and suggestion.sources
    assert "return" in suggestion.text.lower()
    # Nothing went to the customer.
    assert not Turn.objects.filter(conversation=pending, author="agent").exists()


def test_it_names_an_agent_without_a_first_name_by_username_to_the_customer(pending):
    nameless = personas.make_user("sam_nofirst", "", "Agents")
    services.take_over(pending.pk, nameless)
    turn = services.agent_reply(pending.pk, nameless, "Hi, Sam here")
    assert turn.as_event()["author_name"] == "sam_nofirst"


def test_it_gives_a_conversation_resolved_and_reopened_by_the_customer_back_to_the_bot(
    pending, alice_agent
):
    services.take_over(pending.pk, alice_agent)
    services.resolve(pending.pk, alice_agent)
    posted = chat_services.post_customer_message(fresh(pending), "again-1", "One more question")
    conversation = fresh(pending)
    assert (conversation.status, conversation.assignee) == ("open", None)
    assert posted.reply is not None  # the bot answers again
