"""Loads (or refreshes) the demo knowledge base from knowledge/demo/*.md."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.services import DEMO_DIR, KnowledgeLoadError, load_markdown_folder, markdown_files


class Command(BaseCommand):
    help = "Create or update the demo help articles (by slug). Safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--path", default=str(DEMO_DIR), help="Folder of Markdown articles to load."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            total = len(markdown_files(options["path"]))
            created, updated = load_markdown_folder(options["path"])
        except KnowledgeLoadError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Knowledge base: {total} articles "
                f"({created} created, {updated} updated, {total - created - updated} unchanged)."
            )
        )
