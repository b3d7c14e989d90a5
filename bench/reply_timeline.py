"""Where one reply's time goes in the worker before its first token: claiming it, embedding
the question, building the request (history, retrieval, prompt), the model's first token.

    .venv/bin/python bench/reply_timeline.py [--replies 15] [--database postgres://...]
        [--redis redis://127.0.0.1:6379/11] [--ttft-ms 300]

One reply at a time, on this thread, against a fake model server of its own over real HTTP,
the demo knowledge base, an in-memory SQLite database unless --database names one (its
tables are created; use a database of its own), and Redis (keys under a prefix of the run).
Times are wall-clock ms from the moment the worker's task would start (write_reply), median
over the replies after two unreported ones. `bench/load.py`'s one-customer round adds the
rest: the message's intake, Celery's hand-over and the frames' way to the browser.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.standalone import setup  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=15)
    parser.add_argument("--database", default="sqlite://:memory:")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--ttft-ms", type=float, default=300)
    options = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_llm", "--port", "0", "--ttft-ms", str(options.ttft_ms),
         "--tokens-per-s", "50", "--reply-tokens", "20"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    listening = server.stdout.readline()  # "fake_llm listening on http://127.0.0.1:<port>"
    if not listening.startswith("fake_llm listening on "):
        server.kill()
        sys.exit(f"the fake model did not start: {listening!r}")
    prefix = f"sbtimeline{os.getpid()}:"
    try:
        setup(
            DATABASE_URL=options.database,
            REDIS_URL=options.redis,
            REDIS_KEY_PREFIX=prefix,
            KB_EMBEDDINGS="auto",
            LLM_PROVIDER="openai",
            OPENAI_API_KEY="sk-bench",
            OPENAI_BASE_URL=listening.rsplit(" ", 1)[1].strip() + "/v1",
            OPENAI_MODEL="fake-model",
        )
        run(options.replies)
    finally:
        server.terminate()
        server.wait(10)
        from support_bot.redis_clients import sync_client

        client = sync_client()
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def run(replies: int) -> None:
    from django.core.management import call_command

    from conversations import replies as reply_module
    from conversations.events import ReplyPublisher
    from conversations.models import Conversation, Customer, Turn
    from knowledge import search

    call_command("migrate", verbosity=0)
    call_command("load_demo_kb", verbosity=0)
    started_at = [0.0]
    marks: dict[str, list[float]] = defaultdict(list)

    def timed(owner: Any, name: str, label: str, once: bool = False) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if not (once and len(marks[f"{label} at"]) > len(marks["done"])):
                    marks[f"{label} at"].append((began - started_at[0]) * 1000)
                    marks[f"{label} took"].append((time.perf_counter() - began) * 1000)

        setattr(owner, name, wrapper)

    timed(Turn, "claim_reply", "claim")
    timed(search, "warm_question", "question's embedding")
    timed(reply_module, "request_for_reply", "request (history, retrieval, prompt)")
    timed(ReplyPublisher, "start", "reply.start sent")
    timed(ReplyPublisher, "delta", "first token sent", once=True)

    for number in range(replies + 2):
        conversation = Conversation.objects.create(customer=Customer.objects.create())
        text = f"[{number}] Hello! How do I change the delivery address of order {1000 + number}?"
        question = Turn.objects.create(conversation=conversation, author="customer", text=text)
        reply = Turn.objects.create(
            conversation=conversation, author="bot", status="queued", reply_to=question
        )
        if number == 2:  # the first two warm the process up
            marks.clear()
        started_at[0] = time.perf_counter()
        reply_module.write_reply(reply.pk)
        marks["done"].append((time.perf_counter() - started_at[0]) * 1000)
        reply.refresh_from_db()
        if reply.status != "done":
            sys.exit(f"reply {reply.pk} ended {reply.status}: {reply.text!r}")

    print(f"{replies} replies, one at a time: ms from the task's start, median")
    stages = {label.rsplit(" ", 1)[0] for label in marks if label != "done"}
    labels = sorted(stages, key=lambda label: statistics.median(marks[f"{label} at"]))
    for label in labels:
        at = statistics.median(marks[f"{label} at"])
        took = statistics.median(marks[f"{label} took"])
        print(f"  {label:40} at {at:7.1f}   took {took:6.1f}")


if __name__ == "__main__":
    main()
