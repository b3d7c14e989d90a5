"""Lexical search: an immutable BM25 index (bm25s) over passages, in two fields: the article's
title and tags, and the passage's heading and text. Questions are cleaned of filler words
("hi, could you please tell me..."), unknown words are corrected to an indexed word one typo
away, and synonyms are searched too. `search()` ranks passages and gives each hit a
`confidence`.

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

The hybrid index (hybrid.py) produces the same `Hit`s from the same `Passage`s.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from .text import DEFAULT_ANALYZER, Analyzer, Passage, filler_words

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
    language: str = ""  # the article's language code (Passage.language)


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
        # Imported here, not with the module: it brings scipy (a quarter of a second), which
        # processes that never build an index (the web) need not load.
        import bm25s

        # bm25s sets its own logger to DEBUG when imported, after Django configured logging:
        # every index build would print its progress whatever LOG_LEVEL says.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
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
        fillers = filler_words()
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
            language=passage.language,
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


_synonyms_cache: tuple[object, dict[str, tuple[str, ...]]] | None = None


def _synonym_map() -> dict[str, tuple[str, ...]]:
    """stem -> the stems of its synonyms, from DEFAULT_SYNONYMS and KB_QUERY_SYNONYMS."""
    global _synonyms_cache
    extra = tuple(tuple(group) for group in settings.KB_QUERY_SYNONYMS)
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
