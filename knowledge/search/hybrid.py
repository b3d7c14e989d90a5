"""The hybrid index: BM25 and sentence embeddings over the same passages with one confidence
scale, and the learned ranker (knowledge/search/ranking.py) on top, reading the operators' example
questions. See HybridIndex."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from knowledge.language import looks_english, question_key

from .embeddings import Embedder
from .lexical import BM25Index, Hit, LexicalScores, QueryTerm
from .ranking import (
    CANDIDATES,
    EXAMPLE_FEATURES,
    FEATURES,
    NEUTRAL_SIMILARITY,
    Ranker,
    get_ranker,
    similarity_feature,
)
from .text import DEFAULT_ANALYZER, Passage


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

    With a ranker (knowledge.search.ranking) and the articles' title and sentence vectors, the best
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
            examples = self.covering(scored.query_vector, examples)
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
        feature row for it (knowledge.search.ranking.FEATURES, in that order). `examples`: which of
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
        """The example-question features (ranking.FEATURES) of the candidate articles
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

    def covering(self, query_vector: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
        """The examples (of `mask`) a search reads: all of them when one is as close to the
        question as a rewording (settings.KB_EXAMPLE_COVERS, cosine), else none.

        Teaching must only help. Examples read from afar pull questions they don't cover to
        the articles that have examples, or refuse them for a "none" example that is merely
        on the same subject, so a question no example covers is ranked exactly as if there
        were none; one they cover gets what the ranker learnt from examples."""
        if not self.reads_examples(mask):
            return mask
        assert self.examples is not None  # reads_examples
        similarity = self.examples.vectors @ query_vector
        if mask is not None:
            similarity = similarity[mask]
        if float(similarity.max(initial=-1.0)) >= float(settings.KB_EXAMPLE_COVERS):
            return mask
        return np.zeros(len(self.examples.keys), dtype=bool)

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
