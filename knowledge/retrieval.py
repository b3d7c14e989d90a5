"""Finding the help-article passages that answer a question.

The pieces, each usable on its own:

- `split_markdown` / `article_passages`: an article's Markdown body cut into passages of about
  40-120 words along its headings and paragraphs. Each `Passage` knows its article.
- `Analyzer`: text to index terms (NFKC, lower case, English stopwords, Snowball stemming).
- `BM25Index`: an immutable BM25 index (bm25s) over passages, in two fields: the article's title
  and tags, and the passage's heading and text. Questions are cleaned of filler words ("hi,
  could you please tell me..."), unknown words are corrected to an indexed word one typo away,
  and synonyms are searched too. `search()` ranks passages and gives each hit a `confidence`.
- `KnowledgeIndex`: the process-wide index over published articles. Each query checks a cheap
  signature of the knowledge base (one aggregate query); the index is rebuilt only when it
  changed. Thread-safe.
- `search(query, k)`: the function answerers call.

Ranking is BM25 (title boosted) times the share of the question the passage covers, like
Lucene's classic "coord": a passage that repeats one word of the question does not outrank one
that has all of them.

Confidence. BM25 scores are unbounded and depend on the corpus, so they cannot carry a
threshold. `confidence` (in [0, 1]) measures how much of the question the passage covers:

    coverage = sum(idf of the question's words found in the passage) / sum(idf of all of them)
    strength = min(1, score / (sum(idf of the matched words) * BM25's factor for one mention))
    confidence = coverage * (0.8 + 0.2 * strength)

Coverage is IDF-weighted, so "what is the capital of France" gains nothing from a passage that
mentions "what", and a question about "Klarna refunds" that finds only "refund" gets about
half. A word the knowledge base has never seen weighs as much as the rarest indexed word (words
with digits, such as order numbers, weigh nothing). Typo corrections and synonyms count 0.8.
`strength` tells a passing mention from a passage about the matched words. A threshold thus
reads as "this share of what was asked is in the passage": with the default of 0.5, a question
with one known and one never-seen word of similar weight is not answered.

Later retrievers (embeddings, hybrid) can produce the same `Hit`s from the same `Passage`s.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS
from django.conf import settings

from . import embeddings
from .embeddings import Embedder, get_embedder
from .language import looks_english, question_key
from .ranking import (
    CANDIDATES,
    EXAMPLE_FEATURES,
    FEATURES,
    NEUTRAL_SIMILARITY,
    Ranker,
    get_ranker,
    similarity_feature,
)

logger = logging.getLogger(__name__)

#: The default "don't know" threshold on `Hit.confidence`; settings.KB_MIN_CONFIDENCE overrides.
DEFAULT_MIN_CONFIDENCE = 0.5

PASSAGE_MIN_WORDS = 40
PASSAGE_MAX_WORDS = 120

# Words that carry no topic in a customer's question ("hi, could you please help me ...").
# They are dropped from queries only; articles are indexed as written.
_FILLER_TEXT = """
    hi hello hey hiya howdy dear please pls plz thanks thank thx cheers help helping want
    wanted wanna need needed like would could might may must shall know knew tell told
    get getting got anyone someone somebody anybody something anything way ways possible
    question questions ok okay yes yeah yep good morning afternoon evening guys team able
    also still already actually really much many lot lots one ones since ever even else
    make made come comes go goes going try trying tried see look looking let lets take takes
    offer offers provide provides sell sells
    dont doesnt didnt cant cannot wont isnt arent wasnt werent havent hasnt hadnt wouldnt
    couldnt shouldnt im ive id youre thats whats wheres hows theres us
"""
QUERY_FILLER_WORDS = frozenset(_FILLER_TEXT.split())
# How much a typo-corrected word or a synonym counts, compared with the word itself.
RELATED_TERM_WEIGHT = 0.8

# Groups of words customers use interchangeably in customer service. A question's word also
# searches the other words of its group (at RELATED_TERM_WEIGHT). Extend with the setting
# KB_QUERY_SYNONYMS, a list of such groups. Single words only (hyphenated ones are joined).
DEFAULT_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("warranty", "guarantee"),
    ("parcel", "package", "shipment"),
    ("refund", "reimbursement", "reimburse"),
    ("invoice", "receipt"),
    ("cancel", "unsubscribe"),
    ("delete", "erase"),
    ("faulty", "defective"),
    ("damaged", "broken"),
    ("swap", "exchange"),
    ("human", "person", "agent", "representative"),
    ("phone", "telephone"),
    ("subscription", "membership"),
    ("password", "passcode"),
    ("2fa", "mfa", "two-factor"),
    ("wifi", "wlan", "wireless"),
    ("shop", "store"),
    ("colour", "color"),
    ("authorise", "authorize"),
)


def min_confidence() -> float:
    """The confidence below which answerers should say they don't know."""
    return float(getattr(settings, "KB_MIN_CONFIDENCE", DEFAULT_MIN_CONFIDENCE))


# --- Passages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    """A piece of an article: the unit that is indexed, retrieved and answered from."""

    article_id: int
    title: str
    url: str
    text: str  # Markdown, without the heading it starts under
    heading: str = ""  # the section heading the passage starts under ("" for the intro)
    position: int = 0  # order within the article
    tags: tuple[str, ...] = ()

    @property
    def indexed_text(self) -> str:
        """Title, heading and text: what a retriever should see of the passage."""
        return "\n".join(part for part in (self.title, self.heading, self.text) if part)


_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”')\]]*\s+(?=[\"“(\[*]?[A-Z0-9])")


@dataclass
class _Block:
    kind: str  # "heading", "list", "text" or "code"
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def words(self) -> int:
        return len(self.text.split())


def _blocks(markdown: str) -> list[_Block]:
    """Headings, paragraphs, lists and code fences, in order."""
    blocks: list[_Block] = []
    current: _Block | None = None
    fence: str | None = None
    for raw in markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.rstrip()
        if fence is not None:
            assert current is not None
            current.lines.append(line)
            if line.strip().startswith(fence):
                fence, current = None, None
            continue
        fence_match = _FENCE.match(line)
        if fence_match:
            fence = fence_match.group(1)
            current = _Block("code", [line])
            blocks.append(current)
            continue
        if not line.strip():
            current = None
            continue
        heading = _HEADING.match(line)
        if heading:
            blocks.append(_Block("heading", [heading.group(2)]))
            current = None
            continue
        is_item = bool(_LIST_ITEM.match(line))
        if current is not None and (current.kind == "list" or not is_item):
            current.lines.append(line)  # list continuation lines stay with their list
        else:
            current = _Block("list" if is_item else "text", [line])
            blocks.append(current)
    return blocks


def _split_long(block: _Block, max_words: int) -> list[_Block]:
    """Cut a block longer than max_words into list items or sentences, grouped back up."""
    if block.kind == "list":
        units: list[str] = []
        for line in block.lines:
            if _LIST_ITEM.match(line) or not units:
                units.append(line)
            else:
                units[-1] += "\n" + line
        joiner = "\n"
    elif block.kind == "text":
        units = [s for s in _SENTENCE_END.split(" ".join(block.lines)) if s.strip()]
        joiner = " "
    else:
        return [block]
    pieces: list[_Block] = []
    words = 0
    for unit in units:
        unit_words = len(unit.split())
        if pieces and words + unit_words <= max_words:
            pieces[-1].lines[-1] += joiner + unit
            words += unit_words
        else:
            pieces.append(_Block(block.kind, [unit]))
            words = unit_words
    for piece in pieces:
        piece.lines = piece.text.split("\n")
    return pieces


def split_markdown(
    markdown: str, *, min_words: int = PASSAGE_MIN_WORDS, max_words: int = PASSAGE_MAX_WORDS
) -> list[tuple[str, str]]:
    """Cut a Markdown body into (heading, text) passages of about min..max words.

    Headings start a new passage once the current one has min_words; a short section is kept
    with the next one (its heading stays in the text as a `## Heading` line). Paragraphs and
    lists are never cut unless a single one is longer than max_words.
    """
    passages: list[tuple[str, str]] = []
    parts: list[str] = []
    words = 0
    heading = ""  # the heading the current passage starts under
    section = ""  # the heading of the section we are in

    def flush() -> None:
        nonlocal parts, words
        if parts:
            passages.append((heading, "\n\n".join(parts)))
        parts, words = [], 0

    for block in _blocks(markdown):
        if block.kind == "heading":
            section = block.text
            if words >= min_words:
                flush()
            if not parts:
                heading = section
            else:
                parts.append(f"## {section}")
            continue
        pieces = [block] if block.words <= max_words else _split_long(block, max_words)
        for piece in pieces:
            if parts and words >= min_words and words + piece.words > max_words:
                flush()
                heading = section
            parts.append(piece.text)
            words += piece.words
    if parts and words < min_words and passages:
        # A short tail joins the passage before it rather than standing alone.
        last_heading, last_text = passages.pop()
        tail = "\n\n".join(parts if heading == last_heading else [f"## {heading}", *parts])
        passages.append((last_heading, f"{last_text}\n\n{tail}"))
    else:
        flush()
    return passages


def article_passages(
    article_id: int,
    title: str,
    body: str,
    url: str = "",
    tags: Iterable[str] = (),
) -> list[Passage]:
    tags = tuple(tags)
    return [
        Passage(article_id, title, url, text, heading, position, tags)
        for position, (heading, text) in enumerate(split_markdown(body))
    ]


_MARKDOWN_LINE_START = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d{1,3}[.)]\s+|>\s*)")
_MARKDOWN_EMPHASIS = re.compile(r"[*_`]+")
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
MAX_SENTENCES_PER_PASSAGE = 16


def passage_sentences(text: str) -> list[str]:
    """The sentences (and list items) of a passage, as plain text, for sentence embeddings:
    at least 3 words each, at most MAX_SENTENCES_PER_PASSAGE of them."""
    sentences: list[str] = []
    for line in text.split("\n"):
        line = _MARKDOWN_LINE_START.sub("", line)
        line = _MARKDOWN_EMPHASIS.sub("", _MARKDOWN_LINK.sub(r"\1", line)).strip()
        for sentence in _SENTENCE_END.split(line):
            sentence = sentence.strip()
            if len(sentence.split()) >= 3:
                sentences.append(sentence[:400])
    return sentences[:MAX_SENTENCES_PER_PASSAGE]


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


@dataclass(frozen=True)
class Examples:
    """The example questions (knowledge.ExampleQuestion) with vectors from the index's model:
    one row each, with the article that answers it (UNANSWERABLE for none) and its question
    key (knowledge.language.question_key)."""

    UNANSWERABLE = 0  # article ids start at 1

    vectors: np.ndarray  # (n, dim), float32, normalised query embeddings
    article_ids: np.ndarray  # (n,) int64
    keys: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.keys)


def load_published_passages() -> IndexedKnowledge:
    """The stored passages of every published article (all languages), in article order,
    brought up to date first (only changed articles are re-split and re-embedded)."""
    from .embeddings import from_bytes, get_embedder, matrix_from_bytes
    from .indexing import sync_example_questions, sync_passages
    from .models import Passage as StoredPassage

    sync_passages()
    sync_example_questions()
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
        article_id, title, url, tags, heading, text, position, blob, model_id = row[:9]
        title_blob, sentence_blob = row[9:]
        tag_list = tuple(str(tag) for tag in tags) if isinstance(tags, list) else ()
        passages.append(Passage(article_id, title, url, text, heading, position, tag_list))
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
    from django.db.models import Q

    from .embeddings import from_bytes
    from .models import ExampleQuestion

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


# --- Text analysis -------------------------------------------------------------------------

_HTML_TAG = re.compile(r"<[^>\n]{0,200}>")
_LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
_BARE_URL = re.compile(r"https?://\S+")
_PLAIN_WORD = re.compile(r"[^\W_]+")
_HYPHENATED = re.compile(r"[^\W_]+(?:-[^\W_]+)+")
_POSSESSIVE = re.compile(r"(?<=[^\W_])'s\b")
_HYPHENS = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2019": "'", "\u2018": "'", "`": "'"})


def _osa_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (edits incl. adjacent swaps), capped at limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


class Analyzer:
    """Text to terms: NFKC, lower case, words (hyphenated words also joined: wi-fi -> wifi),
    English stopwords removed, Snowball-stemmed. The same analysis runs on passages and on
    questions, so their terms meet."""

    def __init__(self, stopwords: Iterable[str] = STOPWORDS_EN_PLUS, language: str = "english"):
        self.stopwords = frozenset(stopwords)
        self.language = language
        self._local = threading.local()  # PyStemmer stemmers are not thread-safe
        self._stems: dict[str, str] = {}  # word -> stem, for every thread

    def _stemmer(self) -> Any:
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            stemmer = self._local.stemmer = Stemmer.Stemmer(self.language)
            stemmer.maxCacheSize = 0  # self._stems caches, faster and shared by threads
        return stemmer

    def words(self, text: str) -> list[str]:
        """Lower-case content words (before stemming), as a bag: "wi-fi" gives wi, fi and wifi,
        "device's" gives device."""
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text).translate(_HYPHENS)
        text = text.lower()
        if "<" in text or "http" in text or "](" in text:
            text = _BARE_URL.sub(" ", _LINK_TARGET.sub("]", _HTML_TAG.sub(" ", text)))
        if "'" in text:
            text = _POSSESSIVE.sub("", text)
        tokens = _PLAIN_WORD.findall(text)
        if "-" in text:
            tokens += [word.replace("-", "") for word in _HYPHENATED.findall(text)]
        stopwords = self.stopwords
        return [token for token in tokens if len(token) > 1 and token not in stopwords]

    def stem(self, words: list[str]) -> list[str]:
        cache = self._stems
        known: dict[str, str] = {}
        missing: list[str] = []
        for word in set(words):
            stem = cache.get(word)
            if stem is None:
                missing.append(word)
            else:
                known[word] = stem
        if missing:
            new = dict(zip(missing, self._stemmer().stemWords(missing), strict=True))
            known.update(new)
            if len(cache) > 200_000:
                cache.clear()
            cache.update(new)
        return [known[word] for word in words]

    def terms(self, text: str) -> list[str]:
        return self.stem(self.words(text))


DEFAULT_ANALYZER = Analyzer()


def analyze(text: str) -> list[str]:
    """The index terms of a text, as the default index sees them."""
    return DEFAULT_ANALYZER.terms(text)


def content_words(query: str) -> list[str]:
    """The words of a question that can be searched for (no stopwords or filler words).
    Empty for "hi", "??" or "can you help me?"."""
    return [w for w in DEFAULT_ANALYZER.words(query[:2000]) if w not in _filler_words()]


# --- The BM25 index -----------------------------------------------------------------------


@dataclass(frozen=True)
class QueryTerm:
    """One content word of a question and the index terms searched for it."""

    word: str  # as the customer wrote it (lower case)
    stem: str  # its own index term
    # (index term, weight): the word itself (1.0) if indexed, else its typo correction, plus
    # synonyms; the other variants count RELATED_TERM_WEIGHT.
    variants: tuple[tuple[str, float], ...] = ()
    corrected: bool = False  # the word is not indexed; its first variant is a typo correction
    # How much the word weighs in the question: the idf of the word itself (or of its best
    # stand-in); for an unknown word as much as the rarest term; 0 for an unknown word with
    # digits (order numbers, times and amounts are details, not topics).
    weight: float = 0.0

    def weight_in(self, terms: set[str] | frozenset[str]) -> float:
        """How much of this word a text with these index terms covers."""
        return self.weight * max((w for stem, w in self.variants if stem in terms), default=0.0)


@dataclass(frozen=True)
class Hit:
    article_id: int
    title: str
    url: str
    text: str  # the passage, Markdown
    score: float  # BM25 x coverage, the ranking key; comparable only within one query
    confidence: float  # in [0, 1]; compare with min_confidence()
    heading: str = ""
    matched_terms: tuple[str, ...] = ()  # the index terms searched for that this passage has
    # The question's words with their weights and variants: what an answerer can use to pick
    # the sentences of the passage that matter (QueryTerm.weight_in).
    query_terms: tuple[QueryTerm, ...] = ()


def _is_substitution(a: str, b: str) -> bool:
    """Same length and differing in exactly one position (think/thing, tower/power)."""
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


class _SpellIndex:
    """Finds an indexed word within one edit (two for long words) of an unknown word, by
    matching single-character deletions on both sides (the SymSpell idea): a few dictionary
    lookups per query word, no scan of the vocabulary."""

    # Short words have too many real neighbours (cats/chats): from 5 letters, and below 6
    # only a missing, extra or swapped letter, not a replaced one (thing/think, tower/power).
    MIN_LENGTH = 5
    MAX_INDEXED_LENGTH = 24

    def __init__(self, words: Iterable[str]):
        self.deletes: dict[str, list[str]] = {}
        for word in set(words):
            if self.MIN_LENGTH - 1 <= len(word) <= self.MAX_INDEXED_LENGTH and word.isalpha():
                for key in {word, *self._deletions(word)}:
                    self.deletes.setdefault(key, []).append(word)

    @staticmethod
    def _deletions(word: str) -> set[str]:
        return {word[:i] + word[i + 1 :] for i in range(len(word))}

    def candidates(self, word: str) -> list[tuple[int, str]]:
        if len(word) < self.MIN_LENGTH or not word.isalpha():
            return []
        limit = 1 if len(word) < 8 else 2
        found: set[str] = set()
        for key in {word, *self._deletions(word)}:
            found.update(self.deletes.get(key, ()))
        scored = [(_osa_distance(word, other, limit), other) for other in found]
        return sorted(
            (d, other)
            for d, other in scored
            if 0 < d <= limit and (len(word) >= 6 or not _is_substitution(word, other))
        )


@dataclass(frozen=True)
class _Field:
    """One field of the passages as bm25s indexes it: a sparse matrix with, per term, the
    passages that contain it and their BM25 score for it."""

    boost: float
    vocab: dict[str, int]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray

    @classmethod
    def build(cls, corpus: list[list[str]], boost: float, k1: float, b: float) -> _Field:
        if not any(corpus):  # bm25s cannot index an empty vocabulary
            empty = np.zeros(0)
            return cls(boost, {}, empty, empty.astype(np.int32), np.zeros(1, dtype=np.int32))
        model = bm25s.BM25(method="lucene", k1=k1, b=b)
        model.index(corpus, create_empty_token=False, show_progress=False)
        return cls(
            boost,
            dict(model.vocab_dict),
            np.asarray(model.scores["data"], dtype=np.float64),
            np.asarray(model.scores["indices"]),
            np.asarray(model.scores["indptr"]),
        )

    def column(self, stem: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(passages containing the term, their BM25 scores for it), or None."""
        tid = self.vocab.get(stem)
        if tid is None:
            return None
        start, end = self.indptr[tid], self.indptr[tid + 1]
        return self.indices[start:end], self.data[start:end]


class BM25Index:
    """An immutable BM25 index over passages. Build once, query from any number of threads.

    Two fields, as in BM25F: the article's title with its tags (weighted `title_boost`), and the
    passage's heading and text. Every passage of an article shares the title, so the title picks
    the article and the text picks the passage; a question that is all title words lands on the
    article's first passage. Scoring reads bm25s's precomputed sparse matrices directly: one
    slice per query term and field.
    """

    def __init__(
        self,
        passages: Sequence[Passage],
        *,
        analyzer: Analyzer = DEFAULT_ANALYZER,
        k1: float = 1.2,
        b: float = 0.75,
        title_boost: float = 1.5,
    ) -> None:
        started = time.perf_counter()
        self.analyzer = analyzer
        self.k1, self.b, self.title_boost = k1, b, title_boost
        # Words first; then each distinct word is stemmed once for the whole corpus.
        title_words: list[list[str]] = []
        body_words: list[list[str]] = []
        kept: list[Passage] = []
        surface: set[str] = set()
        last_title: tuple[tuple[str, tuple[str, ...]], list[str]] | None = None
        for passage in passages:
            key = (passage.title, passage.tags)
            if last_title is None or last_title[0] != key:  # an article's passages share it
                last_title = (key, analyzer.words(" ".join((passage.title, *passage.tags))))
            title = last_title[1]
            body = analyzer.words(f"{passage.heading}\n{passage.text}")
            if not title and not body:
                continue
            kept.append(passage)
            title_words.append(title)
            body_words.append(body)
            surface.update(title)
            surface.update(body)
        surface_list = sorted(surface)
        stem_of = dict(zip(surface_list, analyzer.stem(surface_list), strict=True))
        titles = [[stem_of[w] for w in words] for words in title_words]
        bodies = [[stem_of[w] for w in words] for words in body_words]
        df: Counter[str] = Counter()
        for title_terms, body_terms in zip(titles, bodies, strict=True):
            df.update(set(title_terms).union(body_terms))

        self.passages: tuple[Passage, ...] = tuple(kept)
        n = len(kept)
        self._fields = (
            _Field.build(titles, title_boost, k1, b),
            _Field.build(bodies, 1.0, k1, b),
        )
        self._df = df
        # Lucene's idf over passages, counting a term once per passage whichever field has it.
        self._idf = {term: math.log(1 + (n - f + 0.5) / (f + 0.5)) for term, f in df.items()}
        # The weight of a term the knowledge base has never seen: as rare as a term can be.
        self.unknown_idf = math.log(1 + (n + 0.5) / 0.5)
        # BM25's term-frequency factor for one occurrence in an average-length passage: the
        # yardstick for `strength` (a score of sum(idf) * this = one plain mention of each term).
        self._one_mention = 1 / (1 + k1)
        self._stem_of = stem_of
        # Built on the first question with an unknown word: most questions need none.
        self._spell: _SpellIndex | None = None
        self._spell_lock = threading.Lock()
        self.article_ids = frozenset(p.article_id for p in kept)
        self.build_seconds = time.perf_counter() - started

    def __len__(self) -> int:
        return len(self.passages)

    def query_terms(self, query: str) -> list[QueryTerm]:
        """The question's content words (fillers and stopwords dropped, duplicates removed,
        at most 32), each with the index terms to search: itself, or if it is not indexed its
        correction within one edit, plus its synonyms. A word with no variants is unknown."""
        fillers = _filler_words()
        words = [w for w in self.analyzer.words(query[:2000]) if w not in fillers]
        stems = self.analyzer.stem(words)
        synonyms = _synonym_map()
        terms: dict[str, QueryTerm] = {}
        for word, stem in zip(words, stems, strict=True):
            if stem in terms:
                continue
            variants: list[tuple[str, float]] = []
            correction = None
            if stem in self._idf:
                variants.append((stem, 1.0))
            else:
                correction = self._correct(word)
                if correction is not None:
                    variants.append((correction, RELATED_TERM_WEIGHT))
            for synonym in synonyms.get(stem, ()):
                if synonym in self._idf and all(synonym != v for v, _ in variants):
                    variants.append((synonym, RELATED_TERM_WEIGHT))
            if variants:
                # As much as the word itself if indexed, else as its best stand-in.
                exact = variants[0][1] == 1.0
                weight = self._idf[stem] if exact else max(self._idf[v] for v, _ in variants)
            else:
                weight = 0.0 if any(c.isdigit() for c in word) else self.unknown_idf
            terms[stem] = QueryTerm(word, stem, tuple(variants), correction is not None, weight)
            if len(terms) >= 32:
                break
        return list(terms.values())

    def _correct(self, word: str) -> str | None:
        spell = self._spell
        if spell is None:
            with self._spell_lock:
                spell = self._spell
                if spell is None:
                    spell = self._spell = _SpellIndex(self._stem_of)
        candidates = spell.candidates(word)
        if not candidates:
            return None
        best_distance = candidates[0][0]
        best = [self._stem_of[w] for d, w in candidates if d == best_distance]
        # Prefer the most widely used of equally close words.
        return max(best, key=lambda stem: (self._df[stem], stem))

    def score(self, query: str) -> LexicalScores | None:
        """Every passage's BM25 rank and confidence for the question (see the module's doc),
        or None when no word of the question is indexed."""
        if not self.passages or not query or not query.strip():
            return None
        terms = self.query_terms(query)
        if not any(term.variants for term in terms):
            return None
        n = len(self.passages)
        scores = np.zeros(n)
        covered = np.zeros(n)  # idf-weighted share of the question the passage has
        matched = np.zeros(n)  # the score one plain mention of those words would give
        total_weight = 0.0
        presence: list[tuple[str, np.ndarray]] = []
        for term in terms:
            total_weight += term.weight
            if not term.variants:  # an unknown word: a part of the question nothing covers
                continue
            # Variants of one word (its correction, synonyms): the best one counts, not the sum.
            term_score, term_covered, term_matched = np.zeros((3, n))
            for stem, weight in term.variants:
                score = np.zeros(n)
                present = np.zeros(n, dtype=bool)
                for field_ in self._fields:
                    column = field_.column(stem)
                    if column is not None:
                        docs, data = column
                        score[docs] += weight * field_.boost * data
                        present[docs] = True
                presence.append((stem, present))
                np.maximum(term_score, score, out=term_score)
                np.maximum(term_covered, present * (weight * term.weight), out=term_covered)
                unit = weight * self._idf[stem] * self._one_mention
                np.maximum(term_matched, present * unit, out=term_matched)
            scores += term_score
            covered += term_covered
            matched += term_matched
        if total_weight <= 0 or not scores.any():
            return None
        coverage = covered / total_weight
        with np.errstate(divide="ignore", invalid="ignore"):
            strength = np.where(matched > 0, np.minimum(1.0, scores / matched), 0.0)
        return LexicalScores(
            terms=tuple(terms),
            # BM25 times the share of the question covered (Lucene's classic "coord"), so a
            # passage that repeats one word of the question doesn't outrank one with them all.
            rank=scores * coverage,
            confidence=np.minimum(1.0, coverage * (0.8 + 0.2 * strength)),
            presence=tuple(presence),
        )

    def search(self, query: str, k: int = 3, *, distinct_articles: bool = True) -> list[Hit]:
        """The k best passages, best first, each with its confidence (see the module's doc).

        With distinct_articles, only the best passage of each article is returned.
        """
        if k <= 0:
            return []
        lexical = self.score(query)
        if lexical is None:
            return []
        return self.hits(lexical.rank, lexical.confidence, lexical, k, distinct_articles)

    def hits(
        self,
        rank: np.ndarray,
        confidence: np.ndarray,
        lexical: LexicalScores | None,
        k: int,
        distinct_articles: bool = True,
    ) -> list[Hit]:
        """The k passages ranked highest by `rank` (> 0) as Hits, best first."""
        candidates = np.flatnonzero(rank > 0)
        if not len(candidates):
            return []
        pool = min(len(candidates), max(k * 8, 32) if distinct_articles else k)
        if pool < len(candidates):
            candidates = candidates[np.argpartition(-rank[candidates], pool - 1)[:pool]]
        # Best first; on a tie, the earlier passage (the index keeps article order).
        order = candidates[np.lexsort((candidates, -np.round(rank[candidates], 9)))]
        hits: list[Hit] = []
        seen: set[int] = set()
        for doc in (int(d) for d in order):
            article_id = self.passages[doc].article_id
            if distinct_articles and article_id in seen:
                continue
            seen.add(article_id)
            hits.append(self.hit(doc, float(rank[doc]), float(confidence[doc]), lexical))
            if len(hits) >= k:
                break
        return hits

    def hit(self, doc: int, score: float, confidence: float, lexical: LexicalScores | None) -> Hit:
        """Passage `doc` as a Hit, with what the question's words matched in it."""
        passage = self.passages[doc]
        return Hit(
            article_id=passage.article_id,
            title=passage.title,
            url=passage.url,
            text=passage.text,
            score=score,
            confidence=round(confidence, 4),
            heading=passage.heading,
            matched_terms=lexical.matched_terms(doc) if lexical else (),
            query_terms=lexical.terms if lexical else (),
        )


@dataclass(frozen=True)
class LexicalScores:
    """One question's BM25 results over every passage of an index (arrays by passage)."""

    terms: tuple[QueryTerm, ...]
    rank: np.ndarray
    confidence: np.ndarray
    presence: tuple[tuple[str, np.ndarray], ...]

    @property
    def known_share(self) -> float:
        """The idf-weighted share of the question's words that the index knows (or corrects)."""
        total = sum(term.weight for term in self.terms)
        known = sum(term.weight for term in self.terms if term.variants)
        return known / total if total > 0 else 0.0

    def matched_terms(self, doc: int) -> tuple[str, ...]:
        return tuple(dict.fromkeys(stem for stem, present in self.presence if present[doc]))


_fillers_cache: tuple[str, frozenset[str]] | None = None
_synonyms_cache: tuple[object, dict[str, tuple[str, ...]]] | None = None


def _synonym_map() -> dict[str, tuple[str, ...]]:
    """stem -> the stems of its synonyms, from DEFAULT_SYNONYMS and KB_QUERY_SYNONYMS."""
    global _synonyms_cache
    extra = tuple(tuple(group) for group in getattr(settings, "KB_QUERY_SYNONYMS", ()))
    if _synonyms_cache is None or _synonyms_cache[0] != extra:
        mapping: dict[str, set[str]] = {}
        for group in (*DEFAULT_SYNONYMS, *extra):
            stems = []
            for word in group:
                words = DEFAULT_ANALYZER.words(str(word))
                if words:  # "two-factor" -> [two, factor, twofactor]: the joined form
                    stems.append(DEFAULT_ANALYZER.stem(words[-1:])[0])
            for stem in stems:
                mapping.setdefault(stem, set()).update(s for s in stems if s != stem)
        _synonyms_cache = (extra, {k: tuple(sorted(v)) for k, v in mapping.items()})
    return _synonyms_cache[1]


def _filler_words() -> frozenset[str]:
    """QUERY_FILLER_WORDS plus the words of the company name (present in every article)."""
    global _fillers_cache
    company = str(getattr(settings, "COMPANY_NAME", "") or "")
    if _fillers_cache is None or _fillers_cache[0] != company:
        words = set(QUERY_FILLER_WORDS) | set(DEFAULT_ANALYZER.words(company))
        _fillers_cache = (company, frozenset(words))
    return _fillers_cache[1]


# --- The process-wide index over the knowledge base ----------------------------------------

Signature = tuple[object, ...]


def knowledge_base_signature() -> Signature:
    """Changes whenever a published article is added, edited, unpublished or deleted, and
    whenever an example question is.

    One query (it runs before every search). Edits must go through Model.save() (which bumps
    updated_at); a bulk QuerySet.update() should set updated_at too.
    """
    from django.db import connections, router

    from .models import Article, ExampleQuestion

    article = Article._meta.db_table
    example = ExampleQuestion._meta.db_table
    connection = connections[router.db_for_read(Article)]
    quote = connection.ops.quote_name
    # Raw because the ORM cannot put two tables' aggregates in one statement. Only quoted
    # table and column names from the models are interpolated; the one value is a parameter.
    article_aggregates = f"COUNT(*), MAX({quote('updated_at')}), MAX({quote('id')})"
    example_aggregates = ", ".join(
        f"(SELECT {aggregate} FROM {quote(example)})"  # noqa: S608
        for aggregate in ("COUNT(*)", f"MAX({quote('updated_at')})", f"MAX({quote('id')})")
    )
    sql = (
        f"SELECT {article_aggregates}, {example_aggregates} "  # noqa: S608
        f"FROM {quote(article)} WHERE {quote('published')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [True])
        row = cursor.fetchone()
    return tuple(row) if row else ()


#: How much the embedding similarity counts in a hybrid confidence when every word of the
#: question is in the knowledge base's vocabulary (the rest is lexical); it grows towards 1 as
#: the share of unknown words grows.
SEMANTIC_WEIGHT = 0.5


class HybridIndex:
    """BM25 plus sentence embeddings over the same passages, with one confidence scale, and a
    learned ranker on top when one is configured.

    Each passage gets a lexical confidence (BM25Index: the share of the question it covers) and
    a semantic one (the embedding model's cosine similarity rescaled so that an unrelated pair
    scores 0 and a clear match 1, see Embedder.semantic_confidence). The hybrid confidence is
    their weighted sum: SEMANTIC_WEIGHT for a question whose words the knowledge base all
    knows, up to all semantic for one in another language (BM25 has nothing to say about
    those). Words unknown to the knowledge base in an *English* question are not a language gap
    but a part of the question no article covers, so they don't shift the confidence's weight
    (knowledge.language tells the two apart); they still shift the ranking's, which only orders
    articles. Passages are ranked by the same sum with BM25's score (relative to the best
    passage) in place of its confidence. So a paraphrase with no word in common with the
    article, or a question in another language, can still be found, while a passage about
    every word of the question is not beaten by a vague look-alike.

    With a ranker (knowledge.ranking) and the articles' title and sentence vectors, the best
    CANDIDATES articles by that rank are re-ranked by the ranker, whose answerability model
    gives their confidence. Without vectors it is the BM25 index alone.
    """

    def __init__(
        self,
        passages: Sequence[Passage],
        vectors: np.ndarray | None = None,
        embedder: Embedder | None = None,
        *,
        semantic_weight: float = SEMANTIC_WEIGHT,
        title_vectors: np.ndarray | None = None,
        sentence_vectors: np.ndarray | None = None,
        sentence_owner: np.ndarray | None = None,
        examples: Examples | None = None,
        ranker: Ranker | None = None,
        configured_ranker: bool = False,
    ) -> None:
        started = time.perf_counter()
        self.lexical = BM25Index(passages)
        self.passages = self.lexical.passages
        usable = (
            vectors is not None
            and embedder is not None
            and len(self.passages) == len(passages)  # BM25 drops wordless passages
            and vectors.shape == (len(passages), embedder.dim)
        )
        self.vectors = vectors if usable else None
        self.embedder = embedder if usable else None
        self.semantic_weight = semantic_weight
        self.article_ids = self.lexical.article_ids
        # Articles are runs of consecutive passages (load_published_passages orders them so).
        article_of = np.asarray([p.article_id for p in self.passages], dtype=np.int64)
        starts = (
            np.flatnonzero(np.r_[True, article_of[1:] != article_of[:-1]])
            if len(article_of)
            else np.zeros(0, dtype=np.int64)
        )
        self._article_starts = starts
        self._article_index = (
            np.cumsum(np.r_[False, article_of[1:] != article_of[:-1]])
            if len(article_of)
            else np.zeros(0, dtype=np.int64)
        )
        contiguous = len(set(article_of.tolist())) == len(starts)
        # What the ranker's features need besides the passage vectors.
        self.has_ranking_vectors = bool(
            self.vectors is not None
            and contiguous
            and title_vectors is not None
            and title_vectors.shape == self.vectors.shape
            and sentence_vectors is not None
            and sentence_owner is not None
            and len(sentence_vectors) == len(sentence_owner)
        )
        if self.has_ranking_vectors:
            assert title_vectors is not None and sentence_vectors is not None
            assert sentence_owner is not None
            self._title_vectors = title_vectors[starts]  # one row per article
            self._sentence_vectors = sentence_vectors
            self._sentence_article = self._article_index[sentence_owner]
        self.examples = self._usable_examples(examples)
        # A given ranker, or with configured_ranker the one KB_RANKER_PATH names, looked up at
        # each search so that a retrained ranker applies from the next question.
        self._ranker = ranker
        self._configured_ranker = configured_ranker
        self.build_seconds = time.perf_counter() - started

    def __len__(self) -> int:
        return len(self.passages)

    def _usable_examples(self, examples: Examples | None) -> Examples | None:
        """The examples of this index's articles (and unanswerable ones); each one's article
        position in the index (-1 for unanswerable) goes to self._example_article."""
        self._example_article = np.zeros(0, dtype=np.int64)
        if (
            examples is None
            or not len(examples)
            or self.vectors is None
            or examples.vectors.shape[1:] != self.vectors.shape[1:]
        ):
            return None
        position = {int(self.passages[p].article_id): i for i, p in enumerate(self._article_starts)}
        positions = np.asarray(
            [
                -1 if article_id == Examples.UNANSWERABLE else position.get(int(article_id), -2)
                for article_id in examples.article_ids
            ],
            dtype=np.int64,
        )
        keep = positions > -2  # an article this index doesn't hold has nothing to point to
        if not keep.any():
            return None
        self._example_article = positions[keep]
        return Examples(
            examples.vectors[keep],
            examples.article_ids[keep],
            tuple(key for key, kept in zip(examples.keys, keep, strict=True) if kept),
        )

    @property
    def is_hybrid(self) -> bool:
        return self.vectors is not None

    @property
    def ranker(self) -> Ranker | None:
        """The ranker searches use now, if it fits this index (same embedding model)."""
        ranker = get_ranker() if self._configured_ranker else self._ranker
        if (
            ranker is None
            or not self.has_ranking_vectors
            or self.embedder is None
            or not ranker.usable_with(self.embedder.model_id)
        ):
            return None
        return ranker

    @property
    def is_ranked(self) -> bool:
        return self.ranker is not None

    def query_terms(self, query: str) -> list[QueryTerm]:
        return self.lexical.query_terms(query)

    def reads_examples(self, mask: np.ndarray | None) -> bool:
        """Whether a search reading the examples in `mask` (None: all) reads any."""
        return self.examples is not None and (mask is None or bool(mask.any()))

    def questions_to_embed(self, query: str) -> list[str]:
        """What search() will embed for this question: the question and, for the ranker of a
        knowledge base without example questions, the question without the words no article
        uses (HybridIndex.candidates)."""
        query = query[:2000]
        if not (self.has_ranking_vectors and self.is_ranked):
            return [query]
        stripped = self._unknown_words_removed(
            query, self.query_terms(query), english=looks_english(query), examples=None
        )
        return [query] if stripped is None else [query, stripped]

    def _unknown_words_removed(
        self,
        query: str,
        terms: Sequence[QueryTerm],
        *,
        english: bool,
        examples: np.ndarray | None,
    ) -> str | None:
        """The question without the words no article uses, when the ranker reads how they move
        it (ranking's unknown_words_pull): in an English question, with no example question
        read (examples teach look-alikes better). Else None."""
        if not english or self.reads_examples(examples):
            return None
        return without_unknown_words(query, terms)

    def search(
        self,
        query: str,
        k: int = 3,
        *,
        distinct_articles: bool = True,
        leave_out_identical_example: bool = False,
    ) -> list[Hit]:
        """The k best hits. leave_out_identical_example is for evaluation: an example question
        identical to the query is its answer key, not evidence."""
        if k <= 0 or not self.passages or not query or not query.strip():
            return []
        scored = self._score(query)
        if scored is None:
            lexical = self.lexical.score(query)
            if lexical is None:
                return []
            return self.lexical.hits(
                lexical.rank, lexical.confidence, lexical, k, distinct_articles
            )
        ranker = self.ranker
        if ranker is not None and distinct_articles:
            examples = self.examples_other_than(query) if leave_out_identical_example else None
            candidates = self.candidates(scored, max(k, CANDIDATES), examples=examples)
            probability, confidence = ranker.score(
                candidates.rows, with_examples=self.reads_examples(examples)
            )
            order = np.argsort(-probability, kind="stable")[:k]
            return [
                self.lexical.hit(
                    int(candidates.passages[i]),
                    float(probability[i]),
                    float(confidence[i]),
                    scored.lexical,
                )
                for i in order
            ]
        return self.lexical.hits(
            scored.rank, scored.confidence, scored.lexical, k, distinct_articles
        )

    def _score(self, query: str) -> _HybridScores | None:
        if self.vectors is None or self.embedder is None:
            return None
        lexical = self.lexical.score(query)
        query_vector = self.embedder.embed_query(query[:2000])
        similarity = self.vectors @ query_vector
        semantic = self.embedder.semantic_confidence(similarity)
        english = looks_english(query)
        # The less of the question the knowledge base's vocabulary knows (another language,
        # words no article uses), the less BM25 can say and the more the embedding ranks.
        known = lexical.known_share if lexical is not None else 0.0
        rank_weight = self.semantic_weight + (1 - self.semantic_weight) * (1 - known)
        # For confidence, only another language shifts the weight (see the class doc).
        confidence_weight = self.semantic_weight if english else rank_weight
        if lexical is None:
            # No word of the question is indexed: all of an English one is uncovered.
            confidence = self.semantic_weight * semantic if english else semantic
            rank = semantic.copy()
            lexical_confidence = relative = np.zeros_like(semantic)
        else:
            lexical_confidence = lexical.confidence
            confidence = confidence_weight * semantic + (1 - confidence_weight) * lexical_confidence
            # Ranking uses BM25's own order (scaled to the best passage) rather than its
            # confidence: BM25 tells the passage about a word from one that mentions it.
            best = float(lexical.rank.max())
            relative = lexical.rank / best if best > 0 else np.zeros_like(semantic)
            rank = rank_weight * semantic + (1 - rank_weight) * relative
        rank = rank + 1e-9  # every passage is a candidate; ties keep passage order
        return _HybridScores(
            lexical,
            query_vector,
            similarity,
            semantic,
            lexical_confidence,
            relative,
            confidence,
            rank,
            known,
            english,
            query[:2000],
        )

    def candidates(
        self,
        scored: _HybridScores,
        depth: int,
        *,
        examples: np.ndarray | None = None,
    ) -> Candidates:
        """The `depth` best articles by hybrid rank: each one's best passage and the ranker's
        feature row for it (knowledge.ranking.FEATURES, in that order). `examples`: which of
        self.examples count (a boolean mask; default all)."""
        starts = self._article_starts
        # Each article's best passage: sort by (article, -rank), take each run's first.
        order = np.lexsort((-scored.rank, self._article_index))
        best = order[starts]
        top = best[np.argsort(-scored.rank[best], kind="stable")[:depth]]
        articles = self._article_index[top]
        sentence_similarity = self._sentence_vectors @ scored.query_vector
        per_article = np.full(len(starts), -np.inf)
        np.maximum.at(per_article, self._sentence_article, sentence_similarity)
        sentences = np.where(
            np.isfinite(per_article[articles]), per_article[articles], scored.similarity[top]
        )
        all_titles = self._title_vectors @ scored.query_vector
        titles = all_titles[articles]
        unknown_words_pull = np.zeros(len(articles))
        without = self._unknown_words_removed(
            scored.query,
            scored.lexical.terms if scored.lexical else (),
            english=scored.english,
            examples=examples,
        )
        if without is not None:
            # How the words no article uses move the question towards (a paraphrase: "smashed"
            # for damaged) or away from (another company's product: "netflix subscription")
            # each candidate's best sentence. Example questions teach look-alikes better (with
            # them, this signal added nothing in cross-validation), so with any read it is 0
            # and the second embedding it costs is spared.
            assert self.embedder is not None  # has_ranking_vectors
            stripped = self._sentence_vectors @ self.embedder.embed_query(without)
            per_article_stripped = np.full(len(starts), -np.inf)
            np.maximum.at(per_article_stripped, self._sentence_article, stripped)
            with np.errstate(invalid="ignore"):  # articles with no sentence: -inf - -inf
                pull = (per_article[articles] - per_article_stripped[articles]) * 10
            unknown_words_pull = np.where(np.isfinite(pull), pull, 0.0)
        confidence = scored.confidence[top]
        similarity = scored.similarity[top]
        n = len(top)
        unknown = 1.0 - scored.known_share
        columns = {
            "hybrid_confidence": confidence,
            "hybrid_rank_gap": scored.rank[top] - scored.rank.max(),
            "hybrid_confidence_gap": confidence - scored.confidence[best].max(),
            "lexical_confidence": scored.lexical_confidence[top],
            "lexical_relative": scored.relative[top],
            "semantic_confidence": scored.semantic[top],
            "passage_similarity": similarity_feature(similarity),
            "passage_similarity_gap": (similarity - scored.similarity.max()) * 10,
            "sentence_similarity": similarity_feature(sentences),
            "sentence_similarity_gap": (
                sentences
                - max(float(sentence_similarity.max(initial=-1.0)), float(sentences.max()))
            )
            * 10,
            "title_similarity": similarity_feature(titles),
            "title_similarity_gap": (titles - float(all_titles.max())) * 10,
            "known_share": np.full(n, scored.known_share),
            "not_english": np.full(n, 0.0 if scored.english else 1.0),
            "unknown_english_share": np.full(n, unknown if scored.english else 0.0),
            "unknown_words_pull": unknown_words_pull,
            **self._example_columns(scored.query_vector, articles, examples),
        }
        rows = (
            np.column_stack([columns[name] for name in FEATURES])
            if n
            else np.zeros((0, len(FEATURES)))
        )
        return Candidates(passages=top, rows=rows)

    def _example_columns(
        self, query_vector: np.ndarray, articles: np.ndarray, mask: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """The example-question features (knowledge.ranking.FEATURES) of the candidate articles
        (positions in the index): how close the question is to the examples each candidate
        answers, and to the examples marked unanswerable. Zero where there are none."""
        n = len(articles)
        examples = self.examples
        if examples is None or not self.reads_examples(mask):
            return {name: np.zeros(n) for name in EXAMPLE_FEATURES}
        similarity = examples.vectors @ query_vector
        owners = self._example_article
        if mask is not None:
            similarity, owners = similarity[mask], owners[mask]
        # Below NEUTRAL_SIMILARITY an example is as good as none (feature 0).
        per_article = np.full(len(self._article_starts), NEUTRAL_SIMILARITY)
        answerable = owners >= 0
        np.maximum.at(per_article, owners[answerable], similarity[answerable])
        has_examples = np.zeros(len(self._article_starts))
        has_examples[owners[answerable]] = 1.0
        unanswerable = float(similarity[~answerable].max(initial=NEUTRAL_SIMILARITY))
        # Closer to an unanswerable example than to any answerable one (either kind missing
        # counts as the neutral similarity, so one example more never flips the feature's sign).
        margin = unanswerable - float(similarity[answerable].max(initial=NEUTRAL_SIMILARITY))
        candidate = np.asarray(similarity_feature(per_article[articles]))
        return {
            "example_similarity": candidate,
            "example_similarity_gap": candidate - (candidate.max() if n else 0.0),
            "article_has_examples": has_examples[articles],
            "unanswerable_example_similarity": np.full(n, similarity_feature(unanswerable)),
            "unanswerable_example_margin": np.full(n, margin * 10),
        }

    def examples_other_than(self, query: str) -> np.ndarray | None:
        """A mask of the examples but one identical to the query (for evaluation: that one is
        its answer key, not evidence)."""
        if self.examples is None:
            return None
        mask: np.ndarray = np.asarray(self.examples.keys, dtype=object) != question_key(query)
        return mask

    def candidates_for(
        self, query: str, depth: int = CANDIDATES, *, examples: np.ndarray | None = None
    ) -> Candidates | None:
        """For training the ranker: the question's candidates and their feature rows, reading
        the examples in the `examples` mask (default all)."""
        if not self.has_ranking_vectors:
            return None
        scored = self._score(query)
        return None if scored is None else self.candidates(scored, depth, examples=examples)


@dataclass(frozen=True)
class _HybridScores:
    """One question's hybrid scores over every passage (arrays by passage)."""

    lexical: LexicalScores | None
    query_vector: np.ndarray
    similarity: np.ndarray  # cosine
    semantic: np.ndarray  # rescaled to [0, 1]
    lexical_confidence: np.ndarray
    relative: np.ndarray  # BM25 score relative to the best passage's
    confidence: np.ndarray
    rank: np.ndarray
    known_share: float
    english: bool
    query: str  # as scored (its first 2,000 characters)


def without_unknown_words(query: str, terms: Sequence[QueryTerm]) -> str | None:
    """The question with the words no passage uses (nor corrects to) taken out, or None when
    it has none or is nothing else. Words with digits are details, not topics: they stay."""
    unknown = {term.word for term in terms if not term.variants and term.word.isalpha()}
    if not unknown:
        return None
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(unknown))) + r")\b", re.I)
    stripped = " ".join(pattern.sub(" ", query[:2000]).split())
    return stripped if DEFAULT_ANALYZER.words(stripped) else None


@dataclass(frozen=True)
class Candidates:
    passages: np.ndarray  # passage index of each candidate article's best passage
    rows: np.ndarray  # (candidates, len(FEATURES))


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


def warm_question(text: str) -> None:
    """Embed what retrieval will embed for a question, ahead of it: a reply calls this with its
    database connection released (see embeddings.warm_query). Before this process has built
    an index, only the question itself."""
    text = text.strip()
    if not text:
        return
    index = knowledge_index.last_built()
    for question in index.questions_to_embed(text) if index is not None else [text[:2000]]:
        embeddings.warm_query(question)


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
