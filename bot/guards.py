"""Guards around whoever answers: the bot abstains before any model when the knowledge base has
nothing good enough (AbstainReply), and a model that finds no answer in the passages it was
given abstains the same way (AbstainOnMarker).

Retrieval alone can't tell a near miss ("how much does the hub cost?" when the articles mention
the hub but no price), so the model's judgement counts too: a reply that is NO_ANSWER_MARKER, or
starts with it as models also write it ("[NO_ANSWER]", "no_answer.", "**NO_ANSWER**"), becomes
the same abstention as retrieval's: the same words, abstained, no sources, counted by the
abstain streak; only the model's tokens are still paid for and recorded.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator

from bot.providers.base import Provider, close_stream, paced_words
from bot.types import Finished, ReplyRequest, StreamEvent, TextDelta, estimate_tokens
from bot.wording import wording_for

logger = logging.getLogger(__name__)

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


def guarded(request: ReplyRequest, provider: Provider) -> Provider:
    """Who answers this request: the bot's own abstention when the knowledge base has nothing
    good enough (no model is asked), else the provider behind the no-answer marker guard."""
    if request.knowledge is not None and request.knowledge.abstain:
        return AbstainReply()
    return AbstainOnMarker(provider)


class AbstainReply(Provider):
    """The reply when the knowledge base has nothing good enough, whichever provider is
    configured: said without asking a model (which could only guess), and streamed like any
    other reply so the page needs no special case."""

    name = "abstain"

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        words = _abstain_words(request)
        yield from paced_words(words, request.paced)
        # No model ran: no model name and no prompt tokens.
        yield Finished(
            model="", prompt_tokens=0, completion_tokens=estimate_tokens(words), abstained=True
        )


def _abstain_words(request: ReplyRequest) -> str:
    """The abstention in the customer's language (bot/wording.py)."""
    knowledge = request.knowledge
    if knowledge is None:
        return wording_for(None).abstain
    return wording_for(knowledge.language).no_answer(out_of_domain=knowledge.out_of_domain)


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
        self.stand_in_for(provider)

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        events = self.provider.stream(request)
        try:
            yield from self._relay(events, request)
        finally:
            close_stream(events)  # stopping early: an abstention, a consumer that gives up

    def _relay(self, events: Iterator[StreamEvent], request: ReplyRequest) -> Iterator[StreamEvent]:
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
                        yield from _abstention(_finish_of(events), request)
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
                yield from _abstention(event, request)
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


def _abstention(finished: Finished | None, request: ReplyRequest) -> Iterator[StreamEvent]:
    """AbstainReply's words, with the model's usage."""
    if finished is None:
        # The stream ended without a finish: the reply writer retries that like any cut stream.
        return
    yield from paced_words(_abstain_words(request), request.paced)
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
