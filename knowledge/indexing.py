"""Keeping the stored passages (and their embeddings) in step with the articles.

Passages are derived data: `sync_passages` compares each published article's content hash with
the hash its stored passages were cut from, and re-splits and re-embeds only the articles that
changed. Passages of unpublished or deleted articles go. Everything that writes articles or
example questions calls it (the admin after its commit, `ingest_kb` and `load_demo_kb` with a
progress bar, `setup_demo`, importing examples), so the embedding work happens there and never
on a customer's question: the search index only reads what is stored here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.utils import timezone

from .models import Article, ExampleQuestion, Passage, content_hash
from .search.embeddings import Embedder, get_embedder, to_bytes
from .search.text import article_passages, passage_sentences

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (articles done, articles to do)

EMBED_BATCH = 32


@dataclass(frozen=True)
class SyncReport:
    reindexed: int  # articles whose passages were rebuilt
    removed: int  # articles (unpublished or deleted) whose passages were dropped
    embedded: int  # passages that got a (new) embedding


def sync_passages(
    article_ids: Iterable[int] | None = None, *, progress: Progress | None = None
) -> SyncReport:
    """Bring the stored passages up to date (only the given articles, if any are given)."""
    embedder = get_embedder()
    model_id = embedder.model_id if embedder else ""
    articles = Article.objects.filter(published=True)
    stale_passages = Passage.objects.exclude(article__published=True)
    if article_ids is not None:
        ids = list(article_ids)
        articles = articles.filter(id__in=ids)
        stale_passages = stale_passages.filter(article_id__in=ids)
    removed = len(set(stale_passages.values_list("article_id", flat=True)))
    if removed:
        stale_passages.delete()

    stored: dict[int, tuple[str, bool]] = {}
    with_sentences = ExpressionWrapper(
        Q(sentence_embeddings__isnull=False), output_field=BooleanField()
    )
    for article_id, article_hash, embedding_model, has_sentences in (
        Passage.objects.filter(article__in=articles)
        .annotate(has_sentences=with_sentences)
        .values_list("article_id", "article_hash", "embedding_model", "has_sentences")
    ):
        previous = stored.get(article_id)
        # Passages embedded before sentence vectors existed are embedded again, once.
        complete = has_sentences or embedder is None
        up_to_date = embedding_model == model_id and complete and (previous is None or previous[1])
        stored[article_id] = (article_hash, up_to_date)

    todo: list[Article] = []
    for article in articles.only("id", "title", "body", "url", "tags").order_by("id"):
        have = stored.get(article.id)
        if have is None or have[0] != article.content_hash or not have[1]:
            todo.append(article)

    embedded = 0
    for done, article in enumerate(todo, start=1):
        embedded += _reindex(article, embedder)
        if progress is not None:
            progress(done, len(todo))
    if todo or removed:
        logger.info("passages synced: %d articles re-indexed, %d removed", len(todo), removed)
    return SyncReport(reindexed=len(todo), removed=removed, embedded=embedded)


def _reindex(article: Article, embedder: Embedder | None) -> int:
    tags = [str(t) for t in article.tags] if isinstance(article.tags, list) else []
    pieces = article_passages(article.id, article.title, article.body or "", article.url, tags)
    article_hash = content_hash(article.title, article.body, article.url, article.tags)
    vectors = title_vector = None
    sentence_vectors: list[bytes] = []
    if embedder is not None and pieces:
        # One call for the whole article: its passages, its title, then each passage's sentences.
        sentences = [passage_sentences(piece.text) for piece in pieces]
        texts = [p.indexed_text for p in pieces] + [article.title]
        everything = embedder.embed_passages_cached(texts + [s for ss in sentences for s in ss])
        vectors = everything[: len(pieces)]
        title_vector = to_bytes(everything[len(pieces)])
        start = len(texts)
        for piece_sentences in sentences:
            end = start + len(piece_sentences)
            sentence_vectors.append(to_bytes(everything[start:end]))
            start = end
    rows = [
        Passage(
            article_id=article.id,
            position=piece.position,
            heading=piece.heading[:300],
            text=piece.text,
            article_hash=article_hash,
            embedding=to_bytes(vectors[i]) if vectors is not None else None,
            embedding_model=embedder.model_id if vectors is not None and embedder else "",
            title_embedding=title_vector,
            sentence_embeddings=sentence_vectors[i] if vectors is not None else None,
        )
        for i, piece in enumerate(pieces)
    ]
    try:
        with transaction.atomic():
            # Lock the article so two processes syncing at once take turns.
            current = (
                Article.objects.select_for_update()
                .filter(id=article.id)
                .values_list("title", "body", "url", "tags", "published")
            ).first()
            if current is None or not current[4]:
                Passage.objects.filter(article_id=article.id).delete()
                return 0
            if content_hash(*current[:4]) != article_hash:
                return 0  # edited again meanwhile: the next sync takes the new text
            Passage.objects.filter(article_id=article.id).delete()
            Passage.objects.bulk_create(rows)
    except IntegrityError:  # another process inserted the same passages first
        logger.info("passages of article %s were re-indexed by another process", article.id)
        return 0
    return len(rows) if vectors is not None else 0


def _store_example_vector_sql() -> str:
    q = connection.ops.quote_name
    # Only the model's own table and column names go into the text; every value is a parameter.
    table = q(ExampleQuestion._meta.db_table)
    return f"UPDATE {table} SET {q('embedding')} = %s, {q('embedding_model')} = %s, {q('updated_at')} = %s WHERE {q('id')} = %s AND {q('key')} = %s"  # noqa: E501, S608


def sync_example_questions() -> int:
    """Embed the example questions that have no vector from the current embedding model (new,
    edited, or embedded by another model). Returns how many were embedded."""
    embedder = get_embedder()
    if embedder is None:
        return 0
    todo = list(
        ExampleQuestion.objects.filter(
            Q(embedding__isnull=True) | ~Q(embedding_model=embedder.model_id)
        )
        .order_by("id")
        .values_list("id", "key", "text")
    )
    embedded = 0
    store_vector = _store_example_vector_sql()
    for start in range(0, len(todo), EMBED_BATCH):
        batch = todo[start : start + EMBED_BATCH]
        vectors = embedder.embed_queries_cached([text for _, _, text in batch])
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        # Only if the text is still the one embedded: an edit meanwhile waits for the next sync.
        # updated_at too: the search index rebuilds when it changes. One statement run for the
        # whole batch (the demo's 1,187 questions are embedded at every fresh start): the ORM
        # would compile it once a question, bulk_update is slower still.
        with connection.cursor() as cursor:
            cursor.executemany(
                store_vector,
                [
                    (to_bytes(vector), embedder.model_id, now, example_id, key)
                    for (example_id, key, _), vector in zip(batch, vectors, strict=True)
                ],
            )
            embedded += max(cursor.rowcount, 0)
    if embedded:
        logger.info("example questions embedded: %d", embedded)
    return embedded


def sync_example_questions_after_commit() -> None:
    """Embed new or edited example questions once the current transaction commits (the next
    search would do it otherwise, on a customer's time)."""
    transaction.on_commit(sync_example_questions, robust=True)
