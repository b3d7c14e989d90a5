"""Does the prompt stay bounded as a conversation grows? Builds a 50-exchange conversation with
realistic lengths (customer messages of 10-40 words, answers of 40-120 words) over the demo
help articles, and prints the estimated prompt tokens of the reply at customer messages 10,
20, 30, 40 and 50: with the context budget (a prompt version's history_tokens, default 1500)
and without it (every earlier turn sent: the unbounded baseline), and the ratio 50/10.

    .venv/bin/python bench/context_budget.py [--history-tokens 1500] [--seed 7]

Runs on its own in-memory SQLite database with the offline embeddings off; it touches nothing
else (no Redis, no model). The prompt is exactly what the reply writer would send
(conversations.replies.request_for_reply), estimated with bot.types.estimate_tokens.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.standalone import setup  # noqa: E402

setup(
    KB_EMBEDDINGS="off",
    KB_MIN_CONFIDENCE="0",
    KB_PROMPT_PASSAGES="4",
    KB_PROMPT_TOKENS="1200",
    CHAT_HISTORY_TURNS="20",
    COMPANY_NAME="Brightwave",
)

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bot.config import BotConfig, default_config  # noqa: E402
from bot.types import estimate_tokens  # noqa: E402
from conversations.models import Conversation, Customer, Turn  # noqa: E402
from conversations.replies import request_for_reply  # noqa: E402
from knowledge.indexing import sync_passages  # noqa: E402
from knowledge.models import Article  # noqa: E402
from knowledge.services import DEMO_DIR, parse_front_matter  # noqa: E402

CHECKPOINTS = (10, 20, 30, 40, 50)


def load_demo_articles() -> list[str]:
    """The demo help articles; returns their words, to write questions and answers from."""
    words: list[str] = []
    for path in sorted(DEMO_DIR.glob("*.md")):
        meta, body = parse_front_matter(path.read_text())
        Article.objects.create(
            slug=path.stem, title=str(meta.get("title") or path.stem), body=body, url=""
        )
        words.extend(w.strip(".,:;()*?!\"'“”→#") for w in body.split())
    sync_passages()
    return [w for w in words if w.isalpha()]


def sentence(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."


def prompt_tokens(reply: Turn, bot: BotConfig) -> int:
    return sum(estimate_tokens(m.content) + 1 for m in request_for_reply(reply, bot).messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history-tokens", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    call_command("migrate", verbosity=0, run_syncdb=True)
    rng = random.Random(args.seed)
    words = load_demo_articles()
    base = default_config()
    bounded = BotConfig(**{**base.__dict__, "history_tokens": args.history_tokens})
    # The baseline: every earlier turn, whatever its length.
    settings.CHAT_HISTORY_TURNS = 10_000
    unbounded_bot = BotConfig(**{**base.__dict__, "history_tokens": 10**9})

    conversation = Conversation.objects.create(customer=Customer.objects.create())
    results: dict[int, tuple[int, int]] = {}
    for n in range(1, max(CHECKPOINTS) + 1):
        question = " ".join(sentence(rng, words, rng.randint(5, 20)) for _ in range(2))
        Turn.objects.create(conversation=conversation, author="customer", text=question)
        reply = Turn.objects.create(conversation=conversation, author="bot", status="queued")
        if n in CHECKPOINTS:
            settings.CHAT_HISTORY_TURNS = 20
            with_budget = prompt_tokens(reply, bounded)
            settings.CHAT_HISTORY_TURNS = 10_000
            results[n] = (with_budget, prompt_tokens(reply, unbounded_bot))
        answer = " ".join(sentence(rng, words, rng.randint(10, 30)) for _ in range(4))
        Turn.objects.filter(pk=reply.pk).update(status="done", text=answer)

    print(f"history budget: {args.history_tokens} estimated tokens, CHAT_HISTORY_TURNS=20")
    print(f"{'turn':>5} {'with budget':>12} {'unbounded':>10}")
    for n, (with_budget, unbounded) in results.items():
        print(f"{n:>5} {with_budget:>12} {unbounded:>10}")
    first, last = results[CHECKPOINTS[0]], results[CHECKPOINTS[-1]]
    print(f"ratio 50/10: with budget {last[0] / first[0]:.2f}, unbounded {last[1] / first[1]:.2f}")


if __name__ == "__main__":
    main()
