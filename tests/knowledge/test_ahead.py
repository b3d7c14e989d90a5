"""Questions embedded ahead (knowledge/search/ahead.py): a worker's lane embeds a customer's
question as the message arrives, and the reply's thread, in any worker, fetches the vector
from Redis instead of embedding it again. Against the tests' real Redis; "another process" is
this one with its question cache emptied."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from conversations import services
from conversations.models import Conversation, Customer
from knowledge.search import ahead, embeddings, knowledge_index, warm_question
from support_bot import redis_clients

QUESTION = "How long does a refund take to reach my card after I send the parcel back?"


@pytest.fixture
def embedder(monkeypatch):
    """The real embedder, counting the questions it embeds; caches and the queue emptied."""
    found = embeddings.get_embedder()
    assert found is not None
    embeddings.forget_queries()
    client = redis_clients.sync_client()
    client.delete(ahead._queue_key())
    embedded: list[str] = []
    original = found.embed_queries

    def counting(texts):
        embedded.extend(texts)
        return original(texts)

    monkeypatch.setattr(found, "embed_queries", counting)
    found.embedded = embedded  # type: ignore[attr-defined]
    yield found
    embeddings.forget_queries()
    for name in client.scan_iter(match=redis_clients.key("embed-ahead", "*")):
        client.delete(name)


def what_search_embeds(question: str) -> list[str]:
    """The question and, for some knowledge bases, the question without the words no article
    uses: what a reply's retrieval embeds (hybrid.questions_to_embed)."""
    index = knowledge_index.last_built()
    return index.questions_to_embed(question) if index is not None else [question]


def queued() -> list[str]:
    return redis_clients.sync_client().lrange(ahead._queue_key(), 0, -1)


def test_it_embeds_a_question_asked_ahead_once_and_another_process_fetches_its_vector(embedder):
    ahead.ask(f"  {QUESTION}  ")
    [entry] = queued()
    lane = ahead.Lane()
    lane.take(entry)
    searched = what_search_embeds(QUESTION)
    assert lane.embedded == len(searched) and embedder.embedded == searched

    embeddings.forget_queries()  # the reply's worker is another process
    warm_question(QUESTION)

    assert embedder.embedded == searched  # fetched, not embedded again
    own = embeddings.OnnxE5Embedder().embed_queries([QUESTION])[0]
    assert np.allclose(embedder.cached_query(QUESTION), own, atol=1e-6)


def test_a_reply_waits_for_the_lane_embedding_its_question_instead_of_embedding_it_too(
    embedder, monkeypatch
):
    original = embedder.embed_queries
    started = threading.Event()

    def slow(texts):
        started.set()
        time.sleep(0.3)
        return original(texts)

    monkeypatch.setattr(embedder, "embed_queries", slow)
    lane = ahead.Lane()
    entry = json.dumps([time.time(), QUESTION])
    lane_thread = threading.Thread(target=lane.take, args=(entry,))
    lane_thread.start()
    assert started.wait(5)
    warm_question(QUESTION)  # the lane holds the claim: this waits for its vector
    lane_thread.join(5)

    # Each embedded once, by whichever started it first.
    assert sorted(embedder.embedded) == sorted(what_search_embeds(QUESTION))
    assert lane.embedded >= 1


def test_a_reply_embeds_its_question_itself_when_the_lane_died_mid_embedding(
    embedder, monkeypatch
):
    monkeypatch.setattr(ahead, "WAIT_S", 0.2)
    _vector, claim, _ready = ahead._keys(embedder.model_id, QUESTION)
    redis_clients.sync_bytes_client().set(claim, b"1", px=ahead.CLAIM_TTL_MS)  # never published

    started = time.monotonic()
    ahead.warm(QUESTION)

    assert embedder.embedded == [QUESTION]
    assert time.monotonic() - started < 0.2 + 1.0  # waited WAIT_S at most, then embedded


def test_a_busy_worker_and_a_stale_question_leave_the_embedding_to_the_reply(
    embedder, monkeypatch
):
    lane = ahead.Lane()
    monkeypatch.setattr(ahead, "_replies_embedding", 3)
    lane.take(json.dumps([time.time(), QUESTION]))
    monkeypatch.setattr(ahead, "_replies_embedding", 0)
    lane.take(json.dumps([time.time() - ahead.STALE_S - 1, QUESTION]))
    lane.take("not json")

    assert lane.embedded == 0 and embedder.embedded == []


def test_without_redis_a_question_is_still_embedded_and_asking_ahead_is_harmless(
    embedder, monkeypatch
):
    import redis

    nowhere = redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.2)
    monkeypatch.setattr(redis_clients, "sync_client", lambda: nowhere)
    monkeypatch.setattr(redis_clients, "sync_bytes_client", lambda: nowhere)

    ahead.ask(QUESTION)
    ahead.warm(QUESTION)

    assert embedder.embedded == [QUESTION]


def test_turned_off_nothing_is_queued_and_each_reply_embeds_its_own(embedder, settings):
    settings.KB_EMBED_AHEAD = False
    ahead.ask(QUESTION)
    ahead.warm(QUESTION)

    assert queued() == [] and embedder.embedded == [QUESTION]
    _vector, claim, _ready = ahead._keys(embedder.model_id, QUESTION)
    assert not redis_clients.sync_client().exists(claim)


@pytest.mark.django_db
def test_it_hands_a_question_ahead_only_when_the_bot_will_answer_it(embedder):
    customer = Customer.objects.create()
    bots = Conversation.objects.create(customer=customer)
    services.post_customer_message(bots, "c-1", QUESTION)
    assert [json.loads(entry)[1] for entry in queued()] == [QUESTION]

    redis_clients.sync_client().delete(ahead._queue_key())
    persons = Conversation.objects.create(customer=customer, status=Conversation.Status.PENDING)
    assert not persons.bot_answers
    services.post_customer_message(persons, "c-2", "still there?")
    assert queued() == []


def test_a_worker_writing_several_replies_leaves_questions_to_them(embedder):
    writing = {"replies": 4}
    lane = ahead.Lane()
    lane.start(busy=lambda: writing["replies"] >= 4)
    lane.stop()
    lane.take(json.dumps([time.time(), QUESTION]))
    assert lane.embedded == 0 and embedder.embedded == []

    writing["replies"] = 1
    lane.take(json.dumps([time.time(), QUESTION]))
    assert lane.embedded >= 1 and embedder.embedded[0] == QUESTION


@pytest.mark.django_db
def test_in_a_burst_the_web_process_leaves_questions_to_their_replies(embedder):
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    with services._messages_being_stored() as alone:  # another customer's message, mid-store
        assert alone
        services.post_customer_message(conversation, "c-1", QUESTION)
    assert queued() == []

    services.post_customer_message(conversation, "c-2", QUESTION + " And to PayPal?")
    assert len(queued()) == 1
