"""Other companies' knowledge bases, for measuring the bot on help centres nobody tuned for
(bench/companies/): a folder loaded alone, in place of the installed knowledge base, inside a
transaction that is rolled back afterwards, so the installed one is never touched.

A folder holds `articles/` (files ingest_kb reads), `questions.jsonl` (eval_kb's format) and,
optionally, `examples.jsonl` (example questions, most common first: teaching with the first N).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from .evaluation import Question, read_question_sets
from .indexing import sync_passages
from .ingest import ingest_paths
from .models import Article, ExampleQuestion
from .search import knowledge_index
from .services import DEMO_DIR, DEMO_EXAMPLE_SETS, import_example_questions


class KnowledgeBaseFolderError(ValueError):
    """A folder that is not a knowledge base to measure; the message says why."""


@dataclass(frozen=True)
class KnowledgeBaseFolder:
    name: str
    articles: Path  # a folder of articles
    question_files: tuple[Path, ...]
    example_files: tuple[Path, ...] = ()

    @classmethod
    def at(cls, path: Path) -> KnowledgeBaseFolder:
        """A company's folder: articles/, questions.jsonl, examples.jsonl."""
        examples = path / "examples.jsonl"
        return cls(
            path.name,
            path / "articles",
            (path / "questions.jsonl",),
            (examples,) if examples.is_file() else (),
        )

    @classmethod
    def demo(cls) -> KnowledgeBaseFolder:
        """The demo company (Brightwave): its question sets are also its example questions,
        as load_demo_kb loads them."""
        sets = tuple(DEMO_DIR / name for name in DEMO_EXAMPLE_SETS)
        return cls("brightwave", DEMO_DIR, sets, sets)

    def questions(self) -> list[Question]:
        return read_question_sets(self.question_files)

    def examples(self, count: int | None = None) -> list[Question]:
        """The first `count` example questions (all with None)."""
        if count == 0 or not self.example_files:
            return []
        return read_question_sets(self.example_files)[:count]


def folders(root: Path | str) -> list[KnowledgeBaseFolder]:
    """The knowledge-base folders directly under `root`, by name."""
    root = Path(root)
    if not root.is_dir():
        raise KnowledgeBaseFolderError(f"{root}: not a folder")
    found = [
        KnowledgeBaseFolder.at(path)
        for path in sorted(root.iterdir())
        if (path / "articles").is_dir() and (path / "questions.jsonl").is_file()
    ]
    if not found:
        raise KnowledgeBaseFolderError(
            f"{root}: no folder with articles/ and questions.jsonl under it"
        )
    return found


@contextmanager
def loaded_alone(folder: KnowledgeBaseFolder, *, examples: int | None = 0) -> Iterator[None]:
    """Within the block, the knowledge base is `folder`'s articles alone (indexed), with its
    first `examples` example questions (None: all of them). Everything is rolled back after,
    in one transaction: run it on a database nobody else writes to meanwhile (SQLite holds its
    write lock for the whole measurement)."""
    try:
        with transaction.atomic():
            try:
                ExampleQuestion.objects.all().delete()
                Article.objects.all().delete()
                report = ingest_paths([folder.articles])
                if report.skipped:
                    raise KnowledgeBaseFolderError(
                        f"{folder.name}: {len(report.skipped)} article(s) could not be ingested"
                    )
                sync_passages(report.article_ids)
                taught = folder.examples(examples)
                if taught:
                    import_example_questions((q.question, q.expected) for q in taught)
                knowledge_index.invalidate()
                yield
            finally:
                transaction.set_rollback(True)
    finally:
        knowledge_index.invalidate()
