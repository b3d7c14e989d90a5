"""A reply that waits for its turn in the model's budget (bot/providers/budget.py): the customer
is told "one moment" once they have waited a few seconds, in a numbered frame a resume replays;
the wait keeps to the reply's deadline and ends when another worker takes the reply over.
Through the real openai client to the fake server, frames through the real Redis replay log."""

from __future__ import annotations

import threading
import time

import pytest
from asgiref.sync import async_to_sync

from bot.providers import registry
from bot.providers.budget import BudgetedProvider, ModelBudget, resolve
from bot.types import ChatMessage, ReplyRequest
from bot.wording import ENGLISH
from conversations import events, recovery
from conversations.models import Conversation, Turn
from conversations.replies import write_reply
from knowledge import search as knowledge_search
from tests.conftest import reply_text
from tests.conversations.test_replies import ask, frames_of

REQUEST = ReplyRequest(messages=[ChatMessage("user", "Where is my parcel?")])


def model_budget() -> ModelBudget:
    provider = registry.get_provider()
    assert isinstance(provider, BudgetedProvider)
    return provider.budget


def spend_the_budget(push_back_s: float = 0.0) -> None:
    """As a burst of other customers would: every turn free now is taken (the next is a second
    away at 60 requests a minute), and a 429 may have paused the budget on top."""
    budget = model_budget()
    while budget.admit_now(REQUEST):
        pass
    if push_back_s:
        budget.push_back(REQUEST, resolve(REQUEST.limits), push_back_s)


@pytest.fixture
def metered(model, settings):
    settings.OPENAI_REQUESTS_PER_MIN = 60
    return model


@pytest.mark.django_db
def test_a_customer_who_waits_more_than_a_few_seconds_is_told_one_moment(metered, settings):
    settings.REPLY_WAIT_NOTICE_S = 0.5
    spend_the_budget(push_back_s=2.0)
    reply = ask()

    write_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == "done"
    frames = frames_of(reply)
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["reply.start", "reply.waiting"]
    assert kinds.count("reply.waiting") == 1 and kinds[-1] == "reply.done"
    waiting = frames[1]
    assert waiting["text"] == ENGLISH.one_moment and 1 <= waiting["wait_s"] <= 2
    assert waiting["reply_id"] == reply.pk and waiting["seq"] == 2
    assert reply_text(frames, reply.pk) == reply.text


@pytest.mark.django_db
def test_a_short_wait_shows_only_the_typing_indicator(metered, settings):
    settings.REPLY_WAIT_NOTICE_S = 3
    spend_the_budget()  # the next turn is a second away
    reply = ask()

    started = time.monotonic()
    write_reply(reply.pk)

    assert time.monotonic() - started >= 0.9, "it did wait for its turn"
    assert "reply.waiting" not in [f["type"] for f in frames_of(reply)]
    assert Turn.objects.get(pk=reply.pk).status == "done"


@pytest.mark.django_db
def test_a_page_that_resumes_sees_the_one_moment_line_again(metered, settings):
    settings.REPLY_WAIT_NOTICE_S = 0.2
    spend_the_budget(push_back_s=1.5)
    reply = ask()
    write_reply(reply.pk)

    replayed = async_to_sync(events.replay_after)(reply.pk, 1)  # the page saw reply.start only

    assert events.is_frame(replayed[0], "reply.waiting")
    assert events.is_frame(replayed[-1], "reply.done")


@pytest.mark.django_db
def test_a_reply_whose_turn_comes_after_its_deadline_apologises_at_once(metered, settings):
    settings.REPLY_DEADLINE_S = 3
    spend_the_budget(push_back_s=10)
    reply = ask()

    started = time.monotonic()
    write_reply(reply.pk)

    assert time.monotonic() - started < 1.5, "refused at once, not after waiting out 3 s"
    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == ("failed", "over_budget")
    assert reply.text == ENGLISH.apology
    assert metered.requests() == []


@pytest.mark.django_db(transaction=True)
def test_a_reply_taken_over_while_it_waits_for_its_turn_stops_waiting(metered, settings):
    spend_the_budget(push_back_s=8)
    reply = ask()
    writer = threading.Thread(target=write_reply, args=(reply.pk,), daemon=True)
    writer.start()
    deadline = time.monotonic() + 10
    while not any(h.reply_id == reply.pk for h in recovery.keeper.held()):
        assert time.monotonic() < deadline, "the reply was never claimed"
        time.sleep(0.05)

    assert recovery.requeue(reply.pk, reason="test")  # another worker takes it over
    for held in recovery.keeper.held():
        held.lost.set()  # what the heartbeat tells its writer
    writer.join(timeout=3)

    assert not writer.is_alive(), "it stopped waiting within a wait step"
    reply.refresh_from_db()
    assert (reply.status, reply.text) == ("queued", "")
    assert metered.requests() == []


@pytest.mark.django_db(transaction=True)
def test_the_customer_who_asked_first_is_answered_first_though_their_retrieval_ends_last(
    metered, settings, monkeypatch
):
    # The budget has turns to give at once (60 a minute, none spent): without a place held
    # from the moment a worker takes the reply, the second customer, ready first, would go first.
    first, second = ask("Where is my parcel?"), ask("Where is my parcel today?")
    warm = knowledge_search.warm_question
    first_is_prepared = threading.Event()
    first_ready_at: list[float] = []

    def slow_for_the_first(text: str) -> None:
        if text == "Where is my parcel?":
            first_is_prepared.set()
            time.sleep(1.0)  # retrieval under a burst finishes in any order
            first_ready_at.append(time.time())
        warm(text)

    monkeypatch.setattr(knowledge_search, "warm_question", slow_for_the_first)
    writers = [threading.Thread(target=write_reply, args=(r.pk,)) for r in (first, second)]
    writers[0].start()
    # The second is taken while the first is being prepared (however slow its worker's start).
    assert first_is_prepared.wait(timeout=20)
    writers[1].start()
    for writer in writers:
        writer.join(timeout=20)

    # Both turns are free at once: the second goes only once the first is ready, then both go
    # (which reaches the server first is the network's to say, within milliseconds).
    went = {r["body"]["messages"][-1]["content"]: r["arrived_at"] for r in metered.requests()}
    assert went.keys() == {"Where is my parcel?", "Where is my parcel today?"}
    assert went["Where is my parcel today?"] >= first_ready_at[0]
    assert {Turn.objects.get(pk=r.pk).status for r in (first, second)} == {"done"}


@pytest.mark.django_db(transaction=True)
def test_a_customer_holds_their_place_from_the_moment_their_message_is_stored(metered):
    # Workers take a burst's replies in no strict order (two workers, free threads, the pool's
    # connections): here the second customer's reply is taken while no worker has the first's.
    first, second = ask("Where is my parcel?"), ask("Where is my parcel today?")
    second_writer = threading.Thread(target=write_reply, args=(second.pk,))
    second_writer.start()
    time.sleep(1.0)
    assert metered.requests() == [], "the second waits for the first, though turns are free"

    first_taken_at = time.time()
    write_reply(first.pk)
    second_writer.join(timeout=20)

    went = {r["body"]["messages"][-1]["content"]: r["arrived_at"] for r in metered.requests()}
    assert went.keys() == {"Where is my parcel?", "Where is my parcel today?"}
    assert went["Where is my parcel today?"] >= first_taken_at
    assert {Turn.objects.get(pk=r.pk).status for r in (first, second)} == {"done"}


@pytest.mark.django_db(transaction=True)
def test_a_reply_withdrawn_before_a_worker_takes_it_gives_its_place_up(metered):
    first, second = ask("Where is my parcel?"), ask("Where is my parcel today?")
    Conversation.objects.filter(pk=first.conversation_id).update(
        status=Conversation.Status.PENDING
    )
    write_reply(first.pk)  # withdrawn: the bot no longer answers that conversation

    started = time.monotonic()
    write_reply(second.pk)

    assert time.monotonic() - started < 5, "the second did not wait for a place given up"
    assert Turn.objects.get(pk=first.pk).status == "withdrawn"
    assert Turn.objects.get(pk=second.pk).status == "done"
