"""The learned last step of retrieval: which candidate article answers the question, and how
sure we are that any does.

The hybrid index (knowledge/search/hybrid.py) finds candidate articles with BM25 and passage
embeddings. A passage-level score, though, misses what tells a good answer from a look-alike:
whether one *sentence* of the article says what was asked, whether the article's *title* is
about it, and how far each signal is from the best candidate's. `Ranker` holds two models over
those signals (`FEATURES`, one row per candidate article): a logistic regression orders the
candidates (the probability that each is the right article), and boosted trees (a logistic
regression when there are few training questions) judge from the best candidate's own evidence
whether it answers the question at all. The second is the hit's
confidence: below the threshold the bot abstains, so the threshold means something on its own.
It reads no comparison with the other candidates, since being the best of a bad lot ("what is
the meaning of life") is no reason to answer.

It is trained by `manage.py train_kb_ranker QUESTIONS.jsonl...` (question sets in eval_kb's
format, "none" for questions nothing answers) against the current knowledge base, and stored as
JSON (KB_RANKER_PATH; the default, knowledge/search/ranker.json, was trained on the demo knowledge
base's question sets, knowledge.services.DEMO_EXAMPLE_SETS; knowledge/demo/holdout.jsonl and
holdout2.jsonl were kept out of training to measure it). The answerability probability is
re-centred so that 0.5 is the threshold that best balanced abstention precision and recall on
the training questions' cross-validated scores, one threshold for knowledge bases with example
questions and one for those without; KB_MIN_CONFIDENCE moves it.

Features are relative to the question's other candidates (gaps to the best) or on the
embedding model's own scale, so a ranker trained on one knowledge base still helps on another;
retraining on questions about your own articles helps more. A ranker trained with another
embedding model is not used (retrieval falls back to the hybrid score).

Words of an English question that no article uses (nor corrects to) are either a paraphrase
("smashed" for damaged) or the question's real subject, which the knowledge base doesn't cover
("cancel my Netflix subscription" is not about BrightWave Plus). `unknown_words_pull` tells the
two apart: how much closer each candidate's best sentence is to the question than to the
question without those words (one more embedding, only for questions that have such words).
Example questions teach look-alikes better, so where any are read the signal is 0 and the
embedding is spared: in cross-validation it added nothing with examples, and 0.02 to abstention
precision and recall without.

Example questions (knowledge.ExampleQuestion: a question labelled with its article, or as
unanswerable) add EXAMPLE_FEATURES: how close the question is to the examples of each
candidate and to the unanswerable ones. Training learns each question three times, with every
example (an identical one left out: it would be the answer key), with the examples of a few
labels only, and with none, so that one ranker serves a knowledge base with many examples,
with a handful (a few examples must not pull other articles' questions to theirs) and with
none.
"""

from __future__ import annotations

import hashlib
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
    # How much closer the article's best sentence is to the question than to the question
    # without those words: below 0, they are about something else (another company's product).
    # 0 when example questions are read (they teach that better).
    "unknown_words_pull",
    # Example questions (knowledge.ExampleQuestion), 0 where there are none:
    "example_similarity",  # the closest example this article answers
    "example_similarity_gap",
    "article_has_examples",  # 1 if the article has any, so "none close" and "none" differ
    "unanswerable_example_similarity",  # the closest example marked unanswerable
    "unanswerable_example_margin",  # that minus the closest answerable example's
)

#: The example-question features (HybridIndex._example_columns computes them).
EXAMPLE_FEATURES = FEATURES[FEATURES.index("example_similarity") :]

#: The cosine an example feature takes when there is no example to compare with (feature 0).
NEUTRAL_SIMILARITY = 0.8


def sigmoid(z: np.ndarray) -> np.ndarray:
    probability: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    return probability


def logit(probability: float) -> float:
    probability = min(max(probability, 1e-12), 1 - 1e-12)
    return math.log(probability / (1 - probability))


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
    "unknown_words_pull",
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
        return sigmoid(z)

    def shifted(self, by: float) -> LogisticModel:
        return LogisticModel(self.mean, self.scale, self.weights, self.bias + by)

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
class BoostedTrees:
    """Gradient-boosted regression trees on the logistic loss (fit_boosted_trees). Each tree is
    stored as flat node arrays: a split node sends a row left when its `feature` is at most
    `threshold`; a leaf (feature -1) adds its `value` (already scaled by the learning rate)."""

    kind: str  # "boosted_trees", to tell it from a LogisticModel in storage
    feature: tuple[tuple[int, ...], ...]
    threshold: tuple[tuple[float, ...], ...]
    left: tuple[tuple[int, ...], ...]
    right: tuple[tuple[int, ...], ...]
    value: tuple[tuple[float, ...], ...]
    bias: float

    def logit(self, rows: np.ndarray) -> np.ndarray:
        # A search scores one row: walking 200 small trees in Python takes 0.03 ms.
        return np.array([self._walk(row) for row in rows.tolist()], dtype=np.float64)

    def _walk(self, row: list[float]) -> float:
        total = self.bias
        for feature, threshold, left, right, value in zip(
            self.feature, self.threshold, self.left, self.right, self.value, strict=True
        ):
            node = 0
            while (column := feature[node]) >= 0:
                node = left[node] if row[column] <= threshold[node] else right[node]
            total += value[node]
        return total

    def probability(self, rows: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(rows))

    def shifted(self, by: float) -> BoostedTrees:
        return BoostedTrees(
            self.kind,
            self.feature,
            self.threshold,
            self.left,
            self.right,
            self.value,
            self.bias + by,
        )

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> BoostedTrees:
        def nested(key: str, kind: type) -> tuple[tuple, ...]:  # type: ignore[type-arg]
            value = data[key]
            if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
                raise TypeError(f"{key} is not a list of lists")
            return tuple(tuple(kind(x) for x in tree) for tree in value)

        bias = data["bias"]
        if not isinstance(bias, int | float):
            raise TypeError("bias is not a number")
        return cls(
            "boosted_trees",
            nested("feature", int),
            nested("threshold", float),
            nested("left", int),
            nested("right", int),
            nested("value", float),
            float(bias),
        )


AnswerabilityModel = LogisticModel | BoostedTrees


def answerability_model_from_dict(data: dict[str, object]) -> AnswerabilityModel:
    if data.get("kind") == "boosted_trees":
        return BoostedTrees.from_dict(data)
    return LogisticModel.from_dict(data)


@dataclass(frozen=True)
class Ranker:
    """Two small models over the candidates' FEATURES rows: `order` gives each candidate the
    probability that it is the right article (it ranks them); `answerable` gives the best
    candidate the probability that the question is answered by it at all, from that candidate's
    own evidence (ANSWERABILITY_FEATURES). A hit's confidence is the answerable probability
    times its order probability relative to the best candidate's: the best hit's confidence is
    how sure we are the bot can answer, the others' are discounted by how much less likely
    they are the article. `answerable` is re-centred: 0.5 is the threshold that balanced
    abstention precision and recall on the training questions learnt with example questions;
    `without_examples_shift` moves it to where they balanced on those learnt without any (the
    same evidence means less when no example can vouch for it)."""

    features: tuple[str, ...]
    order: LogisticModel
    answerability_features: tuple[str, ...]
    answerable: AnswerabilityModel
    embedding_model: str
    trained: dict[str, object] = field(default_factory=dict)  # what it was trained on, figures
    without_examples_shift: float = 0.0  # added to the answerable logit when no example is read

    def score(
        self, rows: np.ndarray, *, with_examples: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(order probability, confidence) of each candidate row; `with_examples`: whether
        the rows read any example question."""
        if not len(rows):
            return np.zeros(0), np.zeros(0)
        order = self.order.probability(rows)
        best = int(np.argmax(order))
        answerable = float(
            self.answerable.probability(rows[best : best + 1, _ANSWERABILITY_COLUMNS])[0]
        )
        if not with_examples and self.without_examples_shift:
            shifted = logit(answerable) + self.without_examples_shift
            answerable = float(sigmoid(np.array(shifted)))
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
            answerable=answerability_model_from_dict(data["answerable"]),
            embedding_model=str(data["embedding_model"]),
            trained=dict(data.get("trained", {})),
            without_examples_shift=float(data.get("without_examples_shift", 0.0)),
        )


# --- Training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingQuestion:
    """One question's candidates: their feature rows and which one (if any) is right."""

    rows: np.ndarray  # (candidates, len(FEATURES))
    right: int | None  # index of the expected article among the candidates, or None
    # The same question learnt in several ways (example regimes) shares a group, so that
    # cross-validation never tests a question on a model that learnt it.
    group: str = ""
    with_examples: bool = True  # whether its rows read any example question


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
        p = sigmoid(z @ w)
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return mean, scale, w[:-1], float(w[-1])


def fit_boosted_trees(
    x: np.ndarray,
    y: np.ndarray,
    *,
    depth: int = 2,
    rounds: int = 200,
    learning_rate: float = 0.05,
    l2: float = 1.0,
    min_leaf: int = 20,
    bins: int = 64,
) -> BoostedTrees:
    """Gradient boosting on the logistic loss with Newton steps: each round fits a tree of at
    most `depth` levels of splits to the loss's gradient, splitting at quantiles of each column
    (at most `bins` candidates), each leaf keeping at least `min_leaf` rows. Shallow trees learn
    what one weighted sum can't: that an example question very close to the question settles
    it whatever the passages say, or that a good passage counts only when no unanswerable
    example is near."""
    edges = [
        np.unique(np.quantile(x[:, f], np.linspace(0, 1, bins + 1)[1:-1]))
        for f in range(x.shape[1])
    ]
    # codes[i, f] = b: row i is above edges[f][b - 1] and at most edges[f][b].
    codes = np.column_stack([np.searchsorted(edges[f], x[:, f]) for f in range(x.shape[1])])
    bias = logit(float(y.mean()))
    z = np.full(len(x), bias)
    trees: list[_Tree] = []
    for _ in range(rounds):
        p = sigmoid(z)
        tree = _Tree(edges, codes, p - y, np.maximum(p * (1 - p), 1e-6), l2, min_leaf)
        tree.grow(np.arange(len(x)), depth, learning_rate)
        z += tree.update
        trees.append(tree)
    return BoostedTrees(
        "boosted_trees",
        tuple(tuple(t.feature) for t in trees),
        tuple(tuple(t.threshold) for t in trees),
        tuple(tuple(t.left) for t in trees),
        tuple(tuple(t.right) for t in trees),
        tuple(tuple(t.value) for t in trees),
        bias,
    )


class _Tree:
    """One boosting round's tree as it grows, in BoostedTrees' flat node arrays."""

    def __init__(
        self,
        edges: list[np.ndarray],
        codes: np.ndarray,
        gradient: np.ndarray,
        hessian: np.ndarray,
        l2: float,
        min_leaf: int,
    ) -> None:
        self.edges, self.codes = edges, codes
        self.gradient, self.hessian = gradient, hessian
        self.l2, self.min_leaf = l2, min_leaf
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.left: list[int] = []
        self.right: list[int] = []
        self.value: list[float] = []
        self.update = np.zeros(len(codes))  # each training row's leaf value

    def grow(self, rows: np.ndarray, levels: int, learning_rate: float) -> int:
        """Add the node for these rows (and its subtree); return its index."""
        node = len(self.feature)
        self.feature.append(-1)
        self.threshold.append(0.0)
        self.left.append(-1)
        self.right.append(-1)
        self.value.append(0.0)
        split = self._best_split(rows) if levels > 0 else None
        if split is None:
            g, h = float(self.gradient[rows].sum()), float(self.hessian[rows].sum())
            self.value[node] = -g / (h + self.l2) * learning_rate
            self.update[rows] = self.value[node]
            return node
        column, code = split
        self.feature[node], self.threshold[node] = column, float(self.edges[column][code])
        goes_left = self.codes[rows, column] <= code
        self.left[node] = self.grow(rows[goes_left], levels - 1, learning_rate)
        self.right[node] = self.grow(rows[~goes_left], levels - 1, learning_rate)
        return node

    def _best_split(self, rows: np.ndarray) -> tuple[int, int] | None:
        """(column, code) of the split that lowers the loss most, or None."""
        if len(rows) < 2 * self.min_leaf:
            return None
        gradient, hessian = self.gradient[rows], self.hessian[rows]
        g, h = float(gradient.sum()), float(hessian.sum())
        best: tuple[float, int, int] | None = None
        for column, edges in enumerate(self.edges):
            here, width = self.codes[rows, column], len(edges) + 1
            g_left = np.bincount(here, gradient, width).cumsum()[:-1]
            h_left = np.bincount(here, hessian, width).cumsum()[:-1]
            n_left = np.bincount(here, None, width).cumsum()[:-1]
            gain = (
                g_left**2 / (h_left + self.l2)
                + (g - g_left) ** 2 / (h - h_left + self.l2)
                - g**2 / (h + self.l2)
            )
            gain[(n_left < self.min_leaf) | (len(rows) - n_left < self.min_leaf)] = -np.inf
            if not len(gain):
                continue
            code = int(np.argmax(gain))
            if gain[code] > 1e-9 and (best is None or gain[code] > best[0]):
                best = (float(gain[code]), column, code)
        return None if best is None else (best[1], best[2])


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


#: The training questions' scores that set the threshold come from this many folds.
FOLDS = 5

#: Below this many training rows (questions times example regimes) the answerability model is a
#: logistic regression: trees need more than that to learn anything.
MIN_ROWS_FOR_TREES = 300


def _fit(usable: Sequence[TrainingQuestion], l2: float) -> tuple[LogisticModel, AnswerabilityModel]:
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
    answerable: AnswerabilityModel = (
        fit_boosted_trees(top_rows, answered)
        if len(usable) >= MIN_ROWS_FOR_TREES
        else LogisticModel.fit(top_rows, answered, l2)
    )
    return order, answerable


def _fold(question: TrainingQuestion, position: int) -> int:
    if not question.group:
        return position % FOLDS
    return int.from_bytes(hashlib.sha256(question.group.encode()).digest()[:4], "little") % FOLDS


def cross_validated_scores(
    usable: Sequence[TrainingQuestion], l2: float
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Each question's (order probability, confidence) from models fitted on the other folds
    (a question learnt in several example regimes stays in one fold, by its group); None when
    a fold leaves too little to fit."""
    folds = [_fold(q, i) for i, q in enumerate(usable)]
    scores: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), np.zeros(0))] * len(usable)
    for k in range(FOLDS):
        held_out = [i for i, fold in enumerate(folds) if fold == k]
        if not held_out:
            continue
        try:
            order, answerable = _fit([q for q, f in zip(usable, folds, strict=True) if f != k], l2)
        except ValueError:
            return None
        ranker = Ranker(FEATURES, order, ANSWERABILITY_FEATURES, answerable, "")
        for i in held_out:
            scores[i] = ranker.score(usable[i].rows)
    return scores


def train(
    questions: Sequence[TrainingQuestion],
    *,
    embedding_model: str,
    l2: float = 10.0,
    trained: dict[str, object] | None = None,
) -> tuple[Ranker, dict[str, Figures]]:
    """A ranker fitted on the questions' candidates, its answerability re-centred on the
    balanced threshold (one for questions learnt with example questions, one for those learnt
    without, when there are both), and its figures for each. Thresholds and figures come from
    cross-validated scores (FOLDS folds): boosted trees fit their own training questions too
    closely for those to say where the threshold lies. With too few questions to
    cross-validate, from the training questions themselves (optimistic;
    `trained["figures_from"]` says which)."""
    usable = [q for q in questions if len(q.rows)]
    if not usable:
        raise ValueError("no question has any candidate article: is the knowledge base empty?")
    if all(q.right is not None for q in usable) or all(q.right is None for q in usable):
        raise ValueError(
            "the questions need both answerable and unanswerable ones ('none'), to learn "
            "when to abstain"
        )
    order, answerable = _fit(usable, l2)
    scores = cross_validated_scores(usable, l2)
    figures_from = "cross-validation"
    if scores is None:
        raw = Ranker(FEATURES, order, ANSWERABILITY_FEATURES, answerable, embedding_model)
        scores = [raw.score(q.rows) for q in usable]
        figures_from = "the training questions"
    groups = {
        "with examples": [i for i, q in enumerate(usable) if q.with_examples],
        "without examples": [i for i, q in enumerate(usable) if not q.with_examples],
    }
    if not all(groups.values()):
        groups = {"all": list(range(len(usable)))}
    thresholds: dict[str, float] = {}
    figures: dict[str, Figures] = {}
    for name, members in groups.items():
        group = [usable[i] for i in members]
        group_scores = [scores[i] for i in members]
        thresholds[name] = balanced_threshold(group, group_scores)
        figures[name] = decide(group, group_scores, thresholds[name])
    with_examples = thresholds.get("with examples", thresholds.get("all", 0.5))
    without_examples = thresholds.get("without examples", with_examples)
    recentred = Ranker(
        FEATURES,
        order,
        ANSWERABILITY_FEATURES,
        answerable.shifted(-logit(with_examples)),
        embedding_model,
        {
            **(trained or {}),
            "answerability_model": type(answerable).__name__,
            "thresholds": {name: round(t, 3) for name, t in thresholds.items()},
            "figures_from": figures_from,
            "figures": {name: asdict(f) for name, f in figures.items()},
        },
        without_examples_shift=logit(with_examples) - logit(without_examples),
    )
    return recentred, figures


# --- The ranker in use ----------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: tuple[str, float | None, Ranker | None] | None = None


def ranker_path() -> Path | None:
    """KB_RANKER_PATH; "" or "off" turns the ranker off."""
    configured = settings.KB_RANKER_PATH
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
