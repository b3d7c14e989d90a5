"""What the ranker (ranking.py) learns from: each labelled question's candidate articles and
their feature rows, over the knowledge base the index holds, under every example regime."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from .evaluation import Question
from .search.hybrid import HybridIndex
from .search.ranking import TrainingQuestion
from .services import NONE_LABEL

#: In the "few examples" regime, the share of labels (articles, and "none") whose examples count.
SPARSE_LABEL_SHARE = 0.3


def example_regimes(index: HybridIndex, question: str) -> list[np.ndarray | None]:
    """The example masks a question is learnt under, so that one ranker serves a knowledge base
    with many example questions, with few, and with none: every example (but one identical to
    the question: it would be the answer key), the examples of a few labels only (chosen by a
    generator seeded with the question, so training is repeatable), and none at all."""
    every = index.examples_other_than(question)
    if index.examples is None or every is None:
        return [None]
    labels = np.unique(index.examples.article_ids)
    seed = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "little")
    chosen = np.random.default_rng(seed).choice(
        labels, max(1, round(len(labels) * SPARSE_LABEL_SHARE)), replace=False
    )
    few = every & np.isin(index.examples.article_ids, chosen)
    return [every, few, np.zeros(len(index.examples), dtype=bool)]


def training_questions(
    index: HybridIndex, questions: Iterable[Question], slug_of: dict[int, str]
) -> tuple[list[TrainingQuestion], int]:
    """The questions as the ranker learns them, and how many were skipped because their right
    article is not among the candidates (nothing to learn to rank there)."""
    training: list[TrainingQuestion] = []
    skipped = 0
    for question in questions:
        for regime, examples in enumerate(example_regimes(index, question.question)):
            candidates = index.candidates_for(question.question, examples=examples)
            if candidates is None:
                continue
            slugs = [slug_of.get(index.passages[int(p)].article_id) for p in candidates.passages]
            right = slugs.index(question.expected) if question.expected in slugs else None
            if question.expected != NONE_LABEL and right is None:
                skipped += regime == 0
                continue
            training.append(
                TrainingQuestion(
                    candidates.rows,
                    right,
                    question.question,
                    with_examples=examples is not None and bool(examples.any()),
                )
            )
    return training, skipped
