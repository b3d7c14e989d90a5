"""Measuring the knowledge base: does retrieval find the right article, and does the bot
abstain exactly when there is nothing to find?

A question set is JSON Lines, one question per line::

    {"question": "how do i retrun something", "expected": "returns", "kind": "typo"}
    {"question": "what's the capital of France", "expected": "none", "kind": "out_of_scope"}

`expected` is an article slug, or "none" when the knowledge base has no answer. `kind` is
optional and only groups the figures.

The answerer is the bot (bot/evaluation.py, passed in by eval_kb): the offline answerer by
default, so the figures measure the knowledge base and cost nothing, or the configured model
with the grounded prompt, as a reply would ask it: a model that replies that the passages
don't answer abstains, so near misses retrieval lets through are measured too.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import search as knowledge_search
from .language import question_key
from .models import Article, ExampleQuestion
from .search import embeddings
from .services import NONE_LABEL


class QuestionSetError(ValueError):
    """The question file is unreadable; the message names the line."""


@dataclass(frozen=True)
class Question:
    question: str
    expected: str  # a slug, or NONE_LABEL
    kind: str = ""


@dataclass(frozen=True)
class AnswerOutcome:
    """What the answerer did with a question."""

    abstained: bool
    source_article_ids: tuple[int, ...] = ()
    # Declined as not about the company at all (another company's product, an injection).
    out_of_domain: bool = False
    text: str = ""  # what the customer would read


@dataclass(frozen=True)
class Outcome:
    question: Question
    ranked_slugs: tuple[str, ...]  # retrieval's articles, best first
    top_confidence: float
    abstained: bool
    answer_sources: tuple[str, ...]
    retrieval_ms: float
    answer_ms: float
    out_of_domain: bool = False
    answer_text: str = ""

    @property
    def rank(self) -> int | None:
        """1-based rank of the expected article in retrieval's results, or None."""
        try:
            return self.ranked_slugs.index(self.question.expected) + 1
        except ValueError:
            return None

    def as_dict(self) -> dict[str, object]:
        return {
            "question": self.question.question,
            "expected": self.question.expected,
            "kind": self.question.kind,
            "abstained": self.abstained,
            "out_of_domain": self.out_of_domain,
            "answered_from": list(self.answer_sources),
            "ranked": list(self.ranked_slugs[:3]),
            "rank": self.rank,
            "top_confidence": round(self.top_confidence, 4),
            "answer": self.answer_text,
        }


def _share(part: int, whole: int) -> float | None:
    """part / whole; None when there is nothing to divide (JSON null, never NaN)."""
    return part / whole if whole else None


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    # Questions that are themselves example questions, whose example was left out (they are
    # measured as new questions).
    examples_left_out: int = 0

    def answerable(self) -> Report:
        """The answerable questions' outcomes only."""
        return Report(self._answerable())

    def _answerable(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.question.expected != NONE_LABEL]

    def _unanswerable(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.question.expected == NONE_LABEL]

    def hit_at(self, k: int) -> float | None:
        answerable = self._answerable()
        return _share(
            sum(1 for o in answerable if o.rank is not None and o.rank <= k), len(answerable)
        )

    @property
    def mrr(self) -> float | None:
        answerable = self._answerable()
        if not answerable:
            return None
        return sum(1 / o.rank for o in answerable if o.rank is not None) / len(answerable)

    @property
    def abstention_precision(self) -> float | None:
        abstained = [o for o in self.outcomes if o.abstained]
        return _share(
            sum(1 for o in abstained if o.question.expected == NONE_LABEL), len(abstained)
        )

    @property
    def abstention_recall(self) -> float | None:
        """The share of unanswerable questions refused ("out of scope refused")."""
        unanswerable = self._unanswerable()
        return _share(sum(1 for o in unanswerable if o.abstained), len(unanswerable))

    @property
    def wrongly_refused(self) -> float | None:
        """The share of answerable questions refused ("in scope wrongly refused")."""
        answerable = self._answerable()
        return _share(sum(1 for o in answerable if o.abstained), len(answerable))

    def declined_out_of_domain(self) -> float | None:
        """The share of these questions declined as not about the company at all."""
        return _share(sum(1 for o in self.outcomes if o.out_of_domain), len(self.outcomes))

    @property
    def answered_correctly(self) -> float | None:
        """Share of answerable questions answered (not abstained) citing the right article."""
        answerable = self._answerable()
        right = sum(
            1
            for o in answerable
            if not o.abstained and o.answer_sources[:1] == (o.question.expected,)
        )
        return _share(right, len(answerable))

    def latency(self, attribute: str, quantile: float) -> float | None:
        values = sorted(getattr(o, attribute) for o in self.outcomes)
        if not values:
            return None
        if len(values) == 1:
            return float(values[0])
        return float(statistics.quantiles(values, n=100, method="inclusive")[int(quantile) - 1])

    def of_kinds(self, *kinds: str) -> Report:
        """The outcomes of these kinds of question only."""
        return Report([o for o in self.outcomes if o.question.kind in kinds])

    def by_kind(self) -> dict[str, Report]:
        groups: dict[str, Report] = defaultdict(Report)
        for outcome in self.outcomes:
            groups[outcome.question.kind or "-"].outcomes.append(outcome)
        return dict(sorted(groups.items()))

    def summary(self) -> dict[str, float | int | None]:
        return {
            "questions": len(self.outcomes),
            "answerable": len(self._answerable()),
            "hit@1": self.hit_at(1),
            "hit@3": self.hit_at(3),
            "mrr": self.mrr,
            "answered_correctly": self.answered_correctly,
            "abstention_precision": self.abstention_precision,
            "abstention_recall": self.abstention_recall,
            "wrongly_refused": self.wrongly_refused,
            "examples_left_out": self.examples_left_out,
            "retrieval_p50_ms": self.latency("retrieval_ms", 50),
            "retrieval_p95_ms": self.latency("retrieval_ms", 95),
            "answer_p50_ms": self.latency("answer_ms", 50),
            "answer_p95_ms": self.latency("answer_ms", 95),
        }

    def is_miss(self, outcome: Outcome) -> bool:
        """Answered when it should abstain, abstained when it should answer, or answered from
        another article than the expected one."""
        if outcome.question.expected == NONE_LABEL:
            return not outcome.abstained
        return outcome.abstained or outcome.answer_sources[:1] != (outcome.question.expected,)


def read_questions(path: Path | str) -> list[Question]:
    questions: list[Question] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                question = Question(
                    str(row["question"]), str(row["expected"]), str(row.get("kind", ""))
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise QuestionSetError(f"{path}:{number}: not a question line ({exc})") from exc
            if not question.question.strip():
                raise QuestionSetError(f"{path}:{number}: the question is empty")
            questions.append(question)
    if not questions:
        raise QuestionSetError(f"{path}: no questions")
    return questions


def read_question_sets(paths: Iterable[Path | str]) -> list[Question]:
    """The questions of several files, in order; a QuestionSetError or OSError names the file."""
    return [question for path in paths for question in read_questions(path)]


# The bot answering a question (bot/evaluation.py): whether it abstained, and its sources.
Answerer = Callable[[str], AnswerOutcome]


def evaluate(
    questions: Iterable[Question],
    answerer: Answerer,
    *,
    depth: int = 10,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Run every question through retrieval (for ranking) and the answerer (for abstention)."""
    slug_of = dict(Article.objects.values_list("id", "slug"))
    knowledge_search.search("warm up", 1)  # the first query builds the index; don't time that
    questions = list(questions)
    example_keys = set(ExampleQuestion.objects.values_list("key", flat=True))
    report = Report(
        examples_left_out=sum(question_key(q.question) in example_keys for q in questions)
    )
    with knowledge_search.leaving_out_identical_examples():
        for i, question in enumerate(questions, start=1):
            report.outcomes.append(_evaluate_one(question, answerer, depth, slug_of))
            if progress is not None:
                progress(i)
    return report


def _evaluate_one(
    question: Question, answerer: Answerer, depth: int, slug_of: dict[int, str]
) -> Outcome:
    # Each timing includes embedding the question: retrieval would otherwise hand the answerer
    # its cached vector.
    embeddings.forget_queries()
    started = time.perf_counter()
    hits = knowledge_search.search(question.question, depth)
    retrieval_ms = (time.perf_counter() - started) * 1000
    embeddings.forget_queries()
    started = time.perf_counter()
    outcome = answerer(question.question)
    answer_ms = (time.perf_counter() - started) * 1000
    return Outcome(
        question=question,
        ranked_slugs=tuple(slug_of.get(h.article_id, "?") for h in hits),
        top_confidence=hits[0].confidence if hits else 0.0,
        abstained=outcome.abstained,
        out_of_domain=outcome.out_of_domain,
        answer_sources=tuple(slug_of.get(a, "?") for a in outcome.source_article_ids),
        retrieval_ms=retrieval_ms,
        answer_ms=answer_ms,
        answer_text=outcome.text,
    )
