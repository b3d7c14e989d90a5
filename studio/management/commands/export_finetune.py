"""Export resolved, well-rated conversations as a chat-format JSONL file for fine-tuning.

    python manage.py export_finetune OUT.jsonl [--min-rating 4] [--since 2026-01-31]

Each line is {"messages": [{"role": "system", ...}, {"role": "user", ...},
{"role": "assistant", ...}, ...]} (studio.finetune.finetune_examples). "-" writes to stdout.
A fine-tuned model id ("ft:gpt-4o-mini:acme::abc") then goes into a prompt version's model.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from studio.finetune import finetune_jsonl


def _date(value: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--since wants a date such as 2026-01-31, not {value!r}") from None


class Command(BaseCommand):
    help = "Export resolved conversations rated 4-5 as chat-format JSONL for fine-tuning."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("out", help="the JSONL file to write ('-' for stdout)")
        parser.add_argument("--min-rating", type=int, default=4, choices=range(1, 6))
        parser.add_argument(
            "--since", type=_date, default=None, help="only conversations resolved on or after"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        lines = finetune_jsonl(options["min_rating"], options["since"])
        count = 0
        if options["out"] == "-":
            for line in lines:
                sys.stdout.write(line)
                count += 1
        else:
            with open(options["out"], "w", encoding="utf-8") as out:
                for line in lines:
                    out.write(line)
                    count += 1
        self.stderr.write(f"{count} conversations exported")
