"""Agent assist's reading of a conversation: its topics, the customer's latest open problem and
the transcript a model is given, from plain lines (no models: the inbox reads the turns).

A conversation often holds several topics ("where is my parcel?", later "how do I get a
refund?", later "my plug is broken"). The agent needs the latest one first, so:

- a *topic* is what the customer wrote between two answers (of the bot or an agent), or a new
  question within it once the current topic has asked one (_split); small talk ("thanks",
  "hello?") and messages with nothing to look up start no topic and join none, and a short
  follow-up that points back ("how long does that take?", bot.grounding.is_follow_up)
  continues the topic before it;
- the *latest open problem* is the newest topic with no resolution after it (the conversation
  was resolved since: the topic is closed);
- the *transcript* is the whole conversation within a token budget: when it doesn't fit, the
  oldest turns go first, but the customer's first message stays (it says how it all began),
  with a line saying how many turns were left out between.

The summary prompt itself is built in bot/prompt.py (assist_summary_request), like every prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.grounding import is_follow_up, strip_citations
from bot.small_talk import small_talk_kinds
from bot.types import estimate_tokens
from knowledge import search as knowledge_search

LABELS = {"customer": "Customer", "bot": "Bot", "agent": "Agent", "system": "Notice"}
# A line's share of the transcript: one pasted log must not push every other turn out.
LINE_MAX_CHARS = 1000
TOPIC_CHARS = 300


@dataclass(frozen=True)
class Line:
    """One turn as assist reads it. `resolves`: the conversation was resolved here (all topics
    before it are closed)."""

    author: str  # "customer", "bot", "agent" or "system"
    text: str
    resolves: bool = False


@dataclass(frozen=True)
class Topic:
    messages: tuple[str, ...]  # the customer's messages, oldest first
    last: int  # the index of its last customer line that isn't small talk
    answered: bool  # the bot or an agent wrote after it
    resolved: bool  # a resolution came after it

    @property
    def text(self) -> str:
        return clip(" ".join(self.messages), TOPIC_CHARS)


def clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _substantive(message: str) -> bool:
    """Whether a customer message can be a problem: not small talk, something to look up."""
    return not small_talk_kinds(message) and bool(knowledge_search.content_words(message))


def topics(lines: Sequence[Line]) -> list[Topic]:
    """The customer's topics, oldest first (see the module doc)."""
    runs: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if line.author == "customer":
            current.append((i, line.text))
        elif current and line.author in ("bot", "agent"):
            runs.append(current)
            current = []
    if current:
        runs.append(current)

    found: list[Topic] = []
    for run in runs:
        for group in _split(run):
            end = group[-1][0]
            after = lines[end + 1 :]
            answered = any(line.author in ("bot", "agent") for line in after)
            resolved = any(line.resolves for line in after)
            messages = [text for _, text in group]
            if found and is_follow_up(messages[0]) and not found[-1].resolved:
                messages = [*found.pop().messages, *messages]
            found.append(Topic(tuple(messages), end, answered, resolved))
    return found


def _split(run: Sequence[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """A run of customer messages nobody answered between, as topics: small talk dropped, and a
    new question starts a new topic once the current one has asked one ("Where is my parcel?"
    then "How do I return an item?" are two; "My plug broke." then "Can I get a new one?" one;
    a follow-up that points back never starts one)."""
    groups: list[list[tuple[int, str]]] = []
    for i, text in run:
        if not _substantive(text):
            continue
        asks = "?" in text
        if groups and not (asks and not is_follow_up(text) and _asks(groups[-1])):
            groups[-1].append((i, text))
        else:
            groups.append([(i, text)])
    return groups


def _asks(group: Sequence[tuple[int, str]]) -> bool:
    return any("?" in text for _, text in group)


def latest_problem(found: Sequence[Topic]) -> Topic | None:
    """The newest topic nobody resolved since, or None."""
    if found and not found[-1].resolved:
        return found[-1]
    return None


def _line_text(line: Line) -> str:
    # An answer's [n] markers point at passages this prompt doesn't have.
    text = line.text if line.author == "customer" else strip_citations(line.text)
    return f"{LABELS.get(line.author, line.author)}: {clip(text, LINE_MAX_CHARS)}"


def transcript(lines: Sequence[Line], budget: int, *, left_out_before: int = 0) -> str:
    """The conversation as text within `budget` estimated tokens: the newest lines that fit,
    and always the first one (the module doc). `left_out_before`: lines already left out
    between the first line and the rest (the caller read only the newest turns)."""
    if not lines:
        return ""
    rendered = [_line_text(line) for line in lines]
    first, rest = rendered[0], rendered[1:]
    room = budget - estimate_tokens(first)
    kept: list[str] = []
    for text in reversed(rest):
        cost = estimate_tokens(text) + 1
        if kept and cost > room:
            break
        kept.insert(0, text)
        room -= cost
    skipped = len(rest) - len(kept) + left_out_before
    gap = [f"[{skipped} earlier message(s) left out]"] if skipped else []
    return "\n".join([first, *gap, *kept])


def extractive_summary(lines: Sequence[Line], facts: Sequence[str]) -> str:
    """A summary without a model, by the same rule: the latest open problem first (and whether
    anyone answered it), then the earlier topics, then `facts` (status, escalation)."""
    found = topics(lines)
    problem = latest_problem(found)
    out: list[str] = []
    if problem is not None:
        out.append(f"Latest problem: {problem.text}")
        out.append(
            "Answered since, but still open." if problem.answered else "Nobody has answered it yet."
        )
    elif found:
        out.append(f"No open problem: the last one was resolved ({found[-1].text}).")
    elif any(line.author == "customer" for line in lines):
        out.append("The customer hasn't asked anything specific yet.")
    else:
        out.append("The customer hasn't written yet.")
    earlier = [t for t in found if t is not problem]
    if problem is None and earlier:
        earlier = earlier[:-1]
    if earlier:
        out.append("Earlier topics:")
        out += [f"- {topic.text}" for topic in reversed(earlier)]
    if facts:
        out.append("; ".join(facts) + ".")
    return "\n".join(out)
