"""`python manage.py fake_llm`: the fake OpenAI-compatible server (support_bot/fake_llm.py)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from support_bot import fake_llm


class Command(BaseCommand):
    help = (
        "Run a fake OpenAI-compatible chat server (deterministic replies, switchable faults). "
        "Point the app at it with OPENAI_BASE_URL=http://127.0.0.1:PORT/v1."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        fake_llm.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        fake_llm.serve(
            host=options["host"],
            port=options["port"],
            ttft_ms=options["ttft_ms"],
            tokens_per_s=options["tokens_per_s"],
            reply_tokens=options["reply_tokens"],
            fault=options["fault"],
            fault_times=options["fault_times"],
            log_level=options["log_level"],
        )
