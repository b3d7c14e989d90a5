"""The learned last step of retrieval: which candidate article answers the question, and how
sure we are that any does.

The hybrid index (retrieval.HybridIndex) finds candidate articles with BM25 and passage
embeddings. A passage-level score, though, misses what tells a good answer from a look-alike:
whether one *sentence* of the article says what was asked, whether the article's *title* is
about it, and how far each signal is from the best candidate's. `Ranker` holds two logistic
regressions over those signals (`FEATURES`, one row per candidate article): one orders the
candidates (the probability that each is the right article), the other judges from the best
candidate's own evidence whether it answers the question at all. The second is the hit's
confidence: below the threshold the bot abstains, so the threshold means something on its own.
It reads no comparison with the other candidates, since being the best of a bad lot ("what is
the meaning of life") is no reason to answer.

It is trained by `manage.py train_kb_ranker QUESTIONS.jsonl...` (question sets in eval_kb's
format, "none" for questions nothing answers) against the current knowledge base, and stored as
JSON (KB_RANKER_PATH; the default, knowledge/ranker.json, was trained on the demo knowledge
base's question sets knowledge/demo/dev.jsonl and eval.jsonl; knowledge/demo/holdout.jsonl
was kept out of training to measure it). The answerability probability is re-centred
so that 0.5 is the threshold that best balanced abstention precision and recall on the training
questions; KB_MIN_CONFIDENCE moves it.

Features are relative to the question's other candidates (gaps to the best) or on the
embedding model's own scale, so a ranker trained on one knowledge base still helps on another;
retraining on questions about your own articles helps more. A ranker trained with another
embedding model is not used (retrieval falls back to the hybrid score).

Example questions (knowledge.ExampleQuestion: a question labelled with its article, or as
unanswerable) add EXAMPLE_FEATURES: how close the question is to the examples of each
candidate and to the unanswerable ones. Training learns each question three times, with every
example (an identical one left out: it would be the answer key), with the examples of a few
labels only, and with none, so that one ranker serves a knowledge base with many examples,
with a handful (a few examples must not pull other articles' questions to theirs) and with
none.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

logger = logging.getLogger(__name__)

DEFAULT_RANKER_PATH = Path(__file__).resolve().parent / "ranker.json"

#: The candidate articles per question the ranker scores (by the hybrid rank).
CANDIDATES = 8

#: One row per candidate article. "best" is the best of the question's candidates; similarities
#: are cosines rescaled as (cos - 0.8) * 10 so that coefficients read on a sane scale.
FEATURES: tuple[str, ...] = (
    "hybrid_confidence",  # the hybrid confidence of the article's best passage
    "hybrid_rank_gap",  # its hybrid rank minus the best candidate's
    "hybrid_confidence_gap",  # its hybrid confidence minus the best candidate's
    "lexical_confidence",  # BM25's share of the question the passage covers
    "lexical_relative",  # BM25 score relative to the best passage's
    "semantic_confidence",  # the passage embedding's similarity on the model's scale
    "passage_similarity",
    "passage_similarity_gap",
    "sentence_similarity",  # the best single sentence of the article
    "sentence_similarity_gap",
    "title_similarity",  # the article's title
    "title_similarity_gap",
    "known_share",  # how much of the question the knowledge base's vocabulary knows
    "not_english",  # the question reads as another language (knowledge.language)
    "unknown_english_share",  # words unknown to the knowledge base in an English question
    # Example questions (knowledge.ExampleQuestion), 0 where there are none:
    "example_similarity",  # the closest example this article answers
    "example_similarity_gap",
    "article_has_examples",  # 1 if the article has any, so "none close" and "none" differ
    "unanswerable_example_similarity",  # the closest example marked unanswerable
    "unanswerable_example_margin",  # that minus the closest answerable example's
)

#: The example-question features (retrieval.HybridIndex._example_columns computes them).
EXAMPLE_FEATURES = FEATURES[FEATURES.index("example_similarity") :]

#: The cosine an example feature takes when there is no example to compare with (feature 0).
NEUTRAL_SIMILARITY = 0.8


def similarity_feature(cosine: np.ndarray | float) -> np.ndarray | float:
    return (cosine - 0.8) * 10


#: What the answerability model reads: the top candidate's own evidence, no comparison with the
#: other candidates (being the best of a bad lot is no reason to answer).
ANSWERABILITY_FEATURES: tuple[str, ...] = (
    "hybrid_confidence",
    "lexical_confidence",
    "semantic_confidence",
    "passage_similarity",
    "sentence_similarity",
    "title_similarity",
    "known_share",
    "not_english",
    "unknown_english_share",
    "example_similarity",
    "article_has_examples",
    "unanswerable_example_similarity",
    "unanswerable_example_margin",
)
_ANSWERABILITY_COLUMNS = [FEATURES.index(name) for name in ANSWERABILITY_FEATURES]


@dataclass(frozen=True)
class LogisticModel:
    """A fitted logistic regression over standardised columns."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def probability(self, rows: np.ndarray) -> np.ndarray:
        z = ((rows - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(
            self.weights
        ) + self.bias
        probability: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        return probability

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float) -> LogisticModel:
        mean, scale, weights, bias = fit_logistic(x, y, l2=l2)
        return cls(tuple(mean), tuple(scale), tuple(weights), bias)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LogisticModel:
        def floats(key: str) -> tuple[float, ...]:
            value = data[key]
            if not isinstance(value, list):
                raise TypeError(f"{key} is not a list")
            return tuple(float(x) for x in value)

        bias = data["bias"]
        if not isinstance(bias, int | float):
            raise TypeError("bias is not a number")
        return cls(floats("mean"), floats("scale"), floats("weights"), float(bias))


@dataclass(frozen=True)
class Ranker:
    """Two small models over the candidates' FEATURES rows: `order` gives each candidate the
    probability that it is the right article (it ranks them); `answerable` gives the best
    candidate the probability that the question is answered by it at all, from that candidate's
    own evidence (ANSWERABILITY_FEATURES). A hit's confidence is the answerable probability
    times its order probability relative to the best candidate's: the best hit's confidence is
    how sure we are the bot can answer, the others' are discounted by how much less likely
    they are the article. `answerable` is re-centred: 0.5 is the threshold that balanced
    abstention precision and recall on the training questions."""

    features: tuple[str, ...]
    order: LogisticModel
    answerability_features: tuple[str, ...]
    answerable: LogisticModel
    embedding_model: str
    trained: dict[str, object] = field(default_factory=dict)  # what it was trained on, figures

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(order probability, confidence) of each candidate row."""
        if not len(rows):
            return np.zeros(0), np.zeros(0)
        order = self.order.probability(rows)
        best = int(np.argmax(order))
        answerable = float(
            self.answerable.probability(rows[best : best + 1, _ANSWERABILITY_COLUMNS])[0]
        )
        confidence = answerable * order / max(float(order[best]), 1e-12)
        return order, np.clip(confidence, 0.0, 1.0)

    def usable_with(self, embedding_model: str) -> bool:
        return (
            self.features == FEATURES
            and self.answerability_features == ANSWERABILITY_FEATURES
            and self.embedding_model == embedding_model
        )

    # --- Storage ---

    def save(self, path: Path | str) -> None:
        data = asdict(self)
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path | str) -> Ranker:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            features=tuple(data["features"]),
            order=LogisticModel.from_dict(data["order"]),
            answerability_features=tuple(data["answerability_features"]),
            answerable=LogisticModel.from_dict(data["answerable"]),
            embedding_model=str(data["embedding_model"]),
            trained=dict(data.get("trained", {})),
        )


# --- Training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingQuestion:
    """One question's candidates: their feature rows and which one (if any) is right."""

    rows: np.ndarray  # (candidates, len(FEATURES))
    right: int | None  # index of the expected article among the candidates, or None


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 10.0, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method on standardised columns.
    Returns (mean, scale, weights, bias)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = l2 * np.r_[np.ones(len(w) - 1), 0.0]  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -30, 30)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return mean, scale, w[:-1], float(w[-1])


@dataclass(frozen=True)
class Figures:
    hit_at_1: float
    abstention_precision: float
    abstention_recall: float


def decide(
    questions: Sequence[TrainingQuestion],
    scores: Sequence[tuple[np.ndarray, np.ndarray]],
    threshold: float,
) -> Figures:
    """hit@1 (among answerable questions) and abstention precision/recall at a threshold, from
    each question's (order probability, confidence) per candidate."""
    answerable = hits = abstained = right_abstentions = unanswerable = 0
    for question, (order, confidence) in zip(questions, scores, strict=True):
        best = int(np.argmax(order)) if len(order) else -1
        abstains = not len(order) or float(confidence[best]) < threshold
        if question.right is None:
            unanswerable += 1
            right_abstentions += abstains
        else:
            answerable += 1
            hits += best == question.right
        abstained += abstains
    return Figures(
        hit_at_1=hits / answerable if answerable else math.nan,
        abstention_precision=right_abstentions / abstained if abstained else math.nan,
        abstention_recall=right_abstentions / unanswerable if unanswerable else math.nan,
    )


def balanced_threshold(
    questions: Sequence[TrainingQuestion], scores: Sequence[tuple[np.ndarray, np.ndarray]]
) -> float:
    """The threshold with the best min(abstention precision, recall): neither wrongly refusing
    answerable questions nor answering unanswerable ones is allowed to dominate."""
    best_score, best_threshold = -1.0, 0.5
    for threshold in np.linspace(0.02, 0.98, 97):
        figures = decide(questions, scores, float(threshold))
        score = min(
            0.0 if math.isnan(figures.abstention_precision) else figures.abstention_precision,
            0.0 if math.isnan(figures.abstention_recall) else figures.abstention_recall,
        )
        if score > best_score:
            best_score, best_threshold = score, float(threshold)
    return best_threshold


def train(
    questions: Sequence[TrainingQuestion],
    *,
    embedding_model: str,
    l2: float = 10.0,
    trained: dict[str, object] | None = None,
) -> tuple[Ranker, Figures]:
    """A ranker fitted on the questions' candidates, its answerability re-centred on the
    balanced threshold, and its figures on those same questions (optimistic)."""
    usable = [q for q in questions if len(q.rows)]
    if not usable:
        raise ValueError("no question has any candidate article: is the knowledge base empty?")
    if all(q.right is not None for q in usable) or all(q.right is None for q in usable):
        raise ValueError(
            "the questions need both answerable and unanswerable ones ('none'), to learn "
            "when to abstain"
        )
    x = np.vstack([q.rows for q in usable])
    y = np.concatenate([[1.0 if i == q.right else 0.0 for i in range(len(q.rows))] for q in usable])
    if y.min() == y.max():
        raise ValueError("the questions need both right and wrong candidates to learn from")
    order = LogisticModel.fit(x, y, l2)
    tops = [int(np.argmax(order.probability(q.rows))) for q in usable]
    answered = np.array(
        [1.0 if q.right == top else 0.0 for q, top in zip(usable, tops, strict=True)]
    )
    if answered.min() == answered.max():
        raise ValueError("the questions need both answerable and unanswerable ones")
    top_rows = np.vstack(
        [q.rows[top, _ANSWERABILITY_COLUMNS] for q, top in zip(usable, tops, strict=True)]
    )
    answerable = LogisticModel.fit(top_rows, answered, l2)
    raw = Ranker(FEATURES, order, ANSWERABILITY_FEATURES, answerable, embedding_model)
    scores = [raw.score(q.rows) for q in questions]
    threshold = balanced_threshold(questions, scores)
    figures = decide(questions, scores, threshold)
    recentred = Ranker(
        FEATURES,
        order,
        ANSWERABILITY_FEATURES,
        LogisticModel(
            answerable.mean,
            answerable.scale,
            answerable.weights,
            answerable.bias - math.log(threshold / (1 - threshold)),
        ),
        embedding_model,
        {**(trained or {}), "threshold": round(threshold, 3), **asdict(figures)},
    )
    return recentred, figures


# --- The ranker in use ----------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: tuple[str, float | None, Ranker | None] | None = None


def ranker_path() -> Path | None:
    """KB_RANKER_PATH; "" or "off" turns the ranker off."""
    configured = getattr(settings, "KB_RANKER_PATH", None)
    if configured is None:
        return DEFAULT_RANKER_PATH
    if str(configured).strip().lower() in ("", "off", "none"):
        return None
    return Path(configured)


def get_ranker() -> Ranker | None:
    """The configured ranker, re-read when its file changes; None when off or unreadable."""
    global _cache
    path = ranker_path()
    if path is None:
        return None
    try:
        mtime: float | None = path.stat().st_mtime
    except OSError:
        mtime = None  # missing: remembered like an unreadable file, so it is logged once
    with _cache_lock:
        if _cache is not None and _cache[0] == str(path) and _cache[1] == mtime:
            return _cache[2]
        ranker: Ranker | None = None
        if mtime is None:
            logger.warning("knowledge ranker %s not found: ranking by the hybrid score", path)
        else:
            try:
                ranker = Ranker.load(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("knowledge ranker %s unreadable (%s): not used", path, exc)
        _cache = (str(path), mtime, ranker)
        return ranker
