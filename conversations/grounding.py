"""What the knowledge base contributes to a reply: decided once, here, for every provider.

`ground(messages)` reads the customer's latest message and returns a `Knowledge` (llm/base.py):

- small talk ("hi", "thanks!") looks nothing up and never abstains;
- a message with nothing to look up ("can you help me?") is not a question the knowledge base
  could fail: it neither searches nor abstains (the answerer asks what the customer needs);
- anything else is searched (KB_PROMPT_PASSAGES hits, one per article) and only hits with
  confidence >= KB_MIN_CONFIDENCE count. None left means abstain: the reply says plainly that
  the help articles don't cover it and offers a person, and no model is asked at all, so
  nothing can be invented and nothing is paid for;
- a short follow-up that points back ("how much does it cost?", "can I cancel it?") is searched
  together with the customer's previous message first, since on its own "it" finds the wrong
  article or none; if that finds nothing good enough, the follow-up is searched alone.

The hits become numbered passages [1]..[n] that fit KB_PROMPT_TOKENS (estimated tokens, so the
prompt stays bounded whatever the articles' length): a passage that doesn't fit whole is cut at
a sentence end or dropped, and the best one is always kept. `with_knowledge` appends them to the
system prompt with the rules (answer only from them, cite them as [1], reply with nothing but
NO_ANSWER_MARKER when they don't answer, never invent, answer in the customer's language), and
`cited_sources` maps the [n] markers of the model's answer back to articles.

Retrieval alone can't tell a near miss ("how much does the hub cost?" when the articles mention
the hub but no price), so the model's judgement counts too: a reply that is NO_ANSWER_MARKER, or
starts with it as models also write it ("[NO_ANSWER]", "no_answer.", "**NO_ANSWER**"), becomes
the same abstention as retrieval's (AbstainOnMarker): the same words, abstained, no sources,
counted by the abstain streak; only the model's tokens are still paid for and recorded.

Sources are only what an answer cites: a passage offered to the model but not cited is not
shown as a source (the page must not claim an answer rests on an article it didn't use). The
reply writer logs such answers, since an uncited answer may also be an unfounded one.

Retrieval runs once a reply, not once an attempt: the reply writer grounds the request before
its retry loop, and the offline answerer answers from the same passages instead of searching
again. A knowledge base that can't be read is a ProviderError worth retrying.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Sequence

from django.conf import settings
from django.db import DatabaseError

from knowledge import retrieval
from knowledge.retrieval import Hit

from .llm.base import (
    ChatMessage,
    Finished,
    Knowledge,
    KnowledgePassage,
    Provider,
    ProviderError,
    ReplyRequest,
    Source,
    StreamEvent,
    TextDelta,
    close_stream,
    estimate_tokens,
)
from .llm.offline import ABSTAIN, paced_words, small_talk_kinds

logger = logging.getLogger(__name__)

Search = Callable[[str, int], list[Hit]]

DEFAULT_PROMPT_PASSAGES = 4
DEFAULT_PROMPT_TOKENS = 1200

# What a model replies, and nothing else, when the passages don't answer the question. The reply
# then abstains exactly as when retrieval finds nothing (AbstainOnMarker): our wording, counted
# by the abstain streak, never the model's own "I couldn't find it".
NO_ANSWER_MARKER = "[[NO_ANSWER]]"
# The marker as models also write it at the start of a reply: any case, bare or wrapped in up to
# two square brackets, Markdown asterisks (bold or italic) or a code backtick ("[NO_ANSWER]",
# "NO_ANSWER.", "**no_answer**"). The group is the closing wrapper.
_MARKER_OPENING = re.compile(r"(?:\[{1,2}|\*{1,2}|`)?")
_MARKER_FORM = re.compile(_MARKER_OPENING.pattern + r"no_answer(\]{1,2}|\*{1,2}|`)?", re.IGNORECASE)
# Further into an answer, the marker itself in any case (it must never reach the customer).
_MARKER_ANYWHERE = re.compile(re.escape(NO_ANSWER_MARKER), re.IGNORECASE)
_WORD_CHARACTER = re.compile(r"\w")

# The rules that go with the passages. "{last}" is the highest passage number.
KNOWLEDGE_INSTRUCTIONS = (
    "Passages from our help articles that may answer the customer's latest message follow, "
    "numbered [1] to [{last}].\n"
    "- Answer only from these passages. Add nothing that is not in them.\n"
    "- Cite each passage you use by its number in square brackets, such as [1] or [2], right "
    "after the sentence that uses it.\n"
    f"- If the passages don't contain the answer, reply with exactly {NO_ANSWER_MARKER} and "
    "nothing else: no apology and no guess (we then tell the customer and offer a person from "
    "our team).\n"
    "- Never invent policies, prices, dates, links or steps.\n"
    "- Answer in the language the customer writes in."
)
PASSAGES_HEADING = "Passages:"
# Without passages (small talk, or nothing to look up) the model still must not make things up.
NO_PASSAGES_NOTE = (
    "No help-article passages go with the customer's latest message. Don't state any policies, "
    "prices or steps; if the customer needs information, ask what they need or offer to "
    "connect them with a person from our team."
)


def prompt_passages() -> int:
    return max(1, int(getattr(settings, "KB_PROMPT_PASSAGES", DEFAULT_PROMPT_PASSAGES)))


def prompt_token_budget() -> int:
    return max(1, int(getattr(settings, "KB_PROMPT_TOKENS", DEFAULT_PROMPT_TOKENS)))


# --- The question ---------------------------------------------------------------------------

# Words that point back at something said before. Short messages only: in a long message they
# usually point inside the message itself.
_POINTS_BACK = re.compile(r"\b(?:it|its|that|this|they|them|those|these)\b", re.I)
FOLLOW_UP_MAX_WORDS = 8


def is_follow_up(message: str) -> bool:
    """Whether a message reads as a follow-up that needs the message before it to make sense
    ("how much does it cost?", "can I cancel that?")."""
    return len(message.split()) <= FOLLOW_UP_MAX_WORDS and bool(_POINTS_BACK.search(message))


def ground(
    messages: Sequence[ChatMessage], search: Search | None = None, budget: int | None = None
) -> Knowledge:
    """What the knowledge base has for the customer's latest message (see the module doc).
    `budget`: the passages' estimated tokens (a prompt version's knowledge_tokens); default
    KB_PROMPT_TOKENS."""
    asked = [m.content.strip() for m in messages if m.role == "user"]
    message = asked[-1] if asked else ""
    threshold = retrieval.min_confidence()
    kinds = small_talk_kinds(message)
    if kinds:
        return Knowledge(question=message, small_talk=frozenset(kinds), threshold=threshold)

    queries = [message]
    if len(asked) >= 2 and is_follow_up(message):
        queries.insert(0, f"{asked[-2]}\n{message}")
    searched = False
    for query in queries:
        if not retrieval.content_words(query):
            continue
        searched = True
        good = [hit for hit in _search(search, query) if hit.confidence >= threshold]
        if good:
            passages = number_passages(good, budget or prompt_token_budget())
            return Knowledge(question=query, passages=passages, threshold=threshold)
    return Knowledge(question=message, abstain=searched, threshold=threshold)


def _search(search: Search | None, query: str) -> list[Hit]:
    try:
        return (search or retrieval.search)(query, prompt_passages())
    except DatabaseError as exc:
        raise ProviderError(
            f"the knowledge base could not be read: {exc}", code="knowledge_unavailable"
        ) from exc


# --- Passages within a token budget ----------------------------------------------------------


def _header(n: int, title: str, heading: str) -> str:
    return f"[{n}] {title}" + (f" — {heading}" if heading else "")


# Where a passage may be cut: after a sentence's end, or at the end of a line that a blank
# line, a list item or a heading follows (list items often have no full stop).
_CUT = re.compile(
    r"(?<=[.!?])[\"”')\]*_]*(?=\s)"
    r"|\n(?=[ \t]*(?:\n|[-*+][ \t]|\d{1,3}[.)][ \t]|#))"
)


def cut_to_fit(text: str, tokens: int) -> str:
    """The longest start of a Markdown text that ends a sentence (or a list item) and has at
    most `tokens` estimated tokens; "" if not even the first sentence fits."""
    text = text.strip()
    if estimate_tokens(text) <= tokens:
        return text
    best = ""
    for match in _CUT.finditer(text):
        start = text[: match.end()].rstrip()
        if estimate_tokens(start) > tokens:
            break
        best = start
    return best


def _cut_words(text: str, tokens: int) -> str:
    """The words of a text that fit, for when not even one sentence does."""
    words: list[str] = []
    for word in text.split():
        if estimate_tokens(" ".join([*words, word, "…"])) > tokens:
            break
        words.append(word)
    return " ".join(words) + " …" if words else ""


def number_passages(hits: Sequence[Hit], budget: int) -> tuple[KnowledgePassage, ...]:
    """Hits (best first) as numbered passages whose prompt entries fit `budget` tokens together.

    A passage that doesn't fit whole is cut at a sentence end, or dropped if not even one
    sentence fits (a later, shorter one may still fit). The best hit is always kept, cut to
    words if it must be: an answer needs at least one passage.
    """
    passages: list[KnowledgePassage] = []
    left = budget
    for hit in hits:
        n = len(passages) + 1
        header = _header(n, hit.title, hit.heading)
        # The entry is "header\ntext", and entries are joined by a blank line: charged here as
        # one more token each, so the joined section never estimates above the budget.
        room = left - estimate_tokens(header + "\n") - 1
        text = cut_to_fit(hit.text, room) if room > 0 else ""
        if not text and not passages:
            text = _cut_words(hit.text, max(room, 8)) or hit.text.split("\n", 1)[0]
        if not text:
            continue
        left -= estimate_tokens(f"{header}\n{text}") + 1
        passages.append(
            KnowledgePassage(
                n=n,
                article_id=hit.article_id,
                title=hit.title,
                url=hit.url,
                text=text,
                heading=hit.heading,
                confidence=hit.confidence,
                hit=hit,
            )
        )
    return tuple(passages)


def passages_section(passages: Sequence[KnowledgePassage]) -> str:
    """The numbered passages as the prompt shows them."""
    return "\n\n".join(
        f"{_header(passage.n, passage.title, passage.heading)}\n{passage.text}"
        for passage in passages
    )


def knowledge_block(knowledge: Knowledge) -> str:
    """What goes at the end of the system prompt for this reply ("" when abstaining: no model
    sees the request then)."""
    if knowledge.abstain:
        return ""
    if not knowledge.passages:
        return NO_PASSAGES_NOTE
    instructions = KNOWLEDGE_INSTRUCTIONS.format(last=knowledge.passages[-1].n)
    return f"{instructions}\n\n{PASSAGES_HEADING}\n\n{passages_section(knowledge.passages)}"


PASSAGES_PLACEHOLDER = "{passages}"


def with_knowledge(messages: Sequence[ChatMessage], knowledge: Knowledge) -> list[ChatMessage]:
    """The messages with the knowledge block in the system prompt: where its template says
    {passages}, else appended."""
    block = knowledge_block(knowledge)
    result = list(messages)
    if result and result[0].role == "system" and PASSAGES_PLACEHOLDER in result[0].content:
        content = result[0].content.replace(PASSAGES_PLACEHOLDER, block).strip()
        result[0] = ChatMessage("system", content)
        return result
    if not block:
        return result
    if result and result[0].role == "system":
        result[0] = ChatMessage("system", f"{result[0].content}\n\n{block}")
    else:
        result.insert(0, ChatMessage("system", block))
    return result


# --- Citations ------------------------------------------------------------------------------

# "[1]", "[2, 3]", "[1][2]" (the last as two markers).
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_CITATION_WITH_SPACE = re.compile(r"[ \t]*\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")


def cited_sources(text: str, passages: Sequence[KnowledgePassage]) -> list[Source]:
    """The articles an answer cites by passage number, in the order first cited, each once.

    Numbers no passage has ("[9]" of four) are ignored. Should two cited passages come from one
    article, the article is listed once, under the number it was first cited by.
    """
    by_number = {passage.n: passage for passage in passages}
    sources: list[Source] = []
    seen: set[int] = set()
    for match in _CITATION.finditer(text):
        for number in match.group(1).split(","):
            passage = by_number.get(int(number))
            if passage is None or passage.article_id in seen:
                continue
            seen.add(passage.article_id)
            sources.append(passage.source)
    return sources


def strip_citations(text: str) -> str:
    """An earlier answer without its [n] markers: in the history they would point at that
    answer's passages, not at the ones the new prompt numbers the same way."""
    return _CITATION_WITH_SPACE.sub("", text)


# --- Abstaining -----------------------------------------------------------------------------


class AbstainReply(Provider):
    """The reply when the knowledge base has nothing good enough, whichever provider is
    configured: said without asking a model (which could only guess), and streamed like any
    other reply so the page needs no special case."""

    name = "abstain"

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        yield from paced_words(ABSTAIN)
        # No model ran: no model name and no prompt tokens.
        yield Finished(
            model="", prompt_tokens=0, completion_tokens=estimate_tokens(ABSTAIN), abstained=True
        )


class AbstainOnMarker(Provider):
    """A provider's reply, unless the model replies NO_ANSWER_MARKER: then the same abstention as
    AbstainReply's (the same words, abstained, no sources), with the model's usage, since its
    tokens were paid for.

    The start of a reply is held back only while it could still be the marker, which may arrive
    in pieces ("[[NO_", "ANSWER]]") and after whitespace; a reply that starts any other way,
    "[1]" included, flows on as soon as it can't be, so the first token is barely delayed (a
    reply that starts with "No" waits for the next one).

    At the start, the marker is recognised as models also write it ("[NO_ANSWER]", "NO_ANSWER",
    "[[no_answer]]", "NO_ANSWER.", "**NO_ANSWER**", "`NO_ANSWER`"; _starts_with_marker): what a
    model puts first is its verdict on the passages, and what it adds after an abstention is an
    apology or a guess, so whatever follows a marker is discarded, as it would have to be held
    back anyway for the marker not to reach the customer. Further into an answer "NO_ANSWER"
    may be part of it (an error code or a status the passages name), so only NO_ANSWER_MARKER
    itself, in any case, is cut out there (the customer must never see it) and logged: the
    answer it follows stands, since it was already on the customer's screen.
    """

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.name = provider.name

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        events = self.provider.stream(request)
        try:
            yield from self._relay(events)
        finally:
            close_stream(events)  # stopping early: an abstention, a consumer that gives up

    def _relay(self, events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
        held = ""  # the reply so far, while it could still be the marker
        answer: _MarkerCutter | None = None  # once it can't
        for event in events:
            if isinstance(event, TextDelta):
                if answer is not None:
                    text = answer.feed(event.text)
                else:
                    held += event.text
                    start = held.lstrip()
                    if _starts_with_marker(start):
                        yield from _abstention(_finish_of(events))
                        return
                    if _could_start_marker(start):
                        continue
                    answer = _MarkerCutter()
                    text = answer.feed(held)
                if text:
                    yield TextDelta(text)
                continue
            if answer is None and _cut_short_marker(held.strip()):
                # All of the reply was the start of a marker: a marker cut short by max_tokens
                # or a stop sequence is still the model saying the passages don't answer.
                yield from _abstention(event)
                return
            rest = answer.flush() if answer is not None else held
            if rest:
                yield TextDelta(rest)
            if answer is not None and answer.cut:
                logger.warning("a model's answer went on to %s; cut out", NO_ANSWER_MARKER)
            yield event


def _starts_with_marker(start: str) -> bool:
    """Whether a reply (its leading whitespace stripped) starts with the marker in one of its
    forms: closed by a bracket, or followed by anything but a letter, a digit or "_", so that
    "NO_ANSWER." is the marker and "NO_ANSWER_TIMEOUT means..." an answer."""
    form = _MARKER_FORM.match(start)
    if form is None:
        return False
    if form.group(1):
        return True
    return form.end() < len(start) and not _WORD_CHARACTER.match(start, form.end())


def _could_start_marker(start: str) -> bool:
    """Whether more of the reply could still make it start with the marker (see
    _starts_with_marker, which says no first)."""
    form = _MARKER_FORM.match(start)
    if form is not None:
        return form.end() == len(start)  # "NO_ANSWER": "." or "_TIMEOUT" decides
    opening = _MARKER_OPENING.match(start)
    return "NO_ANSWER".startswith(start[opening.end() if opening else 0 :].upper())


def _cut_short_marker(start: str) -> bool:
    """Whether a whole reply that could only have gone on to be the marker (see
    _could_start_marker) counts as one: anything from a "[" or a "NO_" on, but not a bare
    "No", which is an answer."""
    return start.startswith("[") or "_" in start


def _finish_of(events: Iterator[StreamEvent]) -> Finished | None:
    """The Finished at the end of the rest of a stream, whose text is discarded: read to the
    end, since the usage report comes last."""
    finished = None
    for event in events:
        if isinstance(event, Finished):
            finished = event
    return finished


def _abstention(finished: Finished | None) -> Iterator[StreamEvent]:
    """AbstainReply's words, with the model's usage."""
    if finished is None:
        # The stream ended without a finish: the reply writer retries that like any cut stream.
        return
    yield from paced_words(ABSTAIN)
    yield dataclasses.replace(finished, sources=[], abstained=True)


def _marker_start_at_end(text: str) -> int:
    """The length of the longest end of `text` that a marker could go on from ("[[NO" -> 4, in
    any case)."""
    folded = text.upper()
    for n in range(len(NO_ANSWER_MARKER) - 1, 0, -1):
        if folded.endswith(NO_ANSWER_MARKER[:n]):
            return n
    return 0


class _MarkerCutter:
    """Cuts NO_ANSWER_MARKER out of an answer as it streams, holding back only an end of the
    text that could be the start of one (a citation's "[" waits for its number)."""

    def __init__(self) -> None:
        self.tail = ""
        self.cut = False

    def feed(self, text: str) -> str:
        text = self.tail + text
        text, cuts = _MARKER_ANYWHERE.subn("", text)
        self.cut = self.cut or cuts > 0
        keep = _marker_start_at_end(text)
        self.tail = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        tail, self.tail = self.tail, ""
        return tail
