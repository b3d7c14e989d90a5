"""What asking "does this message say yes?" costs every customer message (bot/affirmation.py,
asked before the message is stored: a yes to the bot's offer of a person hands over).

    .venv/bin/python bench/affirmation.py [--rounds 5]

Over the customer questions of three fictional companies (bench/companies: harbor, ledgerly,
novatel; skyway stays held out) and a few yeses: CPU a message, each word new to the process
(cold) and after the process has seen the words (warm). Run it on the commit before a change
for the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import affirmation  # noqa: E402

COMPANIES = ("harbor", "ledgerly", "novatel")
YESES = ("yes please", "ja gerne", "oui merci", "yesss", "ok thanks", "sí, por favor")


def messages() -> list[str]:
    found: list[str] = []
    for company in COMPANIES:
        path = ROOT / "bench" / "companies" / company / "questions.jsonl"
        found += [json.loads(line)["question"] for line in path.read_text().splitlines() if line]
    return found + list(YESES)


def forget_words() -> None:
    """Forget the words the process has seen (the word cache; absent on older commits)."""
    meanings = getattr(affirmation, "_meanings", None)
    if meanings is not None:
        meanings.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    texts = messages()
    said_yes = [affirmation.affirmative(text) is not None for text in texts]
    cold = warm = 0.0
    for _ in range(rounds):
        started = time.process_time()
        for text in texts:
            forget_words()
            affirmation.affirmative(text)
        cold += time.process_time() - started
        started = time.process_time()
        for text in texts:
            affirmation.affirmative(text)
        warm += time.process_time() - started
    per = 1e6 / (len(texts) * rounds)
    print(f"{len(texts)} messages ({sum(said_yes)} say yes), {rounds} rounds")
    print(f"CPU a message: {cold * per:.0f} µs with every word new, {warm * per:.0f} µs warm")


if __name__ == "__main__":
    main()
