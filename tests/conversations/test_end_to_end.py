"""The whole path with real parts: websocket → Postgres/SQLite → Redis broker → a real Celery
worker process → the real openai client → the fake model server over HTTP → Redis channel layer
→ the websocket."""

from __future__ import annotations

import asyncio
import signal

import pytest
from channels.db import database_sync_to_async

from conversations.models import Turn
from conversations.tasks import generate_reply
from inbox import services as inbox_services
from knowledge.indexing import sync_passages
from knowledge.models import Article
from tests import personas
from tests.conftest import open_chat, receive_until, reply_text
from tests.fake_llm import expected_reply

alice_agent = personas.alice_agent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def model_env(fake_llm, **extra: str) -> dict[str, str]:
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_MODEL": "fake-model",
        **extra,
    }


async def test_a_customer_message_streams_back_a_reply_through_a_real_worker(
    alice_conversation, fake_llm, celery_worker
):
    article = await Article.objects.acreate(
        slug="rain",
        title="Do you deliver when it rains?",
        url="https://help.example/rain",
        body="Yes. Our couriers deliver in any weather, and parcels travel in waterproof bags.",
    )
    await database_sync_to_async(sync_passages)([article.pk])  # as the admin does on save
    await asyncio.to_thread(celery_worker, **model_env(fake_llm))
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    question = "Do you still deliver parcels when it rains?"
    await chat.send_json_to({"type": "message", "client_id": "e2e-1", "text": question})

    frames = await receive_until(chat, lambda f: f["type"] == "reply.done", timeout=30)
    ack = next(f for f in frames if f["type"] == "ack")
    reply = await database_sync_to_async(Turn.objects.get)(pk=ack["reply_id"])
    request = fake_llm.requests()[-1]["body"]
    expected = "".join(expected_reply(request["messages"], 20))
    assert request["messages"][-1] == {"role": "user", "content": question}
    assert "[1] " in request["messages"][0]["content"]  # grounded in the article
    assert reply.status == "done" and reply.text == expected
    assert reply_text(frames, reply.pk) == expected
    assert "".join(f["text"] for f in frames if f["type"] == "reply.delta") == expected
    done = next(f for f in frames if f["type"] == "reply.done")
    assert [(s["title"], s["url"]) for s in done["sources"]] == [(article.title, article.url)]
    await chat.disconnect()


async def test_a_reply_task_delivered_twice_posts_one_reply(
    alice_conversation, fake_llm, celery_worker
):
    await asyncio.to_thread(celery_worker, **model_env(fake_llm))
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "message", "client_id": "dup-1", "text": "Hello?"})
    ack = (await receive_until(chat, lambda f: f["type"] == "ack"))[-1]
    generate_reply.delay(ack["reply_id"])  # the broker delivers it a second time

    frames = await receive_until(chat, lambda f: f["type"] == "reply.done", timeout=20)
    generate_reply.delay(ack["reply_id"])  # and a third, after the reply is done
    await asyncio.sleep(1.5)
    while not chat.output_queue.empty():
        frames.append(await chat.receive_json_from())
    assert sum(f["type"] == "reply.done" for f in frames) == 1
    assert sum(f["type"] == "reply.start" for f in frames) == 1
    assert len(fake_llm.requests()) == 1
    bot_turns = await database_sync_to_async(
        lambda: list(Turn.objects.filter(conversation=alice_conversation, author="bot"))
    )()
    assert len(bot_turns) == 1
    await chat.disconnect()


async def test_a_reply_survives_its_worker_being_killed_mid_stream(
    alice_conversation, fake_llm, celery_worker
):
    # The broker would redeliver the killed worker's task only after its visibility timeout:
    # the successor's sweeper must find the reply by its lapsed lease.
    env = model_env(fake_llm, CELERY_VISIBILITY_TIMEOUT="300")
    doomed = await asyncio.to_thread(celery_worker, **env)
    fake_llm.set_fault("hang", times=1, hang_s=60)  # the first attempt stalls mid-reply
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "message", "client_id": "kill-1", "text": "Still there?"})
    frames = await receive_until(chat, lambda f: f["type"] == "reply.start", timeout=20)
    await asyncio.sleep(0.3)

    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait()
    successor = await asyncio.to_thread(celery_worker, **env)

    try:
        frames += await receive_until(chat, lambda f: f["type"] == "reply.done", timeout=45)
    except BaseException:
        print("SUCCESSOR OUTPUT:\n" + "".join(successor.output))
        raise
    reply_id = next(f for f in frames if f["type"] == "ack")["reply_id"]
    reply = await database_sync_to_async(Turn.objects.get)(pk=reply_id)
    assert reply.status == "done" and reply.attempt == 2
    assert reply_text(frames, reply_id) == reply.text
    assert [f["attempt"] for f in frames if f["type"] == "reply.start"] == [1, 2]
    await chat.disconnect()


async def test_a_worker_told_to_stop_hands_a_reply_it_cannot_finish_to_another_worker(
    alice_conversation, fake_llm, celery_worker
):
    # No hedged request: the stalled one would outlast any grace period. A read timeout longer
    # than the test: on a busy machine the second worker may take longer to start than the
    # default 8 s, and the first worker's own retry would then answer before any SIGTERM.
    env = model_env(
        fake_llm,
        WORKER_SHUTDOWN_GRACE_S="3",
        WORKER_HANDOFF_MARGIN_S="1",
        OPENAI_HEDGE_AFTER_S="0",
        OPENAI_READ_TIMEOUT_S="90",
    )
    stopping = await asyncio.to_thread(celery_worker, **env)
    fake_llm.set_fault("hang", times=1, hang_s=60)
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "message", "client_id": "term-1", "text": "Still there?"})
    frames = await receive_until(chat, lambda f: f["type"] == "reply.start", timeout=20)
    await asyncio.to_thread(celery_worker, **env)  # the worker that stays

    stopping.process.send_signal(signal.SIGTERM)
    # Handed off two seconds after the SIGTERM: long before the hanging model would answer.
    frames += await receive_until(chat, lambda f: f["type"] == "reply.done", timeout=20)
    reply_id = next(f for f in frames if f["type"] == "ack")["reply_id"]
    reply = await database_sync_to_async(Turn.objects.get)(pk=reply_id)
    assert reply.status == "done" and reply.attempt == 2
    assert reply_text(frames, reply_id) == reply.text
    await chat.disconnect()


async def test_a_message_resent_after_a_crash_before_its_reply_was_queued_gets_its_reply(
    alice_conversation, fake_llm, celery_worker
):
    await asyncio.to_thread(celery_worker, **model_env(fake_llm))

    def stored_but_never_queued() -> int:
        # What a web process leaves behind when it dies right after the commit.
        turn = Turn.objects.create(conversation=alice_conversation, author="customer",
                                   text="Anyone there?", client_message_id="crash-1")
        reply = Turn.objects.create(conversation=alice_conversation, author="bot",
                                    status="queued", reply_to=turn)
        return reply.pk

    reply_id = await database_sync_to_async(stored_but_never_queued)()
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    # The browser never got an ack, so it sends the message again after reconnecting.
    await chat.send_json_to({"type": "message", "client_id": "crash-1", "text": "Anyone there?"})
    frames = await receive_until(chat, lambda f: f["type"] == "reply.done", timeout=20)

    ack = next(f for f in frames if f["type"] == "ack")
    assert ack["duplicate"] is True and ack["reply_id"] == reply_id
    reply = await database_sync_to_async(Turn.objects.get)(pk=reply_id)
    assert reply.status == "done" and reply_text(frames, reply_id) == reply.text
    await chat.disconnect()


async def test_a_worker_builds_the_knowledge_index_before_it_takes_any_question(celery_worker):
    article = await Article.objects.acreate(slug="warm", title="Warm up", body="Words. " * 50)
    await database_sync_to_async(sync_passages)([article.pk])
    worker = await asyncio.to_thread(celery_worker)  # returns once the worker says " ready."
    output = "".join(worker.output)
    # At start-up, before the worker consumes anything: not on the first customer's question.
    assert "knowledge index built: 1 passages from 1 articles" in output
    assert output.index("knowledge index built") < output.index(" ready.")


async def test_a_reply_streaming_when_an_agent_takes_over_stops_and_keeps_what_was_shown(
    alice_conversation, fake_llm, celery_worker, alice_agent
):
    tokens = [f"word{i} " for i in range(3000)]  # 7.5 s at the fake server's 400 tokens/s
    fake_llm.script(tokens)
    await asyncio.to_thread(celery_worker, **model_env(fake_llm))
    chat = await open_chat(alice_conversation.pk, alice_conversation.customer)
    await chat.send_json_to({"type": "message", "client_id": "long-1", "text": "Tell me all"})
    frames = await receive_until(chat, lambda f: f["type"] == "reply.delta", timeout=20)

    await database_sync_to_async(inbox_services.take_over)(alice_conversation.pk, alice_agent)
    frames += await receive_until(chat, lambda f: f["type"] == "reply.done", timeout=20)

    reply_id = next(f for f in frames if f["type"] == "ack")["reply_id"]
    reply = await database_sync_to_async(Turn.objects.get)(pk=reply_id)
    assert (reply.status, reply.error_code) == ("done", "taken_over")
    assert 0 < len(reply.text) < len("".join(tokens))
    assert "".join(tokens).startswith(reply.text)
    assert reply_text(frames, reply_id) == reply.text  # what the customer saw is what is kept
    assert not reply.sources and not reply.abstained
    await asyncio.sleep(0.5)  # the server notices the closed stream
    assert fake_llm.requests()[-1]["outcome"] == "client_gone"
    await chat.disconnect()
