"""Bulk-ingest help articles from Markdown, text and HTML files (see knowledge/ingest.py)."""

from __future__ import annotations

import shutil
import sys
import time
from argparse import RawDescriptionHelpFormatter
from collections import Counter
from pathlib import Path
from typing import Any

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    DjangoHelpFormatter,
    OutputWrapper,
)

from knowledge.indexing import sync_passages
from knowledge.ingest import (
    SUPPORTED_SUFFIXES,
    IngestReport,
    Skipped,
    Stored,
    ingest_paths,
)
from knowledge.services import KnowledgeLoadError, is_language_code

HELP = """\
Create or update help articles from files: Markdown (.md, .markdown, optional front matter),
plain text (.txt) and HTML (.html, .htm; converted to Markdown, scripts and styles dropped).
PATH is a file or a folder (walked recursively; hidden files and folders are skipped).

Re-ingesting a file updates the article it made (matched by the file's absolute path) and
writes nothing when the file did not change. A file that cannot be read (permissions, not
UTF-8), is larger than KB_MAX_FILE_BYTES, has invalid front matter or has no text is reported
by name and skipped; the other files still go in. Then the changed articles are split into
passages and embedded, so they answer questions at once.

Exit status: 0 when every file went in; 1 when some files were skipped (each named on
stderr; the others were ingested); 2 when nothing was ingested because a PATH does not exist
or the arguments are wrong.
"""


class _HelpFormatter(DjangoHelpFormatter, RawDescriptionHelpFormatter):
    """Django's option order, and the description's line breaks kept."""


def _plain(text: str) -> str:
    return text


class ProgressBar:
    """Progress on stderr: a bar redrawn in place on a terminal (`\\r[#####.....] 12/40 name`),
    plain lines at every tenth of the way (and at least every 10 s) otherwise."""

    WIDTH = 24
    TTY_INTERVAL_S = 0.1
    PLAIN_INTERVAL_S = 10.0

    def __init__(self, out: OutputWrapper, label: str, *, tty: bool, enabled: bool = True):
        self.out = out
        self.label = label
        self.tty = tty
        self.enabled = enabled
        self.drawn = ""  # what the terminal line shows now
        self.last_draw = 0.0
        self.last_step = -1
        self.last_state: tuple[int, int, str] | None = None

    def update(self, done: int, total: int, detail: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        self.last_state = (done, total, detail)
        now = time.monotonic()
        if self.tty:
            if done < total and now - self.last_draw < self.TTY_INTERVAL_S:
                return
            self._draw(self._bar(done, total, detail))
            if done >= total:  # complete: end the line now, before anything else is printed
                self._write("\n")
                self.drawn = ""
                self.last_state = None
        else:
            step = done * 10 // total
            quiet = now - self.last_draw < self.PLAIN_INTERVAL_S
            if step == self.last_step and done < total and quiet:
                return
            self.last_step = step
            percent = done * 100 // total
            line = f"{self.label}: {done}/{total} ({percent}%)"
            self._write(f"{line} {detail}".rstrip() + "\n")
        self.last_draw = now

    def message(self, text: str, out: OutputWrapper | None = None) -> None:
        """Print a line without breaking the bar (it is redrawn below the line)."""
        shown = self.drawn
        if shown:
            self._clear()
        (out or self.out).write(text, style_func=_plain)
        if shown:
            self._draw(self._bar(*self.last_state) if self.last_state else shown)

    def finish(self) -> None:
        if self.drawn:
            if self.last_state is not None:  # the last update may have been throttled
                self._draw(self._bar(*self.last_state))
            self._write("\n")
            self.drawn = ""

    def _bar(self, done: int, total: int, detail: str) -> str:
        filled = self.WIDTH * done // total
        head = f"{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} "
        room = shutil.get_terminal_size((80, 24)).columns - len(head) - 1
        if room <= 0:
            detail = ""
        elif len(detail) > room:
            detail = "…" + detail[-(room - 1) :] if room > 1 else ""
        return head + detail

    def _draw(self, line: str) -> None:
        self._write("\r" + line + "\x1b[K")
        self.drawn = line

    def _clear(self) -> None:
        self._write("\r\x1b[K")
        self.drawn = ""

    def _write(self, text: str) -> None:
        self.out.write(text, style_func=_plain, ending="")
        self.out.flush()


class Command(BaseCommand):
    help = HELP

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exit_status = 0

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="Files or folders.")
        parser.add_argument(
            "--unpublished",
            action="store_true",
            help="Create new articles as drafts (not used for answers until published in the "
            "admin). Existing articles keep their published flag; 'published:' in a file's "
            "front matter always decides.",
        )
        parser.add_argument(
            "--language",
            default=None,
            help="Language of files that do not say (front matter 'language:' or <html lang>); "
            "else an existing article keeps its language, and a new one's is detected from "
            "its text (en when unsure).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read and check every file and report what would change; write nothing.",
        )

    def run_from_argv(self, argv: list[str]) -> None:
        super().run_from_argv(argv)
        if self.exit_status:
            sys.exit(self.exit_status)

    def handle(self, *args: Any, **options: Any) -> None:
        self.exit_status = 0
        verbosity: int = options["verbosity"]
        language: str | None = options["language"]
        dry_run: bool = options["dry_run"]
        if language is not None and not is_language_code(language):
            raise CommandError(
                f"--language {language!r} is not a language code (e.g. en, pt-BR)", returncode=2
            )
        tty = self.stderr.isatty()
        bar = ProgressBar(self.stderr, "ingesting", tty=tty, enabled=verbosity >= 1)
        reported: set[Path] = set()

        def on_file(done: int, total: int, path: Path, result: Stored | Skipped) -> None:
            if isinstance(result, Skipped):
                reported.add(path)
                bar.message(self.style.ERROR(f"skipped {path}: {result.reason}: {result.detail}"))
            else:
                for note in result.notes:
                    bar.message(self.style.WARNING(f"{path}: {note}"))
                if verbosity >= 2:
                    bar.message(f"{result.outcome} {result.slug} <- {path}", out=self.stdout)
            bar.update(done, total, str(path))

        try:
            report = ingest_paths(
                options["paths"],
                published=not options["unpublished"],
                language=language,
                dry_run=dry_run,
                on_file=on_file,
            )
        except KnowledgeLoadError as exc:
            raise CommandError(f"{exc}; nothing was ingested", returncode=2) from exc
        finally:
            bar.finish()
        for skipped in report.skipped:
            if skipped.path not in reported:  # folders that could not be listed
                self.stderr.write(f"skipped {skipped.path}: {skipped.reason}: {skipped.detail}")
        if verbosity >= 1:
            self.stdout.write(self._summary(report, dry_run))
        if report.skipped:
            self.exit_status = 1
        if dry_run or not report.article_ids:
            return

        index_bar = ProgressBar(self.stderr, "indexing", tty=tty, enabled=verbosity >= 1)
        try:
            sync = sync_passages(
                report.article_ids, progress=lambda done, total: index_bar.update(done, total)
            )
        finally:
            index_bar.finish()
        if verbosity >= 1:
            self.stdout.write(
                f"Search index: {sync.reindexed} {_plural(sync.reindexed, 'article')} re-indexed "
                f"({sync.embedded} {_plural(sync.embedded, 'passage')} embedded), "
                f"{sync.removed} removed."
            )

    def _summary(self, report: IngestReport, dry_run: bool) -> str:
        would = "would be " if dry_run else ""
        parts = [
            f"{report.created} {would}created",
            f"{report.updated} {would}updated",
            f"{report.unchanged} unchanged",
            f"{len(report.skipped)} skipped",
        ]
        line = f"{report.files} {_plural(report.files, 'file')}: " + ", ".join(parts)
        if report.skipped:
            reasons = Counter(str(skipped.reason) for skipped in report.skipped)
            line += " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) + ")"
        line += "."
        if report.unsupported:
            n = len(report.unsupported)
            kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
            line += f" {n} other {_plural(n, 'file')} ignored (not {kinds})."
        if dry_run:
            return "Dry run, nothing written. " + line
        return self.style.SUCCESS(line) if not report.skipped else self.style.WARNING(line)


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
