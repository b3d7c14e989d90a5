"""CPU a worker spends publishing one reply frame (events.ReplyPublisher: the replay log's XADD
and EXPIRE, the group's PUBLISH, the takeover check's EXISTS, in one pipeline), with redis-py's
own Python parser and with hiredis, in the same run, rounds alternating.

    .venv/bin/python bench/frame_publish.py [--redis redis://127.0.0.1:6379/11] [--frames 3000]

Runs against a real Redis (its keys under a prefix unique to the run, deleted at the end) on
an in-memory SQLite database; one thread, as one reply's thread publishes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.standalone import setup  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--frames", type=int, default=3000, help="frames a round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each parser")
    options = parser.parse_args()
    setup(REDIS_URL=options.redis, REDIS_KEY_PREFIX=f"sbframebench{os.getpid()}:")

    import redis
    from django.core.management import call_command
    from redis._parsers import _HiredisParser, _RESP3Parser
    from redis.utils import HIREDIS_AVAILABLE

    from conversations.events import ReplyPublisher
    from conversations.models import Conversation, Customer, Turn

    if not HIREDIS_AVAILABLE:
        sys.exit("hiredis is not installed: make install")
    call_command("migrate", verbosity=0)
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    question = Turn.objects.create(conversation=conversation, author="customer", text="Hi")
    reply = Turn.objects.create(
        conversation=conversation, author="bot", status="queued", reply_to=question
    )
    publisher = ReplyPublisher(reply)
    clients = {
        name: redis.Redis.from_url(options.redis, decode_responses=True, parser_class=kind)
        for name, kind in (("python", _RESP3Parser), ("hiredis", _HiredisParser))
    }
    piece = "Your order ships within two days, and "  # a piece as a reply sends it under load
    samples: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for round_ in range(options.rounds + 1):  # the first round warms up, unreported
            for name, client in clients.items():
                publisher.redis = client
                started = time.process_time()
                for _ in range(options.frames):
                    publisher.delta(piece)
                if round_:
                    samples[name].append((time.process_time() - started) / options.frames * 1e6)
                publisher.text = ""
        stored = clients["python"].xlen(publisher.log)
        if stored != publisher.seq:
            sys.exit(f"the replay log holds {stored} frames of {publisher.seq} published")
    finally:
        clients["python"].delete(publisher.log)
    print(f"CPU a frame, µs ({options.rounds} rounds of {options.frames} frames, median; range)")
    for name, values in samples.items():
        median, low, high = statistics.median(values), min(values), max(values)
        print(f"  {name:8} {median:6.1f}   ({low:.1f}-{high:.1f})")
    ratio = statistics.median(samples["hiredis"]) / statistics.median(samples["python"])
    print(f"  hiredis ÷ python: {ratio:.2f}")


if __name__ == "__main__":
    main()
