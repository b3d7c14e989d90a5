"""Loads (or refreshes) the demo knowledge base from knowledge/demo/*.md, and its example
questions (knowledge.services.DEMO_EXAMPLE_SETS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.evaluation import QuestionSetError, read_question_sets
from knowledge.indexing import sync_passages
from knowledge.management.commands.import_kb_examples import report_import
from knowledge.services import (
    DEMO_DIR,
    DEMO_EXAMPLE_SETS,
    KnowledgeLoadError,
    import_example_questions,
    load_markdown_folder,
    markdown_files,
)


class Command(BaseCommand):
    help = (
        "Create or update the demo help articles (by slug) and their example questions. "
        "Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--path", default=str(DEMO_DIR), help="Folder of Markdown articles to load."
        )
        parser.add_argument(
            "--no-examples",
            action="store_true",
            help="Load the articles only, without the demo's example questions.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            total = len(markdown_files(options["path"]))
            created, updated = load_markdown_folder(options["path"])
        except KnowledgeLoadError as exc:
            raise CommandError(str(exc)) from exc
        # Also articles that were unchanged but never indexed (or by another embedding model):
        # searches only read what is indexed.
        sync = sync_passages()
        self.stdout.write(
            self.style.SUCCESS(
                f"Knowledge base: {total} articles "
                f"({created} created, {updated} updated, {total - created - updated} unchanged; "
                f"{sync.reindexed} more indexed)."
            )
        )
        examples = [Path(options["path"]) / name for name in DEMO_EXAMPLE_SETS]
        if options["no_examples"] or not all(path.is_file() for path in examples):
            return
        try:
            questions = read_question_sets(examples)
        except (OSError, QuestionSetError) as exc:
            raise CommandError(str(exc)) from exc
        result = import_example_questions((q.question, q.expected) for q in questions)
        report_import(self, result)
