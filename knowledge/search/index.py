"""The process-wide index over the published articles: loaded from the stored passages, their
vectors and the example questions, and rebuilt when they change.

Loading only reads. Passages and vectors are written when articles or example questions are
saved or ingested (knowledge/indexing.py), never on a customer's question: an article whose
passages are not stored yet is not found until they are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from django.db import connections, router
from django.db.models import Q

from knowledge.models import Article, ExampleQuestion
from knowledge.models import Passage as StoredPassage

from .embeddings import Embedder, from_bytes, get_embedder, matrix_from_bytes
from .hybrid import Examples, HybridIndex
from .text import Passage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexedKnowledge:
    """What an index is built from: passages and, when an embedder is configured and every
    passage has a vector from it, their embeddings (one row per passage), with each passage's
    article-title vector and sentence vectors (sentence_owner: the passage of each sentence
    row) for the ranker."""

    passages: list[Passage]
    vectors: np.ndarray | None = None
    title_vectors: np.ndarray | None = None
    sentence_vectors: np.ndarray | None = None
    sentence_owner: np.ndarray | None = None
    examples: Examples | None = None


def load_published_passages() -> IndexedKnowledge:
    """The stored passages of every published article (all languages), in article order."""
    embedder = get_embedder()
    passages: list[Passage] = []
    vectors: list[np.ndarray] = []
    titles: list[np.ndarray] = []
    sentences: list[np.ndarray] = []
    owners: list[int] = []
    rows = (
        StoredPassage.objects.filter(article__published=True)
        .order_by("article_id", "position")
        .values_list(
            "article_id",
            "article__title",
            "article__url",
            "article__tags",
            "article__language",
            "heading",
            "text",
            "position",
            "embedding",
            "embedding_model",
            "title_embedding",
            "sentence_embeddings",
        )
    )
    complete = embedder is not None
    ranked = embedder is not None  # every passage has its title and sentence vectors
    for row in rows.iterator(chunk_size=2000):
        article_id, title, url, tags, language, heading, text, position, blob, model_id = row[:10]
        title_blob, sentence_blob = row[10:]
        tag_list = tuple(str(tag) for tag in tags) if isinstance(tags, list) else ()
        passages.append(
            Passage(article_id, title, url, text, heading, position, tag_list, language)
        )
        if complete and embedder is not None:
            vector = (
                from_bytes(blob, embedder.dim) if blob and model_id == embedder.model_id else None
            )
            if vector is None:
                complete = False  # e.g. embedded by another process with another model
            else:
                vectors.append(vector)
        if ranked and complete and embedder is not None:
            title_vector = from_bytes(title_blob, embedder.dim) if title_blob else None
            sentence_matrix = (
                matrix_from_bytes(sentence_blob, embedder.dim)
                if sentence_blob is not None
                else None
            )
            if title_vector is None or sentence_matrix is None:
                ranked = False
            else:
                titles.append(title_vector)
                sentences.append(sentence_matrix)
                owners.extend([len(passages) - 1] * len(sentence_matrix))
    if not (complete and vectors):
        return IndexedKnowledge(passages)
    if not ranked:
        return IndexedKnowledge(passages, np.vstack(vectors))
    return IndexedKnowledge(
        passages,
        np.vstack(vectors),
        np.vstack(titles),
        np.vstack(sentences) if owners else np.zeros((0, len(vectors[0])), dtype=np.float32),
        np.asarray(owners, dtype=np.int64),
        load_examples(embedder) if embedder is not None else None,
    )


def load_examples(embedder: Embedder) -> Examples:
    """The example questions embedded by this model, of published articles or unanswerable."""
    vectors: list[np.ndarray] = []
    article_ids: list[int] = []
    keys: list[str] = []
    rows = (
        ExampleQuestion.objects.filter(embedding_model=embedder.model_id)
        .filter(Q(article__isnull=True) | Q(article__published=True))
        .order_by("id")
        .values_list("article_id", "key", "embedding")
    )
    for article_id, key, blob in rows.iterator(chunk_size=2000):
        vector = from_bytes(blob, embedder.dim) if blob else None
        if vector is not None:
            vectors.append(vector)
            article_ids.append(article_id or Examples.UNANSWERABLE)
            keys.append(key)
    return Examples(
        np.vstack(vectors) if vectors else np.zeros((0, embedder.dim), dtype=np.float32),
        np.asarray(article_ids, dtype=np.int64),
        tuple(keys),
    )


# --- The process-wide index over the knowledge base ----------------------------------------

Signature = tuple[object, ...]


def knowledge_base_signature() -> Signature:
    """Changes whenever a published article is added, edited, unpublished or deleted, whenever
    indexing stores an article's passages (they get new ids) and whenever an example question
    is added, edited, embedded or deleted.

    One query (it runs before every search). Edits must go through Model.save() (which bumps
    updated_at); a bulk QuerySet.update() should set updated_at too.
    """
    article = Article._meta.db_table
    example = ExampleQuestion._meta.db_table
    passage = StoredPassage._meta.db_table
    connection = connections[router.db_for_read(Article)]
    quote = connection.ops.quote_name
    # Raw because the ORM cannot put several tables' aggregates in one statement. Only quoted
    # table and column names from the models are interpolated; the one value is a parameter.
    article_aggregates = f"COUNT(*), MAX({quote('updated_at')}), MAX({quote('id')})"
    others = [
        (example, "COUNT(*)"),
        (example, f"MAX({quote('updated_at')})"),
        (example, f"MAX({quote('id')})"),
        (passage, "COUNT(*)"),
        (passage, f"MAX({quote('id')})"),
    ]
    other_aggregates = ", ".join(
        f"(SELECT {aggregate} FROM {quote(table)})"  # noqa: S608
        for table, aggregate in others
    )
    sql = (
        f"SELECT {article_aggregates}, {other_aggregates} "  # noqa: S608
        f"FROM {quote(article)} WHERE {quote('published')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [True])
        row = cursor.fetchone()
    return tuple(row) if row else ()


class KnowledgeIndex:
    """Holds the current BM25Index and rebuilds it when the knowledge base changes.

    Readers never block each other: the index is immutable and swapped in whole. One thread
    rebuilds while others asking for the new version wait for it (never a stale answer).
    """

    def __init__(
        self,
        load: Callable[[], IndexedKnowledge | Sequence[Passage]] = load_published_passages,
        signature: Callable[[], Signature] = knowledge_base_signature,
    ) -> None:
        self._load = load
        self._signature = signature
        self._lock = threading.Lock()
        self._current: tuple[Signature, HybridIndex] | None = None

    def get(self) -> HybridIndex:
        signature = self._signature()
        current = self._current
        if current is not None and current[0] == signature:
            return current[1]
        with self._lock:
            current = self._current
            if current is None or current[0] != signature:
                # Read after the signature: if the KB changes meanwhile, the next query sees a
                # newer signature and rebuilds again; it can never keep older text.
                loaded = self._load()
                if not isinstance(loaded, IndexedKnowledge):
                    loaded = IndexedKnowledge(list(loaded))
                index = HybridIndex(
                    loaded.passages,
                    loaded.vectors,
                    get_embedder(),
                    title_vectors=loaded.title_vectors,
                    sentence_vectors=loaded.sentence_vectors,
                    sentence_owner=loaded.sentence_owner,
                    examples=loaded.examples,
                    configured_ranker=True,
                )
                logger.info(
                    "knowledge index built: %d passages from %d articles in %.0f ms (%s)",
                    len(index),
                    len(index.article_ids),
                    index.build_seconds * 1000,
                    ("hybrid, ranked" if index.is_ranked else "hybrid")
                    if index.is_hybrid
                    else "lexical",
                )
                current = self._current = (signature, index)
            return current[1]

    def invalidate(self) -> None:
        with self._lock:
            self._current = None

    def last_built(self) -> HybridIndex | None:
        """The index as last built in this process, without asking the database whether it is
        still current (for work that only warms caches)."""
        current = self._current
        return None if current is None else current[1]


knowledge_index = KnowledgeIndex()
