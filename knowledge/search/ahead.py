"""Questions embedded ahead: the question's embedding starts as the message arrives, not after
its reply is queued and claimed.

The web process hands the question to the workers (`ask`, one Redis round trip before the
message's transaction) and a worker with no other question to embed takes it on its lane
thread (`Lane`) while the web process stores the message and Celery hands its reply over. The
reply's thread, in whichever worker, then finds the vector in Redis (`warm`) instead of
embedding it. Each question is embedded once: whoever starts it first holds a short claim, and
the other waits for its vector (at most `WAIT_S`, then embeds it itself: a lane that died mid-
embedding leaves nobody waiting longer).

Under load the CPU is the limit and the reply threads embed as before: a web process storing
other messages hands none ahead (conversations.services), and a busy worker's lane skips them
(its replies are embedding, or it is writing several). The lane only uses a core that would
be idle. Without Redis every reply embeds its own question.
docs/performance.md ("questions embedded ahead") has the figures.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import redis
from django.conf import settings
from redis import RedisError

from support_bot import redis_clients
from support_bot.background import BackgroundThread

from . import embeddings
from .index import knowledge_index

logger = logging.getLogger(__name__)

#: A question asked longer ago than this has been embedded by its reply: the lane skips it.
#: (The web process's clock against the worker's; a skewed clock only costs the head start.)
STALE_S = 3.0
#: How long a reply waits for another process's embedding of its question.
WAIT_S = 1.5
VECTOR_TTL_MS = 30_000
CLAIM_TTL_MS = 5_000
#: Questions waiting for a lane, at most (the oldest are dropped: they would be stale).
QUEUE_LENGTH = 500
#: Tokens pushed when a vector is ready: a duplicated task's second waiter wakes too.
READY_TOKENS = 4

_embedding_lock = threading.Lock()
#: Reply threads of this process embedding (or waiting for) a question now: a busy process's
#: lane leaves questions to them.
_replies_embedding = 0


def enabled() -> bool:
    return bool(settings.KB_EMBED_AHEAD)


def _queue_key() -> str:
    return redis_clients.key("embed-ahead", "questions")


def _keys(model_id: str, text: str) -> tuple[str, str, str]:
    digest = embeddings.vector_key(model_id, text).hex()
    return (
        redis_clients.key("embed-ahead", "vector", digest),
        redis_clients.key("embed-ahead", "claim", digest),
        redis_clients.key("embed-ahead", "ready", digest),
    )


def what_search_embeds(text: str) -> list[str]:
    """What a search for this question embeds (hybrid.questions_to_embed); before this
    process has built an index, only the question itself."""
    text = text.strip()
    if not text:
        return []
    index = knowledge_index.last_built()
    return index.questions_to_embed(text) if index is not None else [text[:2000]]


def ask(text: str) -> None:
    """The web process, as a customer's message arrives: a worker may start on its embedding."""
    text = text.strip()
    if not enabled() or not text:
        return
    try:
        pipe = redis_clients.sync_client().pipeline(transaction=False)
        pipe.rpush(_queue_key(), json.dumps([time.time(), text[:4000]]))
        pipe.ltrim(_queue_key(), -QUEUE_LENGTH, -1)
        pipe.pexpire(_queue_key(), int(STALE_S * 1000) * 4)
        pipe.execute()
    except RedisError as exc:  # only a head start is lost
        logger.debug("question not handed ahead: %s", exc)


def warm(text: str) -> None:
    """A reply's thread, before retrieval: its question's vector into this process's cache,
    from Redis when another process embedded it (or is embedding it), else embedded here."""
    embedder = embeddings.get_embedder()
    if embedder is None or not text.strip():
        return
    text = text.strip()[:2000]
    if not enabled():
        embedder.embed_query(text)
        return
    global _replies_embedding
    with _embedding_lock:
        _replies_embedding += 1
    try:
        _shared_vector(embedder, text, wait=True)
    finally:
        with _embedding_lock:
            _replies_embedding -= 1


def _shared_vector(embedder: embeddings.Embedder, text: str, *, wait: bool) -> str:
    """The question's vector in this process's cache, and in Redis for the others. Returns
    how: "cached" (this process had it), "fetched" (another embedded it), "embedded" (here),
    or "skipped" (another process is embedding it and `wait` is off: a lane moves on)."""
    if embedder.cached_query(text) is not None:
        return "cached"
    vector_key, claim_key, ready_key = _keys(embedder.model_id, text)
    client = redis_clients.sync_bytes_client()
    try:
        pipe = client.pipeline(transaction=False)
        pipe.get(vector_key)
        pipe.set(claim_key, b"1", nx=True, px=CLAIM_TTL_MS)
        stored, claimed = pipe.execute()
        if stored is None and not claimed:
            if not wait:
                return "skipped"
            client.blpop([ready_key], timeout=WAIT_S)
            stored = client.get(vector_key)
    except RedisError as exc:
        logger.debug("question vectors not shared: %s", exc)
        embedder.embed_query(text)
        return "embedded"
    vector = embeddings.from_bytes(stored, embedder.dim) if stored is not None else None
    if vector is not None:
        embedder.remember_query(text, vector)
        return "fetched"
    vector = embedder.embed_query(text)
    if claimed:
        _publish(client, vector_key, ready_key, vector)
    return "embedded"


def _publish(client: redis.Redis, vector_key: str, ready_key: str, vector: np.ndarray) -> None:
    try:
        pipe = client.pipeline(transaction=False)
        pipe.set(vector_key, embeddings.to_bytes(vector), px=VECTOR_TTL_MS)
        pipe.rpush(ready_key, *([b"1"] * READY_TOKENS))
        pipe.pexpire(ready_key, CLAIM_TTL_MS)
        pipe.execute()
    except RedisError as exc:  # the waiting reply embeds it itself after WAIT_S
        logger.debug("question vector not shared: %s", exc)


class Lane(BackgroundThread):
    """A worker's thread that embeds questions asked ahead, when the process has none to do."""

    thread_name = "embed-ahead"

    def __init__(self) -> None:
        super().__init__()
        self.embedded = 0  # questions this lane embedded (for tests and the bench)
        self._busy: Callable[[], bool] = lambda: False

    def start(self, busy: Callable[[], bool] | None = None) -> None:
        """`busy`: whether the process has enough else to do (e.g. replies it is writing) that
        a head start would only take CPU from them; the lane then leaves questions alone."""
        if busy is not None:
            self._busy = busy
        if enabled() and embeddings.get_embedder() is not None:
            super().start()

    def _loop(self) -> None:
        client = redis_clients.sync_client()
        while not self._stop.is_set():
            try:
                item = client.blpop([_queue_key()], timeout=1)
            except RedisError as exc:
                logger.debug("no questions ahead: %s", exc)
                self._stop.wait(1.0)
                continue
            if item is not None:
                self.take(item[1])

    def take(self, entry: str | bytes) -> None:
        """One question from the queue: embedded unless it is stale or the process is busy."""
        try:
            asked_at, text = json.loads(entry)
        except (ValueError, TypeError):
            return
        if time.time() - float(asked_at) > STALE_S or _replies_embedding > 0 or self._busy():
            return
        embedder = embeddings.get_embedder()
        if embedder is None:
            return
        try:
            for question in what_search_embeds(str(text)):
                if _shared_vector(embedder, question, wait=False) == "embedded":
                    self.embedded += 1
        except Exception:  # a head start only: the reply embeds its question itself
            logger.exception("a question asked ahead was not embedded")


lane = Lane()
