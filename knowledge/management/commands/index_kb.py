"""python manage.py index_kb: bring the search index's stored passages and vectors up to date.

Saving or ingesting articles and example questions indexes them already; this is for what
was written another way (a shell, a bulk SQL update) or after the embedding model changed.
Only what changed is re-split and re-embedded, so it is cheap to run at every deployment.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from knowledge.indexing import sync_example_questions, sync_passages


class Command(BaseCommand):
    help = "Index the articles and example questions that are not indexed yet (or changed)."

    def handle(self, *args: Any, **options: Any) -> None:
        report = sync_passages()
        embedded = sync_example_questions()
        self.stdout.write(
            self.style.SUCCESS(
                f"Search index: {report.reindexed} article(s) re-indexed, {report.removed} "
                f"removed, {report.embedded} passage(s) and {embedded} example question(s) "
                "embedded."
            )
        )
