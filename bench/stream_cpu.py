"""The CPU a worker thread spends reading a model's streamed reply, as a reply reads it
(bot/run.py's loop, with pieces sent every REPLY_FLUSH_INTERVAL_S), three ways in the same run
against the same fake model server:

- httpx2, token at a time: the `openai` client on its own transport, each token read as it
  comes (Support Bot before 2026-12-07);
- urllib3, token at a time: on the transport Support Bot gives it (bot/providers/transport.py);
- urllib3, piece at a time: and the tokens left in the socket between pieces, read together
  when the next piece is due (bot/run.py; what a reply does now).

Threads stream replies at once as a worker's threads do; the figure is this process's CPU
(user + system) per reply and per token while they stream, with every reply's text checked.
The rounds take the variants in turn, so a busy machine weighs on all alike.

    .venv/bin/python bench/stream_cpu.py --threads 20 --replies 3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "support_bot.settings")
os.environ.setdefault("DEBUG", "1")

import django  # noqa: E402

django.setup()

import openai  # noqa: E402

from bot import run as bot_run  # noqa: E402
from bot.providers.openai import OpenAIProvider  # noqa: E402
from bot.providers.transport import LeanTransport  # noqa: E402
from bot.types import ChatMessage, ReplyRequest  # noqa: E402
from tests.fake_llm import expected_reply  # noqa: E402
from tests.fixtures_fake_llm import start_fake_llm  # noqa: E402

QUESTION = "Tell me about delivery times, returns and the warranty, please."
VARIANTS = ("httpx2, token at a time", "urllib3, token at a time", "urllib3, piece at a time")


@dataclass
class Round:
    variant: str
    replies: int
    tokens: int
    cpu_ms_per_reply: float
    cpu_us_per_token: float
    wrong: int  # replies whose text was not the fake's


def provider_for(variant: str, base_url: str) -> OpenAIProvider:
    provider = OpenAIProvider(api_key="bench", base_url=base_url, model="bench-model")
    assert isinstance(provider._client._client._transport, LeanTransport), "a proxy is set"
    if variant.startswith("httpx2"):
        # The SDK's own client, on httpx2's transport, in place of the provider's.
        provider._client = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=0)
    provider.streams_over_network = variant.endswith("piece at a time")
    return provider


def measure(
    provider: OpenAIProvider, variant: str, threads: int, replies: int, expected: str
) -> Round:
    request = ReplyRequest(messages=[ChatMessage("user", QUESTION)])
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def stream() -> None:
        for _ in range(replies):
            pieces: list[str] = []
            answer = bot_run.answer(request, provider, on_delta=pieces.append)
            with lock:
                ok = "".join(pieces) == answer.text == expected
                results.append((answer.completion_tokens, ok))

    workers = [threading.Thread(target=stream) for _ in range(threads)]
    # The process's CPU, user and system, every thread: os.times() would tick in 10 ms steps.
    before = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu = time.process_time() - before
    tokens = sum(n for n, _ in results)
    return Round(
        variant=variant,
        replies=len(results),
        tokens=tokens,
        cpu_ms_per_reply=cpu / max(1, len(results)) * 1000,
        cpu_us_per_token=cpu / max(1, tokens) * 1e6,
        wrong=sum(1 for _, ok in results if not ok) + threads * replies - len(results),
    )


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=20, help="replies streaming at once")
    parser.add_argument("--replies", type=int, default=3, help="replies per thread per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant")
    parser.add_argument("--reply-tokens", type=int, default=150)
    parser.add_argument("--tokens-per-s", type=float, default=50)
    parser.add_argument("--ttft-ms", type=int, default=100)
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args(argv)

    server = start_fake_llm(
        extra_args=[
            "--reply-tokens", str(args.reply_tokens),
            "--tokens-per-s", str(args.tokens_per_s),
            "--ttft-ms", str(args.ttft_ms),
        ]
    )  # fmt: skip
    try:
        messages = [{"role": "user", "content": QUESTION}]
        expected = "".join(expected_reply(messages, args.reply_tokens))
        providers = {name: provider_for(name, server.base_url) for name in VARIANTS}
        for name in VARIANTS:  # connections opened, code paths warm
            measure(providers[name], name, min(args.threads, 4), 1, expected)
        rounds = [
            measure(providers[name], name, args.threads, args.replies, expected)
            for _ in range(args.rounds)
            for name in VARIANTS
        ]
    finally:
        server.stop()

    def mean(name: str, field: str) -> float:
        values = [getattr(r, field) for r in rounds if r.variant == name]
        return sum(values) / len(values)

    summary = {
        name: {
            "cpu_ms_per_reply": mean(name, "cpu_ms_per_reply"),
            "cpu_us_per_token": mean(name, "cpu_us_per_token"),
        }
        for name in VARIANTS
    }
    baseline = summary[VARIANTS[0]]["cpu_ms_per_reply"]
    for row in summary.values():
        # None (JSON null) should the first way measure no CPU at all.
        row["ratio"] = row["cpu_ms_per_reply"] / baseline if baseline else None
    result = {
        "threads": args.threads,
        "reply_tokens": args.reply_tokens,
        "flush_interval_s": bot_run.settings.REPLY_FLUSH_INTERVAL_S,
        "rounds": [asdict(r) for r in rounds],
        "summary": summary,
        "wrong": sum(r.wrong for r in rounds),
    }
    print(f"{args.threads} replies at once, {args.reply_tokens} tokens each, {args.rounds} rounds")
    print(f"{'how it reads':<26} {'CPU ms a reply':>15} {'µs a token':>11} {'÷ first':>8}")
    for name in VARIANTS:
        row = summary[name]
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(
            f"{name:<26} {row['cpu_ms_per_reply']:>15.1f} {row['cpu_us_per_token']:>11.0f}"
            f" {ratio:>8}"
        )
    print(f"replies whose text was wrong or missing: {result['wrong']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    outcome = run()
    sys.exit(1 if outcome["wrong"] else 0)
