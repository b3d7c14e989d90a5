"""python manage.py import_kb_examples QUESTIONS.jsonl...: add example questions, labelled with
the article that answers each or "none", in eval_kb's question-set format (see
knowledge.ExampleQuestion)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.evaluation import QuestionSetError, read_question_sets
from knowledge.services import ExampleImport, import_example_questions


class Command(BaseCommand):
    help = (
        'Import example questions (JSON Lines: question, expected article slug or "none") '
        "that retrieval compares customers' questions with. Importing a question again "
        "relabels it. Don't import a set you then evaluate on: eval_kb leaves an identical "
        "example out, but close variants would still flatter the figures."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", help="Question sets, .jsonl")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            questions = read_question_sets(options["files"])
        except (OSError, QuestionSetError) as exc:
            raise CommandError(str(exc)) from exc
        result = import_example_questions((q.question, q.expected) for q in questions)
        report_import(self, result)
        if result.skipped and not (result.created or result.relabelled or result.unchanged):
            raise CommandError("No example question could be imported.")


def report_import(command: BaseCommand, result: ExampleImport) -> None:
    for reason in result.skipped:
        command.stderr.write(f"skipped: {reason}")
    command.stdout.write(
        command.style.SUCCESS(
            f"Example questions: {result.created} created, {result.relabelled} relabelled, "
            f"{result.unchanged} unchanged, {len(result.skipped)} skipped; "
            f"{result.embedded} embedded."
        )
    )
