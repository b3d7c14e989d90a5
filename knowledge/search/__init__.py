"""Finding the help-article passages that answer a question: the search API answerers call.

- `search(query, k)`: the best passages, one per article, best first, each with a confidence
  in [0, 1] to compare with `min_confidence()` (KB_MIN_CONFIDENCE).
- `warm_question(text)`: embed ahead what a search for it will embed.
- `ask_ahead(text)`: as a message arrives, let an idle worker start on its embedding (ahead.py).
- `explain(query)`: what a query searched for and found (for tuning).

The index behind it (index.py) is built from what indexing stored; the modules here, each with
one job: text.py (passages, sentences, index terms), lexical.py (BM25, typo correction,
synonyms, the confidence scale), hybrid.py (BM25 with embeddings and the learned ranker),
index.py (loading and rebuilding the process-wide index).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.conf import settings

from . import ahead
from .index import knowledge_index
from .lexical import Hit, QueryTerm
from .text import analyze, content_words

__all__ = [
    "Hit",
    "QueryTerm",
    "SearchReport",
    "analyze",
    "ask_ahead",
    "content_words",
    "explain",
    "knowledge_index",
    "leaving_out_identical_examples",
    "min_confidence",
    "search",
    "warm_question",
]


def min_confidence() -> float:
    """The confidence below which answerers should say they don't know."""
    return float(settings.KB_MIN_CONFIDENCE)


def warm_question(text: str) -> None:
    """Embed what retrieval will embed for a question, ahead of it, or fetch what a worker
    embedded when it was asked ahead (ahead.warm). A reply calls this with its database
    connection released: embedding waits its turn for the model, and a hundred threads each
    holding a connection while they wait would exhaust the database. Before this process has
    built an index, only the question itself."""
    for question in ahead.what_search_embeds(text):
        ahead.warm(question)


def ask_ahead(text: str) -> None:
    """A customer's message has arrived: a worker with nothing else to embed may start on it."""
    ahead.ask(text)


_leave_out_identical_examples: ContextVar[bool] = ContextVar(
    "leave_out_identical_examples", default=False
)


@contextmanager
def leaving_out_identical_examples() -> Iterator[None]:
    """For evaluating on questions that are themselves example questions: within this block,
    search ignores an example identical to the question asked (it is the answer key, not
    evidence), so the figures are leave-one-out."""
    token = _leave_out_identical_examples.set(True)
    try:
        yield
    finally:
        _leave_out_identical_examples.reset(token)


def search(query: str, k: int = 3) -> list[Hit]:
    """The best passages for a question, one per article, best first (at most k)."""
    return knowledge_index.get().search(
        query, k, leave_out_identical_example=_leave_out_identical_examples.get()
    )


@dataclass(frozen=True)
class SearchReport:
    """For tuning: what a query searched for and what it found."""

    query: str
    terms: list[QueryTerm]
    hits: list[Hit] = field(default_factory=list)


def explain(query: str, k: int = 3) -> SearchReport:
    index = knowledge_index.get()
    return SearchReport(query, index.query_terms(query), index.search(query, k))
