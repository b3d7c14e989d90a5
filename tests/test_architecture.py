"""The layout's promises that import-linter (make lint) can't check: one module reads a
provider's stream and one builds what a model is asked, so a change to either is made once."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ("support_bot", "knowledge", "bot", "conversations", "inbox", "studio")


def modules_matching(pattern: str) -> set[str]:
    found = set()
    for package in PRODUCTION:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts and re.search(pattern, path.read_text()):
                found.add(str(path.relative_to(ROOT)))
    return found


def test_only_the_run_loop_and_its_guard_read_a_providers_stream():
    # bot/guards.py relays a stream it wraps (the no-answer marker), bot/providers/budget.py
    # relays one once it has its turn in the model's budget and bot/providers/hedge.py races
    # several requests' streams; bot/run.py reads it. (bot/providers/transport.py reads an
    # HTTP response's body, urllib3's `.stream()`, under the openai client: not a provider's.)
    assert modules_matching(r"\.stream\(") == {
        "bot/run.py",
        "bot/guards.py",
        "bot/providers/budget.py",
        "bot/providers/hedge.py",
        "bot/providers/transport.py",
    }


def test_only_the_prompt_module_builds_the_requests_a_model_answers():
    assert modules_matching(r"\bReplyRequest\(") == {"bot/prompt.py"}
