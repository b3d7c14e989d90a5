"""Writing a reply: the model through the real openai client and the fake server over HTTP,
frames through the real Redis replay log, retries that honour Retry-After, exactly one reply.

The knowledge base has one article that answers the questions asked here (the `model` fixture,
tests/fixtures_fake_llm.py), so every reply is grounded and reaches the model
(tests/test_grounded_replies.py covers grounding itself)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from bot.grounding import strip_citations
from bot.wording import ENGLISH
from conversations import services, tasks
from conversations.events import ReplyPublisher
from conversations.models import Conversation, Customer, Turn
from conversations.replies import write_reply
from support_bot.redis_clients import key, sync_client
from tests.conftest import reply_text
from tests.fake_llm import expected_reply

pytestmark = pytest.mark.django_db


def ask(text: str = "Where is my parcel?", conversation: Conversation | None = None) -> Turn:
    conversation = conversation or Conversation.objects.create(customer=Customer.objects.create())
    posted = services.post_customer_message(conversation, f"c-{Turn.objects.count()}", text)
    assert posted.reply is not None
    return posted.reply


def frames_of(reply: Turn) -> list[dict]:
    return [json.loads(f["f"]) for _id, f in sync_client().xrange(key("reply", reply.pk))]


def full_reply(fake_llm) -> str:
    return "".join(reply_tokens(fake_llm))


def reply_tokens(fake_llm) -> list[str]:
    request = fake_llm.requests()[-1]["body"]
    return expected_reply(request["messages"], 20)


def test_it_streams_the_models_reply_and_stores_its_text_and_usage(model):
    reply = ask()
    write_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == "done"
    assert reply.text == full_reply(model)
    assert (reply.provider, reply.model) == ("openai", "fake-model")
    assert reply.completion_tokens == len(reply_tokens(model)) and reply.prompt_tokens > 0
    assert reply.first_token_ms is not None and reply.duration_ms >= reply.first_token_ms
    frames = frames_of(reply)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[0]["type"] == "reply.start" and frames[-1]["type"] == "reply.done"
    assert reply_text(frames, reply.pk) == reply.text


def test_it_coalesces_tokens_into_fewer_frames_than_tokens(model):
    reply = ask()
    write_reply(reply.pk)
    deltas = [f for f in frames_of(reply) if f["type"] == "reply.delta"]
    assert 2 <= len(deltas) < len(reply_tokens(model))
    assert "".join(d["text"] for d in deltas) == Turn.objects.get(pk=reply.pk).text


def test_it_sends_the_system_prompt_and_the_conversation_history(model, settings):
    settings.COMPANY_NAME = "Brightwave"
    first = ask("Do you ship to Norway?")
    write_reply(first.pk)
    second = ask("And how much does it cost?", first.conversation)
    write_reply(second.pk)

    messages = model.requests()[-1]["body"]["messages"]
    assert messages[0]["role"] == "system" and "Brightwave" in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "Do you ship to Norway?"
    # The earlier answer's [1] pointed at that answer's passages: it goes without it.
    first_text = Turn.objects.get(pk=first.pk).text
    assert "[1]" in first_text
    assert messages[2]["content"] == strip_citations(first_text)
    assert "[1]" not in messages[2]["content"]
    assert messages[3]["content"] == "And how much does it cost?"
    assert model.requests()[-1]["body"]["stream_options"] == {"include_usage": True}


def test_it_bounds_the_history_it_sends(model, settings):
    settings.CHAT_HISTORY_TURNS = 4
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    for i in range(10):
        Turn.objects.create(conversation=conversation, author="customer", text=f"old {i}")
    reply = ask("Where is my parcel now?", conversation)
    write_reply(reply.pk)
    messages = model.requests()[-1]["body"]["messages"]
    assert [m["content"] for m in messages[1:]] == [
        "old 7",
        "old 8",
        "old 9",
        "Where is my parcel now?",
    ]


def test_it_waits_as_long_as_retry_after_says_after_a_429(model):
    model.set_fault("429", retry_after=1)
    reply = ask()
    write_reply(reply.pk)

    first, second = model.requests()
    assert second["arrived_at"] - first["arrived_at"] >= 0.95
    reply.refresh_from_db()
    assert reply.status == "done" and reply.text == full_reply(model)
    # One retry layer: the SDK itself did not retry.
    assert [r["retry_count"] for r in model.requests()] == [0, 0]


def test_it_retries_a_server_error(model):
    model.set_fault("500")
    reply = ask()
    write_reply(reply.pk)
    assert len(model.requests()) == 2
    assert Turn.objects.get(pk=reply.pk).status == "done"


def test_it_starts_the_text_over_when_a_stream_is_cut_midway(model):
    model.set_fault("cut", cut_after=6)
    reply = ask()
    write_reply(reply.pk)

    reply.refresh_from_db()
    frames = frames_of(reply)
    starts = [f for f in frames if f["type"] == "reply.start"]
    assert [s["attempt"] for s in starts] == [1, 2]
    assert reply.status == "done" and reply.text == full_reply(model)
    assert reply_text(frames, reply.pk) == reply.text


def test_it_gives_up_on_a_hanging_model_and_apologises(model, settings):
    settings.OPENAI_READ_TIMEOUT_S = 0.5
    settings.REPLY_MAX_ATTEMPTS = 2
    model.set_fault("hang", times=-1, hang_s=30)
    reply = ask()
    write_reply(reply.pk)

    reply.refresh_from_db()
    assert (reply.status, reply.text, reply.error_code) == ("failed", ENGLISH.apology, "timeout")
    done = frames_of(reply)[-1]
    assert done["type"] == "reply.done" and done["status"] == "failed"
    assert done["error"]["code"] == "timeout" and done["text"] == ENGLISH.apology


def test_it_answers_a_stall_before_the_first_token_from_a_hedged_request(model, settings):
    settings.OPENAI_HEDGE_AFTER_S = 0.3
    model.set_fault("hang", hang_s=30)
    reply = ask()
    started = time.monotonic()
    write_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == "done" and reply.text == full_reply(model)
    assert time.monotonic() - started < 1.5, "not the 2 s read timeout and a retry"
    starts = [f for f in frames_of(reply) if f["type"] == "reply.start"]
    assert [s["attempt"] for s in starts] == [1], "one attempt: the customer saw no restart"
    assert len(model.requests()) == 2


def test_it_retries_a_stalled_model_at_once_and_others_after_a_growing_pause():
    from bot.types import ProviderError
    from conversations.replies import retry_delay

    stalled = ProviderError("no chunk in time", code="timeout")
    failing = ProviderError("server error", code="server_error")
    limited = ProviderError("slow down", code="rate_limited", retry_after=7.5)
    assert [retry_delay(stalled, n) for n in (1, 2)] == [0.0, 0.0]
    assert [retry_delay(failing, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(limited, 1) == 7.5


def test_it_apologises_when_every_attempt_fails(model, settings):
    settings.REPLY_MAX_ATTEMPTS = 3
    model.set_fault("500", times=-1)
    reply = ask()
    write_reply(reply.pk)
    assert len(model.requests()) == 3
    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == ("failed", "server_error")


def test_it_does_not_retry_an_error_that_cannot_go_away(model, settings):
    settings.OPENAI_API_KEY = "bad-key"
    reply = ask()
    write_reply(reply.pk)
    assert len(model.requests()) == 1
    reply.refresh_from_db()
    assert reply.status == "failed" and reply.error_code == "auth_error"


def test_it_writes_a_reply_once_when_its_task_runs_twice(model):
    reply = ask()
    write_reply(reply.pk)
    write_reply(reply.pk)
    assert len(model.requests()) == 1
    assert sum(f["type"] == "reply.done" for f in frames_of(reply)) == 1


def test_a_duplicate_task_leaves_a_reply_another_worker_holds_alone(model):
    reply = ask()
    claimed_by_another = {"status": "streaming", "attempt": 1, "claimed_at": timezone.now()}
    Turn.objects.filter(pk=reply.pk).update(**claimed_by_another)
    write_reply(reply.pk)
    assert model.requests() == []
    reply.refresh_from_db()
    assert (reply.status, reply.attempt) == ("streaming", 1)


def test_it_takes_over_a_reply_whose_worker_was_lost(model, settings):
    reply = ask()
    # A worker claimed it, streamed three frames, and died.
    Turn.objects.filter(pk=reply.pk).update(
        status="streaming",
        attempt=1,
        claimed_at=timezone.now() - timedelta(seconds=settings.REPLY_LEASE_S + 1),
    )
    from conversations.events import ReplyPublisher

    lost = ReplyPublisher(Turn.objects.get(pk=reply.pk))
    lost.start()
    lost.delta("Half a sent")
    lost.delta("ence")

    write_reply(reply.pk)
    reply.refresh_from_db()
    frames = frames_of(reply)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert [f["attempt"] for f in frames if f["type"] == "reply.start"] == [1, 2]
    assert reply.attempt == 2 and reply.status == "done"
    assert reply_text(frames, reply.pk) == reply.text == full_reply(model)


def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_workers_reply(model):
    reply = ask()
    claimed = Turn.claim_reply(reply.pk, lease_s=60)
    Turn.objects.filter(pk=reply.pk).update(attempt=2)  # someone else took it over
    assert claimed.finish_reply(status="done", text="stale") is False
    assert Turn.objects.get(pk=reply.pk).text == ""


def test_it_never_leaves_the_customer_in_silence_when_writing_crashes(settings):
    settings.LLM_PROVIDER = "no-such-provider"
    reply = ask()
    tasks.generate_reply.apply(args=[reply.pk])
    reply.refresh_from_db()
    assert (reply.status, reply.text, reply.error_code) == (
        "failed",
        ENGLISH.apology,
        "internal_error",
    )
    assert frames_of(reply)[-1]["status"] == "failed"


def test_it_retries_the_task_instead_of_going_silent_when_the_database_is_down(model):
    from celery.exceptions import Retry
    from django.db import DatabaseError

    reply = ask()

    def unreachable(*args, **kwargs):
        raise DatabaseError("connection refused")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Turn, "claim_reply", classmethod(unreachable))
        with pytest.raises(Retry):
            tasks.generate_reply.apply(args=[reply.pk], throw=True)
    assert Turn.objects.get(pk=reply.pk).status == "queued"  # still there for the retry


@pytest.mark.django_db(transaction=True)
def test_it_releases_its_database_connection_while_the_reply_streams(model):
    import threading

    from django.db import connection

    reply = ask()
    held_during_stream: list[bool] = []
    original = ReplyPublisher.start

    def start_and_look(self):
        held_during_stream.append(connection.connection is not None)
        original(self)

    def worker_thread():
        try:
            write_reply(reply.pk)
        finally:
            connection.close()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ReplyPublisher, "start", start_and_look)
        thread = threading.Thread(target=worker_thread)
        thread.start()
        thread.join(timeout=30)
    assert held_during_stream == [False]
    assert Turn.objects.get(pk=reply.pk).status == "done"


@pytest.mark.django_db(transaction=True)
def test_it_embeds_the_question_without_holding_a_database_connection(model):
    """Embedding waits its turn for the model; a hundred worker threads each holding a
    connection meanwhile exhausted Postgres in the load benchmark."""
    import threading

    from django.db import connection

    from knowledge.search import ahead

    reply = ask()
    held_while_embedding: list[bool] = []
    original = ahead.warm

    def warm_and_look(text):
        held_while_embedding.append(connection.connection is not None)
        original(text)

    def worker_thread():
        try:
            write_reply(reply.pk)
        finally:
            connection.close()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ahead, "warm", warm_and_look)
        thread = threading.Thread(target=worker_thread)
        thread.start()
        thread.join(timeout=30)
    assert held_while_embedding and not any(held_while_embedding)
    assert Turn.objects.get(pk=reply.pk).status == "done"
